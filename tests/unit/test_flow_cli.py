"""`callcenter flows …`: lint, simulate, publish, history, rollback, schema (through cli.main)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from callcenter.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The commands point the logs at the captured stderr, which pytest closes after each test."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "callcenter.logs"]:
        root.removeHandler(handler)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "ivr_flows", tmp_path / "ivr_flows")
    shutil.copytree(REPO / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)  # the configuration names ivr_flows/ and config/demo_elders.yaml relatively
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["flows", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_lint_passes_the_shipped_flows_and_fails_a_broken_one_with_positions(workdir: Path, capsys) -> None:
    assert run(capsys, "lint")[0] == 0
    broken = workdir / "ivr_flows" / "hotline.yaml"
    broken.write_text(broken.read_text(encoding="utf-8").replace("      3: complaint", "      3: complain"),
                      encoding="utf-8")
    code, out, err = run(capsys, "lint", str(broken))
    assert code == 1
    line = next(n for n, row in enumerate(broken.read_text().splitlines(), 1) if "3: complain" in row)
    assert f"hotline.yaml:{line}:10: nodes.main_menu.options.3: dangling transition" in out
    assert "不存在的节点" in out and "2 error(s)" in err


def test_simulate_prints_nodes_prompts_and_the_end(workdir: Path, capsys) -> None:
    code, out, _ = run(capsys, "simulate", "hotline", "--caller", "13800138001", "--did", "1000",
                       "--digits", "5,3", "--at", "2026-11-23 10:00")
    assert code == 0
    assert "王奶奶 (elder 1)" in out and "早上好，王奶奶" in out
    assert "invalid 5" in out and "对不起，您的输入有误。" in out
    assert out.strip().splitlines()[-1].startswith("result: queued (complaint")
    night = run(capsys, "simulate", "hotline", "--did", "1000", "--digits", "3", "--at", "2026-11-22 23:00")[1]
    assert "closed" in night and "record" in night and "result: hangup" in night
    assert run(capsys, "simulate", "nosuch")[0] == 1
    assert run(capsys, "simulate", "hotline", "--at", "tomorrow")[0] == 2


def test_publish_history_rollback(workdir: Path, capsys) -> None:
    data = ["--data-dir", str(workdir / "data")]
    flow = workdir / "ivr_flows" / "after_hours.yaml"
    assert run(capsys, "publish", str(flow), "--author", "班长", *data)[1].strip() == "after_hours v1 is live"
    assert "already live" in run(capsys, "publish", str(flow), *data)[1]
    flow.write_text(flow.read_text(encoding="utf-8").replace("再见。", "再见，祝您健康。"), encoding="utf-8")
    assert "v2 is live" in run(capsys, "publish", str(flow), "--author", "值班长", *data)[1]
    history = run(capsys, "history", "after_hours", *data)[1].splitlines()
    assert history[0].startswith("* v2") and "值班长" in history[0] and history[1].startswith("  v1")
    assert "+    text: 再见，祝您健康。" in run(capsys, "history", "after_hours", "--diff", "2", *data)[1]
    assert "v3 is live (rollback to v1)" in run(capsys, "rollback", "after_hours", "1", *data)[1]
    code, _, err = run(capsys, "rollback", "after_hours", "9", *data)
    assert code == 1 and "no version 9" in err
    flow.write_text("start: x\nnodes: {}\n", encoding="utf-8")
    code, _, err = run(capsys, "publish", str(flow), *data)
    assert code == 1 and "not published" in err and "未发布" in err
    assert run(capsys, "history", "after_hours", *data)[1].startswith("* v3")  # the refusal changed nothing


def test_schema_is_the_committed_one(workdir: Path, capsys) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert json.loads(out) == json.loads((REPO / "docs" / "flow.schema.json").read_text(encoding="utf-8"))
