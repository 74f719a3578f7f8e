"""The call model every room understands: a :class:`Call` with its legs and an explicit state machine."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

import structlog

from callcenter.sip.dialog import Dialog

log = structlog.get_logger("callcenter.calls")


class CallState(Enum):
    OFFERED = "offered"  # INVITE received (or sent), no final answer yet
    RINGING = "ringing"  # 180 sent / received
    ANSWERED = "answered"  # 200 OK sent/received, waiting for / sending ACK
    CONFIRMED = "confirmed"  # ACK exchanged: talking (or held by the engine)
    ENDING = "ending"  # BYE sent, waiting for its response
    ENDED = "ended"


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.OFFERED: frozenset({CallState.RINGING, CallState.ANSWERED, CallState.ENDED}),
    CallState.RINGING: frozenset({CallState.ANSWERED, CallState.ENDED}),
    CallState.ANSWERED: frozenset({CallState.CONFIRMED, CallState.ENDING, CallState.ENDED}),
    CallState.CONFIRMED: frozenset({CallState.ENDING, CallState.ENDED}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class EndReason(StrEnum):
    CALLER_BYE = "caller_bye"  # the remote party hung up
    LOCAL_BYE = "local_bye"  # the engine (or an operator) hung up
    CANCELLED = "cancelled"  # caller gave up before answer
    REJECTED = "rejected"  # we refused the call (404, 486, 488, 503…)
    FAILED = "failed"  # outbound call refused by the far end
    TIMEOUT = "timeout"  # no response / no ACK
    MAX_DURATION = "max_duration"
    SHUTDOWN = "shutdown"


class InvalidTransition(Exception):
    pass


@dataclass(eq=False)
class Leg:
    """One SIP dialog side of a call (the caller, an operator's phone, an outside number)."""

    role: str  # "caller" | "callee"
    dialog: Dialog | None = None
    remote_address: tuple[str, str, int] | None = None  # where signalling goes (transport, host, port)
    media: Any = None  # a media endpoint; the media room defines it
    remote_media: tuple[str, int] | None = None
    codec: str | None = None
    local_tag: str | None = None  # our tag in this leg's dialog, chosen before the dialog exists
    invite_tx: Any = None  # the INVITE transaction while the leg is not answered
    local_offer: Any = None  # our SDP offer when we offered (late-offer INVITE or outbound call)
    held: bool = False  # the peer put this leg on hold (re-INVITE sendonly/inactive)
    sdp_session_id: int = field(default_factory=lambda: secrets.randbelow(10**9))
    sdp_version: int = 0

    def next_sdp_version(self) -> int:
        self.sdp_version += 1
        return self.sdp_version


@dataclass(eq=False)
class Call:
    call_id: str
    direction: str  # "inbound" | "outbound"
    from_uri: str
    to_uri: str
    caller_number: str
    caller_display: str | None
    dialled: str  # the DID / number dialled (inbound) or the destination (outbound)
    source: tuple[str, str, int]
    started_at: float
    trunk: str | None = None
    route_name: str | None = None
    emergency: bool = False
    state: CallState = CallState.OFFERED
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    sip_status: int | None = None
    ended_by: str | None = None
    legs: list[Leg] = field(default_factory=list)
    # Filled by later rooms (directory, IVR, ACD); present so every room can rely on the names.
    elder_id: int | None = None
    button: str | None = None
    priority: int | None = None
    flow_version: str | None = None
    timers: dict[str, Any] = field(default_factory=dict)
    linked: Call | None = None  # the other call of a connected pair (caller ↔ operator's phone)
    parties: list[Call] = field(default_factory=list)  # third parties in a three-way call (120, family)

    def transition(self, new: CallState) -> None:
        if new == self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            log.error("call.invalid_transition", call_id=self.call_id, state=self.state.value, to=new.value)
            raise InvalidTransition(f"call {self.call_id}: {self.state.value} -> {new.value}")
        log.debug("call.state", call_id=self.call_id, state=new.value, previous=self.state.value)
        self.state = new

    @property
    def active(self) -> bool:
        return self.state is not CallState.ENDED

    @property
    def caller_leg(self) -> Leg:
        return self.legs[0]

    def cancel_timers(self) -> None:
        for timer in self.timers.values():
            if timer.active():
                timer.cancel()
        self.timers.clear()
