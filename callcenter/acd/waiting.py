"""Calls waiting in queues, in the order operators will take them.

This is the entry to the ACD: a flow's queue node puts the call here; the call hears music on hold and
waits its turn. Order: priority class (emergency, then urgent, then normal), then level (9 first), then
time waited. ``max_wait`` ends the wait with "timeout" (the flow goes on to ``on_timeout``). The router
that offers waiting calls to operators is the ACD's; until operators are connected to a queue, calls wait
(and their callers hear music) until they hang up or the engine's maximum call duration passes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from callcenter.ivr.runner import QueueOutcome, QueueRequest

log = structlog.get_logger("callcenter.acd")

PRIORITY_RANK = {"emergency": 0, "urgent": 1, "normal": 2}


@dataclass(eq=False)
class WaitingCall:
    call_id: str
    caller_number: str
    request: QueueRequest
    entered_at: float
    sequence: int
    outcome: Deferred[QueueOutcome]
    timer: Any = None
    on_leave: Callable[[], None] | None = None

    def sort_key(self) -> tuple[int, int, float, int]:
        return (PRIORITY_RANK.get(self.request.priority, 2), -self.request.level, self.entered_at, self.sequence)


@dataclass
class WaitingQueues:
    clock: IReactorTime
    known: frozenset[str] = frozenset()  # configured queue names (others are refused)
    waiting: dict[str, list[WaitingCall]] = field(default_factory=dict)
    by_call: dict[str, WaitingCall] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {"entered": 0, "left": 0, "timeouts": 0})
    _sequence: itertools.count[int] = field(default_factory=itertools.count)

    def enqueue(self, call_id: str, caller_number: str, request: QueueRequest,
                on_leave: Callable[[], None] | None = None) -> Deferred[QueueOutcome]:
        """Add the call; the Deferred fires when it leaves the queue (answered, timeout) and is cancelled
        (with the call removed) when the caller hangs up."""
        if self.known and request.queue not in self.known:
            log.error("acd.queue.unknown", call_id=call_id, queue=request.queue)
            return succeed(QueueOutcome("refused", f"no queue named {request.queue!r}"))
        if call_id in self.by_call:
            self.leave(call_id, "requeued")
        outcome: Deferred[QueueOutcome] = Deferred(lambda _: self.leave(call_id, "caller_hangup", fire=False))
        entry = WaitingCall(call_id, caller_number, request, self.clock.seconds(), next(self._sequence), outcome,
                            on_leave=on_leave)
        if request.max_wait is not None:
            entry.timer = self.clock.callLater(request.max_wait, self._timeout, call_id)
        line = self.waiting.setdefault(request.queue, [])
        line.append(entry)
        line.sort(key=WaitingCall.sort_key)
        self.by_call[call_id] = entry
        self.counters["entered"] += 1
        log.info("acd.call.queued", call_id=call_id, queue=request.queue, priority=request.priority,
                 level=request.level, skills=dict(request.skills), position=line.index(entry) + 1)
        return outcome

    def position(self, call_id: str) -> int | None:
        entry = self.by_call.get(call_id)
        if entry is None:
            return None
        return self.waiting[entry.request.queue].index(entry) + 1

    def leave(self, call_id: str, result: str, *, fire: bool = True) -> WaitingCall | None:
        entry = self.by_call.pop(call_id, None)
        if entry is None:
            return None
        self.waiting[entry.request.queue].remove(entry)
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        self.counters["left"] += 1
        waited = self.clock.seconds() - entry.entered_at
        log.info("acd.call.left_queue", call_id=call_id, queue=entry.request.queue, result=result,
                 waited=round(waited, 3))
        if entry.on_leave is not None:
            entry.on_leave()
        if fire and not entry.outcome.called:
            entry.outcome.callback(QueueOutcome(result))
        return entry

    def _timeout(self, call_id: str) -> None:
        self.counters["timeouts"] += 1
        self.leave(call_id, "timeout")

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        now = self.clock.seconds()
        return {
            name: [{"call_id": e.call_id, "caller": e.caller_number, "priority": e.request.priority,
                    "level": e.request.level, "skills": dict(e.request.skills), "waited": round(now - e.entered_at, 1),
                    "flow": e.request.flow} for e in line]
            for name, line in self.waiting.items()
        }
