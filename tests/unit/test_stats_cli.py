"""`callcenter stats` (through cli.main): events written by the queue event writer into a temporary database,
read back for one local day, reported as text and as JSON."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import structlog

from callcenter.acd.eventlog import QueueEventWriter
from callcenter.acd.events import QueueEvent
from callcenter.cli import main
from callcenter.stats import commands
from callcenter.store.db import create_engine_for, run_migrations

SHANGHAI = ZoneInfo("Asia/Shanghai")
CONFIG = """\
engine:
  data_dir: {data}
flows:
  timezone: Asia/Shanghai
queues:
  - name: emergency
    display_name: 紧急呼叫
    service_level: 60
  - name: hotline
    display_name: 养老服务热线
    service_level: 20
  - name: community
"""


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The command points the logs at the captured stderr, which pytest closes after each test."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "callcenter.logs"]:
        root.removeHandler(handler)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "callcenter.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "data"), encoding="utf-8")
    return path


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    return dt.datetime(2025, 3, day, hour, minute, second, tzinfo=SHANGHAI).timestamp()


def ev(at: float, kind: str, call_id: str, queue: str = "hotline", priority: str = "normal",
       **extra) -> QueueEvent:
    return QueueEvent(at=at, kind=kind, call_id=call_id, queue=queue, priority=priority, **extra)


# 1 March 2025 in Shanghai is 28 Feb 16:00 UTC to 1 March 16:00 UTC
EVENTS = [
    ev(local(1, 0, 30) - 86400, "enter", "yesterday"),  # 28 Feb 00:30 local: another day
    ev(local(1, 0, 30), "enter", "a"),  # 00:30 local is still 28 Feb in UTC
    ev(local(1, 0, 30, 2), "offer", "a", operator="1001"),
    ev(local(1, 0, 30, 10), "connect", "a", operator="1001", wait=10.0),
    ev(local(1, 0, 31, 10), "complete", "a", operator="1001", seconds=60.0),
    ev(local(1, 0, 31, 40), "wrapup", "a", operator="1001", seconds=30.0),
    ev(local(1, 9), "enter", "b"),
    ev(local(1, 9, 0, 45), "abandon", "b", wait=45.0),
    ev(local(1, 10), "enter", "e1", "emergency", "emergency"),
    ev(local(1, 10, 0, 5), "offer", "e1", "emergency", "emergency", operator="1002"),
    ev(local(1, 10, 0, 8), "connect", "e1", "emergency", "emergency", operator="1002", wait=8.0),
    ev(local(1, 23, 59, 59), "enter", "c"),
    ev(local(2, 0, 0, 1), "enter", "tomorrow"),
]


def write_events(config_file: Path, events: list[QueueEvent]) -> None:
    url = f"sqlite+aiosqlite:///{(config_file.parent / 'data' / 'callcenter.db').resolve()}"
    run_migrations(url)

    async def write() -> None:
        engine = create_engine_for(url)
        writer = QueueEventWriter(engine, node="test")
        await writer.start()
        for event in events:
            writer.record(event)
        await writer.close()
        await engine.dispose()

    asyncio.run(write())


def run(capsys: pytest.CaptureFixture[str], config_file: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["stats", "--config", str(config_file), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_report_for_one_local_day(config_file: Path, capsys) -> None:
    write_events(config_file, EVENTS)
    code, out, err = run(capsys, config_file, "--day", "2025-03-01")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("队列统计 queue statistics 2025-03-01 (Asia/Shanghai), 11 条事件 events")
    header = next(line for line in lines if line.startswith("队列 queue"))
    for heading in ("呼入 offered", "接通 answered", "放弃 abandoned", "平均应答 ASA", "服务水平 SL",
                    "最长等待 longest"):
        assert heading in header
    row = {line.split()[0]: line.split() for line in lines if line and not line.startswith(("队列", "优先级"))}
    # hotline: offered a, b, c; answered a (10 s); abandoned b (45 s)
    assert row["hotline"][2:12] == ["3", "1", "1", "0", "0", "0", "10.0s", "50.0%", "(≤20s)", "45.0s"]
    assert row["emergency"][2:12] == ["1", "1", "0", "0", "0", "0", "8.0s", "100.0%", "(≤60s)", "8.0s"]
    assert row["community"][1:10] == ["0", "0", "0", "0", "0", "0", "-", "-", "(≤20s)"]
    assert row["合计"][2:11] == ["4", "2", "1", "0", "0", "0", "9.0s", "66.7%", "45.0s"]
    assert "紧急呼叫接通率 emergency answer rate: 100.0% (1/1)" in out
    operators = lines[lines.index(next(line for line in lines if line.startswith("话务员 operator"))):]
    assert operators[1].split() == ["1001", "1", "1", "0", "0:01:00", "0:00:30", "0"]
    assert operators[2].split() == ["1002", "1", "1", "0", "0:00:00", "0:00:00", "0"]


def test_json_report(config_file: Path, capsys) -> None:
    write_events(config_file, EVENTS)
    code, out, _ = run(capsys, config_file, "--day", "2025-03-01", "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data["queues"]) == ["community", "emergency", "hotline"]
    assert data["queues"]["hotline"]["offered"] == 3 and data["queues"]["hotline"]["threshold"] == 20
    assert data["overall"]["answered"] == 2 and data["overall"]["asa"] == 9.0
    assert data["emergency_answer_rate"] == 1.0
    assert data["operators"]["1001"] == {"offers": 1, "answers": 1, "misses": 0, "talk_seconds": 60.0,
                                         "wrapup_seconds": 30.0, "preempted": 0}
    other = json.loads(run(capsys, config_file, "--day", "2025-03-02", "--json")[1])
    assert other["queues"]["hotline"]["offered"] == 1 and other["operators"] == {}


def test_empty_day_prints_zeros(config_file: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "today", lambda zone: dt.date(2030, 1, 1))  # no database yet: created
    code, out, err = run(capsys, config_file)
    assert code == 0, err
    assert "2030-01-01" in out.splitlines()[0]
    total = next(line for line in out.splitlines() if line.startswith("合计 total")).split()
    assert total[2:9] == ["0", "0", "0", "0", "0", "0", "-"]
    assert "emergency answer rate: - (无紧急呼叫 no emergency calls)" in out
    assert out.rstrip().endswith("(无 none)")
    data = json.loads(run(capsys, config_file, "--json")[1])
    assert data["overall"]["offered"] == 0 and data["overall"]["service_level"] is None


@pytest.mark.parametrize("day", ["2025-02-30", "yesterday", "2025/03/01", "20250301", "2025-W09-6", ""])
def test_bad_day_exits_2(config_file: Path, capsys, day: str) -> None:
    code, out, err = run(capsys, config_file, "--day", day)
    assert code == 2 and out == ""
    assert f"--day: expected a date YYYY-MM-DD, got {day!r}" in err
