"""``callcenter stats``: one local day's queue KPIs from the queue event log in the database.

The day is a calendar day in ``flows.timezone`` (default: today); each configured queue's ``service_level`` is
its threshold. The text report has bilingual headings (Chinese first); ``--json`` prints
:meth:`callcenter.stats.kpi.KpiReport.as_dict`. Definitions: :mod:`callcenter.stats.kpi`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callcenter.acd.events import QueueEvent
from callcenter.config import Config
from callcenter.stats.kpi import GroupKpi, KpiReport, compute

DEFAULT_SERVICE_LEVEL = 20.0  # seconds, for a queue in the log that the configuration no longer has
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PRIORITY_LABELS = {"emergency": "紧急 emergency", "urgent": "加急 urgent", "normal": "普通 normal"}
GROUP_HEADINGS = ("呼入 offered", "接通 answered", "放弃 abandoned", "超时 timed out", "抢线 preempted",
                  "回拨 callbacks", "平均应答 ASA", "服务水平 SL", "最长等待 longest")
OPERATOR_HEADINGS = ("话务员 operator", "振铃 offers", "接听 answers", "未接 misses", "通话 talk",
                     "整理 wrap-up", "被抢线 preempted")


def add_parser(sub: Any, config_arg: Any) -> None:
    stats = sub.add_parser("stats", help="queue KPIs of one day (answer rate, ASA, service level, abandons)")
    config_arg(stats)
    stats.add_argument("--day", help="the local day YYYY-MM-DD in flows.timezone (default: today)")
    stats.add_argument("--json", action="store_true", help="print the report as one JSON object")


def today(zone: ZoneInfo) -> dt.date:
    return dt.datetime.now(zone).date()


def run(args: argparse.Namespace, config: Config) -> int:
    from callcenter.logs import configure_logging

    configure_logging("warning", "console", sys.stderr)  # the report goes to stdout
    try:
        zone = ZoneInfo(config.flows.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"callcenter stats: unknown flows.timezone {config.flows.timezone!r}", file=sys.stderr)
        return 2
    if args.day is None:
        day = today(zone)
    else:
        try:
            if not DAY.match(args.day):
                raise ValueError(args.day)
            day = dt.date.fromisoformat(args.day)
        except ValueError:
            print(f"callcenter stats: --day: expected a date YYYY-MM-DD, got {args.day!r}", file=sys.stderr)
            return 2
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    events = asyncio.run(_read_events(config, start, end))
    report = compute(events, service_levels={q.name: q.service_level for q in config.queues},
                     default_service_level=DEFAULT_SERVICE_LEVEL, queues=[q.name for q in config.queues])
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print(render_text(report, config, day, len(events)))
    return 0


async def _read_events(config: Config, start: dt.datetime, end: dt.datetime) -> list[QueueEvent]:
    from callcenter.acd.eventlog import events_between
    from callcenter.store.db import create_engine_for, run_migrations

    url = config.database_url()
    run_migrations(url)
    engine = create_engine_for(url)
    try:
        return await events_between(engine, start, end)
    finally:
        await engine.dispose()


# -- the text report ------------------------------------------------------------------------------------------


def render_text(report: KpiReport, config: Config, day: dt.date, event_count: int) -> str:
    names = {q.name: q.display_name for q in config.queues if q.display_name}
    queue_rows = [[f"{name} {names[name]}" if name in names else name, *_group_cells(kpi)]
                  for name, kpi in report.queues.items()]
    queue_rows.append(["合计 total", *_group_cells(report.overall)])
    priority_rows = [[PRIORITY_LABELS.get(name, name), *_group_cells(kpi)] for name, kpi in report.priorities.items()]
    operator_rows = [[name, str(kpi.offers), str(kpi.answers), str(kpi.misses), _clock(kpi.talk_seconds),
                      _clock(kpi.wrapup_seconds), str(kpi.preempted)] for name, kpi in report.operators.items()]
    emergency = report.priorities["emergency"]
    rate = report.emergency_answer_rate
    emergency_line = "紧急呼叫接通率 emergency answer rate: " + (
        f"{_percent(rate)} ({emergency.answered}/{emergency.offered})" if rate is not None
        else "- (无紧急呼叫 no emergency calls)")
    lines = [
        f"队列统计 queue statistics {day.isoformat()} ({config.flows.timezone}), "
        f"{event_count} 条事件 events",
        "",
        *_table(("队列 queue", *GROUP_HEADINGS), queue_rows),
        "",
        *_table(("优先级 priority", *GROUP_HEADINGS), priority_rows),
        "",
        emergency_line,
        "",
        *_table(OPERATOR_HEADINGS, operator_rows),
    ]
    if not operator_rows:
        lines.append("(无 none)")
    return "\n".join(lines)


def _group_cells(kpi: GroupKpi) -> list[str]:
    level = _percent(kpi.service_level)
    if kpi.threshold is not None:
        level += f" (≤{kpi.threshold:g}s)"
    return [str(kpi.offered), str(kpi.answered), str(kpi.abandoned), str(kpi.timed_out), str(kpi.preempted),
            str(kpi.callbacks), "-" if kpi.asa is None else f"{kpi.asa:.1f}s", level, f"{kpi.longest_wait:.1f}s"]


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _width(text: str) -> int:
    """Columns on a terminal: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others, two spaces between columns."""
    widths = [max(_width(cell) for cell in column) for column in zip(headings, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            pad = " " * (width - _width(cell))
            parts.append(cell + pad if index == 0 else pad + cell)
        return "  ".join(parts).rstrip()

    return [line(headings), *(line(row) for row in rows)]
