"""Typed domain events. Frozen dataclasses: safe to hand to many subscribers, and to serialise for the Redis
bus (``to_dict`` / ``event_from_dict``). Every event has a dotted ``name`` and a UTC timestamp ``at``."""

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    name: ClassVar[str] = "event"
    at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            data[item.name] = value.isoformat() if isinstance(value, datetime) else value
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStarted(Event):
    """A call arrived (inbound) or was placed (outbound); nothing answered yet."""

    name: ClassVar[str] = "call.started"
    call_id: str
    direction: str  # "inbound" | "outbound"
    from_number: str | None = None
    from_display: str | None = None
    to_number: str | None = None  # the DID / dialled number
    trunk: str | None = None
    source: str | None = None  # "ip:port"
    node: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered(Event):
    name: ClassVar[str] = "call.answered"
    call_id: str
    answered_by: str | None = None  # engine action ("hold", "echo"), agent id, or remote party


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(Event):
    name: ClassVar[str] = "call.ended"
    call_id: str
    reason: str  # "caller_bye", "local_bye", "cancelled", "rejected", "timeout", "shutdown", "max_duration" …
    sip_status: int | None = None  # final status of the INVITE
    ended_by: str | None = None
    duration: float | None = None  # seconds from answer to end (None if never answered)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationChanged(Event):
    """A binding was added, refreshed or removed (``expires == 0``)."""

    name: ClassVar[str] = "registration.changed"
    aor: str
    contact: str
    expires: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunkStateChanged(Event):
    name: ClassVar[str] = "trunk.state_changed"
    trunk: str
    state: str  # "up" | "down" | "registering" | "failed"
    reason: str | None = None
    active_calls: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStep(Event):
    """A step of a queued call in the ACD (the queue event log's kinds: enter, offer, connect, abandon, …).

    ``call.offered`` for the desktop's screen pop is the ``offer`` step: it names the operator whose phone
    rings and carries who is calling (number, elder id, button) so the pop needs no second lookup."""

    name: ClassVar[str] = "acd.step"
    call_id: str
    kind: str
    queue: str
    priority: str
    operator: str | None = None
    wait: float | None = None
    detail: str = ""
    caller: str | None = None
    elder_id: int | None = None
    button: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorStateChanged(Event):
    name: ClassVar[str] = "acd.operator"
    operator: str
    old: str
    new: str
    reason: str | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskCallChanged(Event):
    """An operator's current conversation changed (ringing, answered, held, muted, a party came or left,
    ended): ``call`` is the desktop's CALL shape without the pop, None once the conversation is over."""

    name: ClassVar[str] = "desk.call"
    operator: str
    call_id: str | None = None
    call: dict[str, Any] | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.name: cls for cls in (CallStarted, CallAnswered, CallEnded, RegistrationChanged, TrunkStateChanged,
                              QueueStep, OperatorStateChanged, DeskCallChanged)
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of ``Event.to_dict`` for the known event types."""
    values = dict(data)
    cls = EVENT_TYPES[values.pop("name")]
    if isinstance(values.get("at"), str):
        values["at"] = datetime.fromisoformat(values["at"])
    return cls(**values)
