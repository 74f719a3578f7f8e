"""The queue event log: what happened to every queued call, one event per step, with its call id.

The ACD emits these; the statistics (``callcenter.stats``) are computed from them only, so a report always
adds up to what the log says. Kinds:

``enter``     the call entered ``queue`` (detail "requeue" after a pre-emption, "rejoin" when a caller who
              hung up called back within the rejoin window and resumed the old position; neither is a new
              offered call)
``offer``     the call was offered to ``operator`` (the phone rings)
``miss``      the offer ended without a connection. The operator's miss (detail: no_answer | busy | failed |
              unreachable | timeout = the reservation expired), or a withdrawal that is nobody's fault
              (detail in :data:`WITHDRAWALS`: another phone answered, the caller hung up, an emergency seized
              the operator, the call's wait ran out)
``connect``   ``operator`` answered; ``wait`` = seconds since the call first entered this queue
``abandon``   the caller hung up while waiting or while an operator's phone rang; ``wait`` as above
``timeout``   ``max_wait`` passed; detail is the overflow target ("queue:NAME", "voicemail", "callback",
              "flow" when the flow's on_timeout takes over)
``complete``  the conversation ended; ``seconds`` = talk time
``transfer``  the operator sent the call elsewhere (detail: the target)
``preempt``   the call was taken from ``operator`` for an emergency (detail: the emergency's call id)
``callback``  a callback task was created for the call (detail: the task id and its source)
``wrapup``    ``operator`` finished wrap-up after this call; ``seconds`` = wrap-up time
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

WITHDRAWALS = frozenset({"answered_elsewhere", "caller_gone", "seized", "queue_timeout"})
KINDS = frozenset({"enter", "offer", "miss", "connect", "abandon", "timeout", "complete", "transfer",
                   "preempt", "callback", "wrapup"})


@dataclass(frozen=True, slots=True)
class QueueEvent:
    at: float  # clock seconds (Unix time with the real reactor)
    kind: str
    call_id: str
    queue: str
    priority: str  # emergency | urgent | normal
    operator: str | None = None
    wait: float | None = None
    seconds: float | None = None
    detail: str = ""


class EventSink(Protocol):
    def record(self, event: QueueEvent) -> None: ...


class EventList:
    """Keeps events in memory (the simulation, tests, and the engine's recent history)."""

    def __init__(self) -> None:
        self.events: list[QueueEvent] = []

    def record(self, event: QueueEvent) -> None:
        self.events.append(event)


class FanOut:
    """Sends each event to several sinks (database writer, metrics, memory)."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = list(sinks)

    def record(self, event: QueueEvent) -> None:
        for sink in self.sinks:
            sink.record(event)
