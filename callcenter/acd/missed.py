"""Nobody who called is forgotten: abandoned and missed calls become callback tasks (回访).

- **Abandoned in the queue**: the caller hung up while waiting (or while an operator's phone rang).
- **Abandoned in the IVR**: the caller hung up while the flow was still talking to them.
- **Missed**: an inbound call we never answered: refused because the lines were full or the service was
  unavailable, or given up while ringing.

Hang-ups sooner than ``abandon_threshold`` seconds after calling are misdials and get no task, except
emergencies: an emergency that hangs up is always called back. Tasks for the same number are merged
while one is open (an elder who presses five times is called back once). When the caller calls again
and an operator answers, their open abandoned/missed tasks are completed with that call's id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import structlog

from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.events import EventSink, QueueEvent
from callcenter.acd.model import QueuedCall
from callcenter.acd.router import Distributor
from callcenter.calls.model import Call, EndReason

log = structlog.get_logger("callcenter.acd")

MISSED_STATUSES = frozenset({480, 486, 503, 600, 603})


class MissedCalls:
    """Turns abandons and missed calls into callback tasks; an observer of the user-agent core."""

    def __init__(self, tasks: CallbackTasks, *, calls: Callable[[str], Call | None], threshold: float,
                 events: EventSink, now: Callable[[], float]) -> None:
        self.tasks = tasks
        self.calls = calls  # call id → the engine's Call (still in the call table when the hook runs)
        self.threshold = threshold
        self.events = events
        self.now = now
        self.acd: Distributor | None = None
        self.counters = {"abandoned": 0, "ivr_abandoned": 0, "missed": 0, "reached": 0, "ignored": 0}
        self._pending: set[asyncio.Task[Any]] = set()
        # numbers that may have open abandoned/missed tasks: a connected caller not in here costs no query
        self.numbers_with_tasks: set[str] = set()

    # -- hooks ----------------------------------------------------------------------------------------
    def queue_abandoned(self, queued: QueuedCall, wait: float) -> None:
        call = self.calls(queued.call_id)
        started = call.started_at if call is not None else queued.first_entered_at
        if not queued.emergency and self.now() - started < self.threshold:
            self.counters["ignored"] += 1
            return
        self.counters["abandoned"] += 1
        reason = f"hung up after waiting {wait:.0f} s in queue {queued.queue.name}"
        self._create(queued.call_id, queued.caller_number, call.elder_id if call else None, reason, "abandoned",
                     queue=queued.queue.name, priority=queued.priority)

    def preempted_to_callback(self, queued: QueuedCall) -> None:
        call = self.calls(queued.call_id)
        self._create(queued.call_id, queued.caller_number, call.elder_id if call else None,
                     "pre-empted by an emergency", "missed", queue=queued.queue.name, priority=queued.priority)

    def callback_for(self, queued: QueuedCall, reason: str, source: str) -> None:
        call = self.calls(queued.call_id)
        self._create(queued.call_id, queued.caller_number, call.elder_id if call else None, reason, source,
                     queue=queued.queue.name, priority=queued.priority)

    def ivr_abandoned(self, call: Call, node: str | None) -> None:
        if not call.emergency and self.now() - call.started_at < self.threshold:
            self.counters["ignored"] += 1
            return
        self.counters["ivr_abandoned"] += 1
        where = f" at {node}" if node else ""
        self._create(call.call_id, call.caller_number, call.elder_id, f"hung up in the IVR{where}", "abandoned")

    # -- the user-agent observer ------------------------------------------------------------------------
    def call_started(self, call: Call) -> None:
        pass

    def call_answered(self, call: Call) -> None:
        pass

    def registration_changed(self, aor: str, contact: str, expires: int) -> None:
        pass

    def call_ended(self, call: Call) -> None:
        if call.direction != "inbound" or call.answered_at is not None or call.route_name is None:
            return
        if call.end_reason is EndReason.REJECTED and call.sip_status in MISSED_STATUSES:
            why = {486: "all lines busy", 503: "service unavailable"}.get(call.sip_status or 0, "not answered")
        elif call.end_reason is EndReason.CANCELLED:
            if not call.emergency and (call.ended_at or self.now()) - call.started_at < self.threshold:
                self.counters["ignored"] += 1
                return
            why = "gave up while ringing"
        else:
            return
        self.counters["missed"] += 1
        self._create(call.call_id, call.caller_number, call.elder_id, f"missed call ({why}, {call.dialled})",
                     "missed")

    def connected(self, event: QueueEvent) -> None:
        """An EventSink hook: an answered caller's earlier abandoned/missed tasks are done."""
        if event.kind != "connect" or self.acd is None:
            return
        queued = self.acd.calls.get(event.call_id)
        if queued is not None and queued.caller_number in self.numbers_with_tasks:
            self.numbers_with_tasks.discard(queued.caller_number)
            self._spawn(self._reached(queued.caller_number, event.call_id))

    def record(self, event: QueueEvent) -> None:
        self.connected(event)

    # -- writing ----------------------------------------------------------------------------------------
    def _create(self, call_id: str, number: str, elder_id: int | None, reason: str, source: str, *,
                queue: str | None = None, priority: str = "normal") -> None:
        if not number or number.lower() in ("anonymous", "unknown"):
            log.warning("acd.callback.no_number", call_id=call_id, reason=reason)
            return
        self.numbers_with_tasks.add(number)
        self._spawn(self._write(call_id, number, elder_id, reason, source, queue, priority))

    async def _write(self, call_id: str, number: str, elder_id: int | None, reason: str, source: str,
                     queue: str | None, priority: str) -> None:
        try:
            task_id = await self.tasks.create(number=number, call_id=call_id, elder_id=elder_id, reason=reason,
                                              source=source, due_at=dt.datetime.now(dt.UTC), queue=queue,
                                              merge=True)
        except Exception as exc:
            log.error("acd.callback.create_failed", call_id=call_id, number=number, reason=reason, error=str(exc))
            return
        if queue is not None:
            self.events.record(QueueEvent(self.now(), "callback", call_id, queue, priority,
                                          detail=f"{task_id} {source}"))

    async def _reached(self, number: str, call_id: str) -> None:
        try:
            closed = await self.tasks.close_reached(number, call_id)
        except Exception as exc:
            log.error("acd.callback.close_failed", call_id=call_id, error=str(exc))
            return
        self.counters["reached"] += len(closed)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def load(self) -> None:
        """At start: the numbers with open abandoned/missed tasks from before."""
        self.numbers_with_tasks |= await self.tasks.open_numbers(("abandoned", "missed"))

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
