"""Today's queue figures for the wallboard (``GET /api/wallboard``) and the ``queue`` push event: the queue event
log of the center's local day kept in memory (loaded from the database once, then followed on the bus), the KPIs
of :func:`callcenter.stats.kpi.compute` over it, hourly offered/answered, and the live queue rows.

Pure bookkeeping: no I/O except :meth:`TodayTally.load`; time comes from an injected ``now()`` (Unix seconds)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from typing import Any
from zoneinfo import ZoneInfo

from callcenter.acd.eventlog import events_between
from callcenter.acd.events import QueueEvent
from callcenter.config import Config
from callcenter.stats.kpi import NOT_OFFERED, KpiReport, compute


def step_event(step: Any) -> QueueEvent:
    """A bus ``acd.step`` (QueueStep) as the queue event it was made from (talk seconds are not on the bus)."""
    return QueueEvent(step.at.timestamp(), step.kind, step.call_id, step.queue, step.priority, step.operator,
                      step.wait, None, step.detail)


def _key(event: QueueEvent) -> tuple[Any, ...]:
    """Same step of the same call (the bus's time and the log's differ by microseconds, so not compared)."""
    return (event.kind, event.call_id, event.queue, event.operator, event.detail)


class TodayTally:
    """The queue events of the local day (``flows.timezone``) and their KPIs, recomputed only after a change."""

    def __init__(self, config: Config, *, now: Callable[[], float] = time.time) -> None:
        self.zone = ZoneInfo(config.flows.timezone)
        self.service_levels = {q.name: q.service_level for q in config.queues}
        self.queue_names = [q.name for q in config.queues]
        self.now = now
        self.day = self._today()
        self.events: list[QueueEvent] = []
        self._report: KpiReport | None = None
        self._loading: list[QueueEvent] | None = None  # events seen on the bus while the day is being loaded

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.now(), self.zone).date()

    def day_start(self, day: dt.date | None = None) -> dt.datetime:
        return dt.datetime.combine(day or self.day, dt.time(), self.zone)

    def _roll(self) -> None:
        today = self._today()
        if today != self.day:
            self.day, self.events, self._report = today, [], None

    async def load(self, db: Any) -> int:
        """Today's events from the database (events arriving meanwhile are kept once)."""
        self._loading = []
        try:
            start = self.day_start()
            stored = await events_between(db, start, start + dt.timedelta(days=1))
        finally:
            seen_live, self._loading = self._loading or [], None
        known = {_key(e) for e in stored}
        self.events = stored + [e for e in self.events if _key(e) not in known]
        self.events += [e for e in seen_live if _key(e) not in known]
        self._report = None
        return len(stored)

    def add(self, event: QueueEvent) -> None:
        self._roll()
        if event.at < self.day_start().timestamp():
            return
        if self._loading is not None:
            self._loading.append(event)
            return
        self.events.append(event)
        self._report = None

    def report(self) -> KpiReport:
        self._roll()
        if self._report is None:
            self._report = compute(self.events, service_levels=self.service_levels, queues=self.queue_names)
        return self._report

    def hourly(self) -> list[dict[str, Any]]:
        """Offered and answered per local hour, from midnight to the current hour (first connects only)."""
        self._roll()
        hours = dt.datetime.fromtimestamp(self.now(), self.zone).hour + 1
        offered, answered = [0] * hours, [0] * hours
        connected: set[tuple[str, str]] = set()
        start = self.day_start().timestamp()
        for event in self.events:
            hour = min(hours - 1, max(0, int((event.at - start) // 3600)))
            if event.kind == "enter" and event.detail not in NOT_OFFERED:
                offered[hour] += 1
            elif event.kind == "connect" and (event.queue, event.call_id) not in connected:
                connected.add((event.queue, event.call_id))
                answered[hour] += 1
        return [{"hour": h, "offered": offered[h], "answered": answered[h]} for h in range(hours)]


def queue_rows(acd: Any, report: KpiReport) -> list[dict[str, Any]]:
    """The QUEUE shape of docs/desktop.md for every queue: live waiting figures and today's KPIs."""
    live = acd.live()["queues"]
    emergency: dict[str, int] = {}
    for call in acd.waiting:
        if call.emergency:
            emergency[call.queue.name] = emergency.get(call.queue.name, 0) + 1
    rows = []
    for name, settings in acd.queues.items():
        kpi = report.queues.get(name)
        rows.append({
            "name": name, "display_name": settings.display_name or name,
            "waiting": live[name]["waiting"], "longest_wait": live[name]["longest_wait"],
            "emergency_waiting": emergency.get(name, 0),
            "answered_today": kpi.answered if kpi else 0, "abandoned_today": kpi.abandoned if kpi else 0,
            "service_level_today": kpi.service_level if kpi else None,
        })
    return rows


def operator_rows(acd: Any, report: KpiReport) -> list[dict[str, Any]]:
    """Every operator: state, reason, device, seconds in the state, calls answered today (the queue log's count;
    the ACD's own count since start when the log has none)."""
    now = acd.clock.seconds()
    rows = []
    for operator in sorted(acd.operators.values(), key=lambda o: o.name):
        kpi = report.operators.get(operator.name)
        rows.append({
            "name": operator.name, "display_name": operator.display_name, "state": operator.state.value,
            "reason": operator.pause_reason, "device": getattr(operator, "device", "phone"),
            "since": round(max(0.0, now - operator.since), 1), "call_id": operator.call_id,
            "pending": operator.pending[0].value if operator.pending else None,
            "calls_today": kpi.answers if kpi else operator.calls_today,
        })
    return rows


def summary(report: KpiReport, hourly: Iterable[dict[str, Any]]) -> dict[str, Any]:
    overall = report.overall
    return {"offered": overall.offered, "answered": overall.answered, "abandoned": overall.abandoned,
            "service_level": overall.service_level, "answer_rate": overall.answer_rate,
            "abandon_rate": overall.abandon_rate, "asa": overall.asa, "longest_wait": overall.longest_wait,
            "emergency_answer_rate": report.emergency_answer_rate, "hourly": list(hourly)}
