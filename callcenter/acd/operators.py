"""Operators (坐席) and their explicit state machine.

States: ``logged_out`` → ``available`` ⇄ ``reserved`` (an offer rings the phone) → ``talking`` → ``wrap_up``
→ ``available``; ``paused`` (with a reason) from anywhere but a call. Every move goes through
:meth:`Operator.transition`, which refuses (and logs) a move the table does not allow: no state can be
reached by accident, and none can stick, because the distributor gives every reservation a timeout and
ends every conversation when either side's call ends.

A pause or logout asked for during a call is remembered and applied when the call ends (an operator is
never thrown out of a conversation). Missed offers are counted; after ``max_missed`` in a row the
operator is paused with the reason ``missed_offers`` (never logged out: a supervisor sees it and the
operator comes back with one click).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import structlog

log = structlog.get_logger("callcenter.acd")


class OperatorState(StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"  # an offer is ringing the phone (or an emergency seized the operator)
    TALKING = "talking"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


S = OperatorState
TRANSITIONS: Mapping[OperatorState, frozenset[OperatorState]] = {
    S.LOGGED_OUT: frozenset({S.AVAILABLE, S.PAUSED}),
    S.AVAILABLE: frozenset({S.RESERVED, S.PAUSED, S.LOGGED_OUT}),
    # answered; not answered (back to available, or paused after too many misses); logged out on request
    S.RESERVED: frozenset({S.TALKING, S.AVAILABLE, S.PAUSED, S.LOGGED_OUT, S.WRAP_UP}),
    # the call ended (wrap-up, or straight on when wrap-up is 0); an emergency seized the operator
    S.TALKING: frozenset({S.WRAP_UP, S.AVAILABLE, S.PAUSED, S.LOGGED_OUT, S.RESERVED}),
    # an emergency may interrupt wrap-up (paperwork waits, an elder in danger does not)
    S.WRAP_UP: frozenset({S.AVAILABLE, S.PAUSED, S.LOGGED_OUT, S.RESERVED}),
    S.PAUSED: frozenset({S.AVAILABLE, S.LOGGED_OUT, S.RESERVED}),  # reserved: dialling a callback
}


Device = Literal["phone", "browser"]
DEVICES: tuple[Device, ...] = ("phone", "browser")


class InvalidOperatorTransition(Exception):
    pass


@dataclass(eq=False)
class Operator:
    name: str
    display_name: str
    phone: str | None  # the SIP account of the desk phone
    user: str | None  # the desktop login
    skills: Mapping[str, int]  # skill → level 1-9 (languages such as cmn/yue, roles such as nurse)
    queues: Mapping[str, int]  # queue → weight (higher: preferred when several queues have calls)
    wrap_up: float
    device: Device = "phone"  # where offers ring: the desk phone (SIP) or the desktop's browser softphone
    state: OperatorState = OperatorState.LOGGED_OUT
    since: float = 0.0  # when the current state began
    idle_since: float = 0.0  # when the operator last became available (longest-idle strategy)
    pause_reason: str | None = None
    pending: tuple[OperatorState, str | None] | None = None  # pause/logout asked for during a call
    missed_in_row: int = 0
    calls_today: int = 0  # answered offers (fewest-calls strategy)
    call_id: str | None = None  # the call offered to or talking with the operator
    listener: Callable[[Operator, OperatorState, OperatorState], None] | None = None  # (operator, old, new)
    wrap_timer: Any = None  # ends wrap-up
    wrap_call: tuple[str, str, str] | None = None  # (call id, queue, priority) of the call being wrapped up
    counters: dict[str, int] = field(default_factory=lambda: {"offers": 0, "answers": 0, "misses": 0,
                                                               "preempted": 0})

    def transition(self, new: OperatorState, now: float, *, reason: str | None = None) -> None:
        if new not in TRANSITIONS[self.state]:
            log.error("acd.operator.invalid_transition", operator=self.name, state=self.state.value,
                      to=new.value, call_id=self.call_id)
            raise InvalidOperatorTransition(f"operator {self.name}: {self.state.value} → {new.value}")
        old = self.state
        self.state = new
        self.since = now
        self.pause_reason = reason if new is OperatorState.PAUSED else None
        if new is OperatorState.AVAILABLE:
            self.idle_since = now
        if new in (OperatorState.AVAILABLE, OperatorState.PAUSED, OperatorState.LOGGED_OUT):
            self.call_id = None
        log.info("acd.operator.state", operator=self.name, old=old.value, new=new.value, reason=reason,
                 call_id=self.call_id)
        if self.listener is not None:
            self.listener(self, old, new)

    def serves(self, queue: str) -> bool:
        return queue in self.queues

    def has_skills(self, required: Mapping[str, int]) -> bool:
        return all(self.skills.get(skill, 0) >= level for skill, level in required.items())

    def skill_score(self, required: Mapping[str, int]) -> int:
        return sum(self.skills.get(skill, 0) for skill in required)

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "display_name": self.display_name, "phone": self.phone, "user": self.user,
                "device": self.device, "state": self.state.value, "since": round(now - self.since, 1),
                "reason": self.pause_reason,
                "pending": self.pending[0].value if self.pending else None, "call_id": self.call_id,
                "skills": dict(self.skills), "queues": dict(self.queues), "missed_in_row": self.missed_in_row,
                "calls_today": self.calls_today, **self.counters}
