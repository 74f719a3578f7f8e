"""Turns call life-cycle notices into call detail records and bus events."""

from __future__ import annotations

from datetime import UTC, datetime

from callcenter.bus import Bus
from callcenter.bus.events import CallAnswered, CallEnded, CallStarted, RegistrationChanged
from callcenter.calls.model import Call
from callcenter.store.cdr import CallRecordData, CdrWriter


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class CallRecorder:
    """The :class:`~callcenter.calls.ua.CallObserver` the engine installs."""

    def __init__(self, cdr: CdrWriter, bus: Bus, node: str) -> None:
        self.cdr = cdr
        self.bus = bus
        self.node = node

    def call_started(self, call: Call) -> None:
        self.bus.publish(
            CallStarted(
                call_id=call.call_id,
                direction=call.direction,
                from_number=call.caller_number,
                from_display=call.caller_display,
                to_number=call.dialled,
                trunk=call.trunk,
                source=f"{call.source[1]}:{call.source[2]}",
                node=self.node,
            )
        )

    def call_answered(self, call: Call) -> None:
        self.bus.publish(CallAnswered(call_id=call.call_id, answered_by=call.route_name or "engine"))

    def call_ended(self, call: Call) -> None:
        started = _utc(call.started_at)
        assert started is not None
        reason = call.end_reason.value if call.end_reason else None
        self.cdr.submit(
            CallRecordData(
                call_id=call.call_id,
                direction=call.direction,
                started_at=started,
                from_uri=call.from_uri,
                from_number=call.caller_number,
                from_display=call.caller_display,
                to_uri=call.to_uri,
                to_number=call.dialled,
                trunk=call.trunk,
                source=f"{call.source[1]}:{call.source[2]}",
                transport=call.source[0].lower(),
                answered_at=_utc(call.answered_at),
                ended_at=_utc(call.ended_at),
                end_reason=reason,
                sip_status=call.sip_status,
                ended_by=call.ended_by,
                node=self.node,
            )
        )
        duration: float | None = None
        if call.answered_at is not None:  # None when never answered (CallEnded.duration)
            duration = max(0.0, (call.ended_at if call.ended_at is not None else call.answered_at) - call.answered_at)
        self.bus.publish(
            CallEnded(
                call_id=call.call_id,
                reason=reason or "unknown",
                sip_status=call.sip_status,
                ended_by=call.ended_by,
                duration=duration,
            )
        )

    def registration_changed(self, aor: str, contact: str, expires: int) -> None:
        self.bus.publish(RegistrationChanged(aor=aor, contact=contact, expires=expires))
