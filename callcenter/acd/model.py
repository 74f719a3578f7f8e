"""What the distributor works with: queue and ACD settings, queued calls, offers, and the :class:`Connector`
protocol through which it reaches telephones (SIP desk phones in :mod:`callcenter.acd.telephony`; the
browser softphone later)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from callcenter.acd.operators import Operator
from callcenter.ivr.runner import QueueOutcome, QueueRequest

PRIORITY_RANK = {"emergency": 0, "urgent": 1, "normal": 2}


@dataclass(frozen=True)
class QueueSettings:
    name: str
    display_name: str = ""
    strategy: str = "longest_idle"
    skills: Mapping[str, int] = field(default_factory=dict)  # required of every operator (skill → min level)
    priority: int = 0  # base priority: between queues, calls of a higher one come first (within a class)
    service_level: float = 20.0
    max_wait: float | None = None  # then the overflow
    overflow: str | None = None  # "queue:NAME" | "voicemail" | "callback" (None: keep waiting)
    aging: float | None = None  # seconds per level step (None: no aging)
    rejoin_window: float = 120.0
    announce_position: bool = False
    announce_wait: bool = False
    announce_every: float = 60.0
    music: bool = True


@dataclass(frozen=True)
class AcdSettings:
    seize_after: float = 0.0  # seconds an emergency waits before seizing an operator
    victim: str = "shortest_talk"  # or "longest_talk" (always the lowest-priority call first)
    on_preempt: str = "requeue"  # or "callback"
    ring_timeout: float = 15.0
    reservation_margin: float = 5.0
    max_missed: int = 3  # at least 1: a phone that refuses every call must not be offered calls for ever
    sweep_interval: float = 10.0


class CallState(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"  # one (ring_all: several) operator phones ring
    CONNECTED = "connected"
    GONE = "gone"


@dataclass(eq=False)
class QueuedCall:
    call_id: str
    caller_number: str
    request: QueueRequest
    queue: QueueSettings
    skills: Mapping[str, int]
    entered_at: float  # the arrival time that orders it (kept when the caller rejoins)
    first_entered_at: float  # when it first entered this queue (waits are measured from here)
    sequence: int
    outcome: Deferred[QueueOutcome] | None
    state: CallState = CallState.WAITING
    head: bool = False  # put back at the head of its class after a pre-emption
    target: str | None = None  # offered to this operator only (an operator's transfer to a colleague)
    offers: list[Offer] = field(default_factory=list)
    operator: Operator | None = None
    connected_at: float | None = None
    timers: dict[str, IDelayedCall] = field(default_factory=dict)
    on_leave: Callable[[], None] | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the connector's per-call state

    @property
    def priority(self) -> str:
        return self.request.priority

    @property
    def emergency(self) -> bool:
        return self.request.priority == "emergency"

    def level_at(self, now: float) -> int:
        level = self.request.level
        if self.queue.aging:
            level = min(9, level + int((now - self.entered_at) // self.queue.aging))
        return level

    def sort_key(self, now: float) -> tuple[int, int, int, int, float, int]:
        return (PRIORITY_RANK.get(self.priority, 2), 0 if self.head else 1, -self.queue.priority,
                -self.level_at(now), self.entered_at, self.sequence)


@dataclass(eq=False)
class Offer:
    id: int
    call: QueuedCall
    operator: Operator
    started_at: float
    timer: IDelayedCall | None = None
    handle: Any = None  # the connector's (e.g. the operator phone's SIP call)
    seized: bool = False  # an emergency took this operator


class Connector(Protocol):
    """The telephone side: rings operators and moves callers' media."""

    def ring(self, offer: Offer) -> None:
        """Ring the operator for the call; later report answered() or not_answered() (or nothing, then the
        reservation timer withdraws the offer with stop_ringing())."""

    def stop_ringing(self, offer: Offer) -> None: ...

    def preempted(self, call: QueuedCall, operator: Operator, *, requeued: bool) -> None:
        """Take the operator's phone off the call; the caller hears why and then music (or, when not
        requeued, is told they will be called back and is hung up)."""

    def waiting(self, call: QueuedCall) -> None:
        """The call is (again) waiting: music on hold."""

    def announce(self, call: QueuedCall, position: int, wait_estimate: float | None) -> None: ...

    def overflow(self, call: QueuedCall, target: str) -> None:
        """max_wait passed: send the call to voicemail or a callback offer."""

    def alive(self, call: QueuedCall) -> bool:
        """Is the call still there (the sweeper's check against lost signals)?"""


def replace_queue(request: QueueRequest, queue: str) -> QueueRequest:
    return QueueRequest(queue, request.priority, request.level, request.skills, None, request.announcements,
                        request.flow, request.node)
