"""Call control for the operator desktop: what an operator does with their current conversation, whatever the
device (the desk phone through :class:`~callcenter.acd.telephony.SipConnector`, or the browser softphone through
``Softphones``): answer, hang up (or refuse a ringing offer), hold, mute, send digits, blind transfer (to a number,
a queue or a colleague), three-way calls with 120/110 or any number, and dropping a party.

Every action is checked against the conversation as it is *now* (found afresh in the distributor, the connector,
the softphones and the dialler, never cached), refused with a :class:`ControlError` (an HTTP status and
the input field at fault) when it makes no sense, logged as ``desk.call.<action>`` with ``call_id`` and
``operator``, and published on the bus as :class:`~callcenter.bus.events.DeskCallChanged` so every desktop of that
operator follows. Changes that happen by themselves (the offer rings, the operator answers on the phone, the caller
hangs up, a party answers or leaves, a pre-emption) are published too: the bus events that may change an
operator's conversation mark the operator, and one deferred pass (``callLater(0)``, after the distributor has
finished its step) publishes what changed.

Hold: the caller hears music, the operator silence (:meth:`MediaService.hold_leg`). Mute: the others stop hearing
the operator; the recording keeps what the caller hears. A three-way call is a media conference of the caller,
the operator and the parties (``Call.parties`` of the caller's call, so the call layer's rules apply: the elder
stays with 120 when the operator leaves, parties are hung up with the caller); when the last party leaves, the
caller and the operator are bridged again.

Calls the operator places (:mod:`callcenter.acd.dialler`: callbacks, outbound calls) are conversations of kind
"callback" or "outbound"; until the elder answers they show as "ringing" (the desk phone, then the elder's phone
rings), and hanging up then cancels the call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from twisted.internet.interfaces import IDelayedCall

from callcenter.acd.model import CallState as QueueState
from callcenter.acd.model import Offer, replace_queue
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.bus.events import CallEnded, DeskCallChanged, OperatorStateChanged, QueueStep
from callcenter.calls.model import Call, CallState, EndReason
from callcenter.calls.outbound import EMERGENCY_NUMBERS, OutboundError

log = structlog.get_logger("callcenter.acd")

OS = OperatorState
DEVICES = ("phone", "browser")
DIGITS = re.compile(r"[0-9*#A-D]{1,32}")
NUMBER = re.compile(r"\+?[0-9]{2,32}")
MAX_PARTIES = 2  # third parties at once (elder + operator + 120 + family)


class ControlError(Exception):
    """An action that cannot be done: ``status`` 404/409/422/503, ``field`` the input at fault (if one is)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Talk:
    """An operator's conversation as found now."""

    operator: Operator
    caller: Call  # the elder's call: the inbound caller, or the elder leg of a call the operator placed
    operator_leg: Any  # the operator's media: the desk phone's RTP leg or the browser's WebRtcLeg
    phone: Call | None  # the desk phone's SIP call (None: the browser softphone)
    kind: str  # "queue" | "callback" | "outbound"

    @property
    def device(self) -> str:
        return "phone" if self.phone is not None else "browser"


@dataclass
class _Flags:
    """What the desktop set on one conversation (it ends with the conversation)."""

    call_id: str
    started_at: float
    leg: Any
    held: bool = False
    muted: bool = False


@dataclass(frozen=True)
class _Party:
    call_id: str
    caller_id: str
    operator: str
    label: str


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class CallControl:
    def __init__(self, *, ua: Any, media: Any, acd: Distributor, connector: Any = None, softphones: Any = None,
                 flows: Any = None, dialler: Any = None, bus: Any = None,
                 services: Mapping[str, str] | None = None, trunk: str | None = None,
                 transfer_ring_timeout: float = 30.0) -> None:
        self.ua = ua
        self.media = media
        self.acd = acd
        self.connector = connector  # SipConnector: desk phones (its ``talking`` map: caller call id → phone call)
        self.softphones = softphones  # Softphones: browser legs (None: no browser softphone in this engine)
        self.flows = flows  # FlowService: ``transfer(call, number, trunk=, ring_timeout=)`` rings and bridges
        self.dialler = dialler  # Dialler: the calls operators place (callbacks, outbound calls)
        self.bus = bus
        self.services = dict(services if services is not None else {"120": "120", "110": "110"})
        self.trunk = trunk
        self.transfer_ring_timeout = transfer_ring_timeout
        self.clock = ua.clock
        self._flags: dict[str, _Flags] = {}  # operator → the current conversation's hold/mute
        self._parties: dict[str, _Party] = {}  # party call id → whose conference it is
        self._published: dict[str, dict[str, Any] | None] = {}  # operator → the CALL last published
        self._dirty: set[str] = set()
        self._flush_timer: IDelayedCall | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.bus is not None and not self._unsubscribe:
            for kind in (QueueStep, OperatorStateChanged, CallEnded):
                self._unsubscribe.append(self.bus.subscribe(kind, self._on_event))

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self._flush_timer is not None and self._flush_timer.active():
            self._flush_timer.cancel()
        self._flush_timer = None

    # -- finding the conversation ----------------------------------------------------------------------------
    def operator(self, name: str) -> Operator:
        operator = self.acd.operators.get(name)
        if operator is None:
            raise ControlError(404, f"no operator named {name}", "operator")
        return operator

    def device_of(self, operator: Operator) -> str:
        return str(getattr(operator, "device", "phone"))

    def _active(self, call_id: str | None) -> Call | None:
        call = self.ua.calls.get(call_id) if call_id else None
        return call if call is not None and call.active else None

    def talk(self, name: str) -> Talk | None:
        """The operator's conversation now: browser, desk phone or a placed call; None when not talking."""
        operator = self.operator(name)
        if self.softphones is not None:
            caller = self._active(self.softphones.talking_call(name))
            leg = self.softphones.leg(name)
            if caller is not None and leg is not None:
                kind = getattr(self.softphones, "talking_kind", lambda _name: "queue")(name) or "queue"
                return Talk(operator, caller, leg, None, kind)
        if operator.state is OS.TALKING and self.connector is not None:
            phone = self.connector.talking.get(operator.call_id or "")
            caller = self._active(operator.call_id)
            if phone is not None and phone.active and caller is not None and phone.caller_leg.media is not None:
                return Talk(operator, caller, phone.caller_leg.media, phone, "queue")
        for placed in list(getattr(self.dialler, "placed", {}).values()):
            phone, elder = placed.phone, placed.elder
            if (placed.operator == name and placed.reached and phone is not None and phone.active
                    and elder is not None and elder.active and phone.caller_leg.media is not None):
                return Talk(operator, elder, phone.caller_leg.media, phone, placed.kind)
        return None

    def placing(self, name: str) -> Any:
        """The call the operator places (callback or outbound; callcenter.acd.dialler.Placed) that is not a
        conversation yet on the desk phone, if any."""
        placed_by = getattr(self.dialler, "placed_by", None)
        return placed_by(name) if placed_by is not None else None

    def ringing(self, name: str) -> Offer | None:
        """The queue offer ringing for the operator (phone or browser), if any."""
        operator = self.operator(name)
        if operator.state is not OS.RESERVED:
            return None
        return next((o for o in self.acd.offers.values() if o.operator is operator), None)

    def _require_talk(self, name: str) -> Talk:
        talk = self.talk(name)
        if talk is None:
            raise ControlError(409, "you have no call in progress")
        return talk

    def _flags_for(self, talk: Talk) -> _Flags:
        name = talk.operator.name
        flags = self._flags.get(name)
        if flags is not None and flags.call_id == talk.caller.call_id and flags.leg is not talk.operator_leg:
            flags.leg = talk.operator_leg  # the browser reloaded: the new leg took the call over, hold and mute too
        if flags is None or flags.call_id != talk.caller.call_id:
            self._drop_flags(name)
            queued = self.acd.calls.get(talk.caller.call_id)
            started = queued.connected_at if queued is not None and queued.connected_at is not None else \
                self.clock.seconds()
            flags = self._flags[name] = _Flags(talk.caller.call_id, started, talk.operator_leg)
        return flags

    def _drop_flags(self, name: str) -> None:
        flags = self._flags.pop(name, None)
        if flags is not None and flags.muted:
            self.media.mute(flags.leg, False)  # a browser leg outlives the conversation

    def _parties_of(self, caller: Call) -> list[Call]:
        return [p for p in caller.parties if p.active]

    # -- what the desktop shows ------------------------------------------------------------------------------
    def current(self, name: str) -> dict[str, Any] | None:
        """The CALL shape of docs/desktop.md (without the pop), or None."""
        operator = self.operator(name)
        talk = self.talk(name)
        if talk is not None:
            flags = self._flags_for(talk)
            answered = talk.caller.answered_at
            placed = talk.kind != "queue"  # a call the operator placed: ringing until the elder answers
            state = "ringing" if placed and answered is None else "held" if flags.held else "talking"
            started = answered if placed and answered is not None else flags.started_at
            return {"call_id": talk.caller.call_id, "state": state,
                    "device": talk.device, "muted": flags.muted, "held": flags.held,
                    "parties": [self._party_json(p) for p in self._parties_of(talk.caller)],
                    "started_at": iso(started), "kind": talk.kind}
        reconnecting = self._reconnecting(name)
        if reconnecting is not None:
            return reconnecting
        self._drop_flags(name)
        placing = self.placing(name)
        if placing is not None:  # the desk phone rings first, then the elder's
            return {"call_id": placing.elder.call_id if placing.elder is not None else placing.key,
                    "state": "ringing", "device": "browser" if placing.browser else "phone", "muted": False,
                    "held": False, "parties": [], "started_at": iso(placing.started_at), "kind": placing.kind}
        offer = self.ringing(name)
        if offer is not None:
            return {"call_id": offer.call.call_id, "state": "ringing", "device": self.device_of(operator),
                    "muted": False, "held": False, "parties": [], "started_at": iso(offer.started_at),
                    "kind": "queue", "offer_id": offer.id}
        return None

    def _reconnecting(self, name: str) -> dict[str, Any] | None:
        """A browser conversation whose page is reloading: the caller hears music until the new leg takes over
        (the softphone's grace period); the desktop must still show the call, not "idle"."""
        if self.softphones is None or self.softphones.leg(name) is not None:
            return None
        caller = self._active(self.softphones.talking_call(name))
        flags = self._flags.get(name)
        if caller is None or flags is None or flags.call_id != caller.call_id:
            return None
        kind = getattr(self.softphones, "talking_kind", lambda _name: "queue")(name) or "queue"
        return {"call_id": caller.call_id, "state": "held" if flags.held else "talking", "device": "browser",
                "muted": flags.muted, "held": flags.held,
                "parties": [self._party_json(p) for p in self._parties_of(caller)],
                "started_at": iso(flags.started_at), "kind": kind, "reconnecting": True}

    def _party_json(self, party: Call) -> dict[str, Any]:
        known = self._parties.get(party.call_id)
        return {"call_id": party.call_id, "number": party.dialled, "label": known.label if known else party.dialled,
                "state": "talking" if party.state is CallState.CONFIRMED else "ringing"}

    # -- actions ---------------------------------------------------------------------------------------------
    def set_device(self, name: str, device: str) -> str:
        """Where the operator's calls ring from now on: "phone" (desk phone) or "browser" (softphone)."""
        operator = self.operator(name)
        if device not in DEVICES:
            raise ControlError(422, "expected phone or browser", "device")
        if device == "browser" and self.softphones is None:
            raise ControlError(409, "this engine has no browser softphone", "device")
        if operator.state in (OS.RESERVED, OS.TALKING) and self.device_of(operator) != device:
            raise ControlError(409, "finish or refuse the current call first")
        setter = getattr(self.acd, "set_device", None)
        if setter is not None:
            setter(name, device)
        else:
            operator.device = device  # type: ignore[attr-defined]
        log.info("desk.device", operator=name, device=device, call_id=operator.call_id)
        return device

    async def connect_browser(self, name: str, offer_sdp: str) -> str:
        """The browser softphone's media leg: SDP offer in, answer out (replaces an older leg)."""
        self.operator(name)
        if self.softphones is None:
            raise ControlError(503, "this engine has no browser softphone")
        try:
            answer = await self.softphones.connect(name, offer_sdp)
        except ControlError:
            raise
        except Exception as exc:  # aiortc refuses a malformed or codec-less offer with ValueError and friends
            log.info("desk.webrtc.refused", operator=name, error=str(exc), call_id=None)
            raise ControlError(422, f"the offer was refused: {exc}", "sdp") from None
        log.info("desk.webrtc.connected", operator=name, call_id=None)
        self._refresh(name)
        return str(answer)

    def answer(self, name: str, offer_id: int) -> dict[str, Any] | None:
        operator = self.operator(name)
        offer = self.ringing(name)
        if self.device_of(operator) != "browser":
            raise ControlError(409, "answer on the desk phone")
        if offer is None or offer.id != offer_id:
            raise ControlError(409, "no such offer is ringing for you", "offer_id")
        if self.softphones is None or not self.softphones.connected(name):
            raise ControlError(409, "the browser softphone is not connected")
        if not self.softphones.answer(name, offer_id):
            raise ControlError(409, "the offer is gone", "offer_id")
        log.info("desk.call.answer", call_id=offer.call.call_id, operator=name, offer_id=offer_id)
        return self._refresh(name)

    def hangup(self, name: str) -> dict[str, Any] | None:
        """End the conversation (the caller gets a BYE unless third parties stay), or refuse the ringing offer."""
        talk = self.talk(name)
        if talk is not None:
            log.info("desk.call.hangup", call_id=talk.caller.call_id, operator=name, device=talk.device)
            if talk.phone is not None:
                self.ua.outbound.hangup(talk.phone, EndReason.LOCAL_BYE)  # as if the handset was put down
            else:
                self.softphones.hangup(name)
            return self._refresh(name)
        placing = self.placing(name)
        if placing is not None:  # cancel a call being placed (the desk phone or the elder still rings)
            log.info("desk.call.hangup", call_id=placing.key, operator=name, kind=placing.kind,
                     device="browser" if placing.browser else "phone")
            self.dialler.hang_up(name)
            return self._refresh(name)
        offer = self.ringing(name)
        if offer is None:
            raise ControlError(409, "you have no call")
        log.info("desk.call.decline", call_id=offer.call.call_id, operator=name, offer_id=offer.id)
        if self.device_of(offer.operator) == "browser" and self.softphones is not None:
            self.softphones.decline(name)
        else:
            self.acd.not_answered(offer, "busy")  # a miss: the call keeps its place and rings on
            if self.connector is not None:
                self.connector.stop_ringing(offer)  # the desk phone stops ringing (CANCEL)
        return self._refresh(name)

    def hold(self, name: str, held: bool) -> dict[str, Any] | None:
        talk = self._require_talk(name)
        flags = self._flags_for(talk)
        if flags.held == held:
            return self.current(name)
        if held and self._parties_of(talk.caller):
            raise ControlError(409, "a three-way call cannot be held: drop the party first")
        if not self.media.hold_leg(talk.operator_leg, held):
            raise ControlError(409, "the call's audio is not connected to you")
        flags.held = held
        log.info("desk.call.hold", call_id=talk.caller.call_id, operator=name, held=held)
        return self._refresh(name)

    def mute(self, name: str, muted: bool) -> dict[str, Any] | None:
        talk = self._require_talk(name)
        flags = self._flags_for(talk)
        self.media.mute(talk.operator_leg, muted)
        flags.muted = muted
        log.info("desk.call.mute", call_id=talk.caller.call_id, operator=name, muted=muted)
        return self._refresh(name)

    def dtmf(self, name: str, digits: str) -> dict[str, Any] | None:
        """Send ``digits`` as RFC 4733 events on the caller's leg (an IVR at the far end, a terminal's menu)."""
        if not isinstance(digits, str) or not DIGITS.fullmatch(digits):
            raise ControlError(422, "expected 1-32 of 0-9 * # A-D", "digits")
        talk = self._require_talk(name)
        leg = talk.caller.caller_leg.media
        if leg is None or not self.media.send_dtmf(leg, digits):
            raise ControlError(409, "the caller's line did not agree on RFC 4733 telephone-events")
        log.info("desk.call.dtmf", call_id=talk.caller.call_id, operator=name, count=len(digits))
        return self.current(name)

    # -- blind transfer ----------------------------------------------------------------------------------------
    def transfer(self, name: str, *, number: str | None = None, queue: str | None = None,
                 operator: str | None = None) -> dict[str, Any]:
        """Blind transfer: the operator is released at once (wrap-up) and the caller goes to ``number`` (through
        a trunk; back to their queue if nobody answers), to ``queue`` (keeping the priority class: an
        emergency stays one), or to ``operator`` only (until that colleague misses it or logs out)."""
        if sum(x is not None for x in (number, queue, operator)) != 1:
            raise ControlError(422, "give exactly one of number, queue, operator", "number")
        if number is not None and (not isinstance(number, str) or not NUMBER.fullmatch(number)):
            raise ControlError(422, 'expected 2-32 digits with an optional leading "+"', "number")
        if queue is not None and queue not in self.acd.queues:
            raise ControlError(422, f"no queue named {queue!r}", "queue")
        if operator is not None:
            colleague = self.acd.operators.get(operator) if isinstance(operator, str) else None
            if colleague is None:
                raise ControlError(422, f"no operator named {operator!r}", "operator")
            if colleague.name == name:
                raise ControlError(422, "that is you", "operator")
            if colleague.state is OS.LOGGED_OUT:
                raise ControlError(409, f"operator {colleague.name} is not logged in", "operator")
        talk = self._require_talk(name)
        caller, call_id = talk.caller, talk.caller.call_id
        queued = self.acd.calls.get(call_id)
        if talk.kind != "queue" or queued is None or queued.state is not QueueState.CONNECTED:
            raise ControlError(409, "only a call from the queue can be transferred")
        if self._parties_of(caller):
            raise ControlError(409, "drop the third party before transferring")
        request = queued.request
        if number is not None:
            if self.flows is None:
                raise ControlError(503, "transfers to numbers need the IVR service")
            ringing = self.flows.transfer(caller, number, trunk=self.trunk, ring_timeout=self.transfer_ring_timeout)
            if ringing.called and ringing.result is False:  # no line: the operator keeps the caller
                raise ControlError(409, f"cannot call {number} now (no free trunk channel)", "number")
            target = f"number:{number}"
            ringing.addCallback(lambda ok: None if ok else self._transfer_failed(call_id, request))
        else:
            target = f"queue:{queue}" if queue is not None else f"operator:{operator}"
        self._release(talk)
        self.acd.transferred(call_id, target)
        if number is not None or self.acd.queues[queue or request.queue].music:
            self._music(caller)  # while the number rings, or in the queue (as the flow's queue node does)
        if number is None:
            self.acd.enqueue(call_id, caller.caller_number, replace_queue(request, queue or request.queue),
                             target=operator, detail="transfer")
        log.info("desk.call.transfer", call_id=call_id, operator=name, target=target, priority=request.priority)
        self._refresh(name)
        return {"call_id": call_id, "target": target}

    def _release(self, talk: Talk) -> None:
        """Take the operator's device off the conversation without ending the caller's call."""
        self._drop_flags(talk.operator.name)
        call_id = talk.caller.call_id
        if talk.phone is None:
            self.softphones.preempted(call_id)
            return
        phone = talk.phone
        if self.connector is not None and self.connector.talking.get(call_id) is phone:
            del self.connector.talking[call_id]  # its end is then no conversation end (see SipConnector)
        phone.linked = None
        if talk.caller.linked is phone:
            talk.caller.linked = None
        if phone.active:
            self.ua.outbound.hangup(phone, EndReason.LOCAL_BYE)

    def _music(self, caller: Call) -> None:
        session = caller.caller_leg.media
        if session is not None and self.media.is_open(session):
            self.media.music_on_hold(session)

    def _transfer_failed(self, call_id: str, request: Any) -> None:
        """Nobody answered the number: the caller waits in their queue again rather than being dropped."""
        caller = self._active(call_id)
        if caller is None:
            return
        log.warning("desk.call.transfer_failed", call_id=call_id, queue=request.queue)
        self._music(caller)
        self.acd.enqueue(call_id, caller.caller_number, replace_queue(request, request.queue), detail="requeue")

    # -- three-way calls ---------------------------------------------------------------------------------------
    def conference(self, name: str, *, number: str | None = None, service: str | None = None) -> dict[str, Any]:
        """Call a third party (a service such as 120/110, or any number) into the conversation; when it answers
        the caller, the operator and the parties share a conference. Returns the party."""
        if (number is None) == (service is None):
            raise ControlError(422, "give exactly one of number, service", "number")
        if service is not None:
            if not isinstance(service, str) or service not in self.services:
                raise ControlError(422, f"expected one of {', '.join(sorted(self.services))}", "service")
            number, label = self.services[service], service
        elif not isinstance(number, str) or not NUMBER.fullmatch(number):
            raise ControlError(422, 'expected 2-32 digits with an optional leading "+"', "number")
        else:
            label = number
        field = "service" if service is not None else "number"
        talk = self._require_talk(name)
        caller = talk.caller
        if self._flags_for(talk).held:
            raise ControlError(409, "take the caller off hold first")
        if len(self._parties_of(caller)) >= MAX_PARTIES:
            raise ControlError(409, f"at most {MAX_PARTIES} parties at once", field)
        emergency = number in EMERGENCY_NUMBERS or service in EMERGENCY_NUMBERS
        try:
            party = self.ua.outbound.originate(
                number, trunk_name=self.trunk, caller_id=caller.caller_number or "callcenter", emergency=emergency,
                on_answer=self._party_answered, on_end=self._party_ended)
        except OutboundError as exc:
            log.info("desk.party.refused", call_id=caller.call_id, operator=name, number=number, error=str(exc))
            raise ControlError(409, str(exc), field) from None
        caller.parties.append(party)
        self._parties[party.call_id] = _Party(party.call_id, caller.call_id, name, label)
        log.info("desk.party.calling", call_id=caller.call_id, operator=name, party_call_id=party.call_id,
                 number=number, label=label)
        self._refresh(name)
        return self._party_json(party)

    def drop_party(self, name: str, party_call_id: str) -> dict[str, Any] | None:
        talk = self._require_talk(name)
        party = next((p for p in self._parties_of(talk.caller) if p.call_id == party_call_id), None)
        if party is None:
            raise ControlError(404, "no such party in your call", "party_call_id")
        log.info("desk.party.drop", call_id=talk.caller.call_id, operator=name, party_call_id=party_call_id)
        self.ua.outbound.hangup(party, EndReason.LOCAL_BYE)
        return self.current(name)

    def _party_answered(self, party: Call) -> None:
        known = self._parties.get(party.call_id)
        caller = self._active(known.caller_id) if known is not None else None
        if known is None or caller is None:
            self.ua.outbound.hangup(party, EndReason.LOCAL_BYE)
            return
        talk = self.talk(known.operator)
        members = [caller.caller_leg.media]
        if talk is not None and talk.caller is caller:
            members.append(talk.operator_leg)
        members += [p.caller_leg.media for p in caller.parties if p.state is CallState.CONFIRMED]
        if all(m is not None for m in members) and len(members) > 1:
            self.media.conference(members)
        log.info("desk.party.joined", call_id=caller.call_id, operator=known.operator, party_call_id=party.call_id,
                 members=len(members))
        self._refresh(known.operator)

    def _party_ended(self, party: Call) -> None:
        known = self._parties.pop(party.call_id, None)
        if known is None:
            return
        caller = self.ua.calls.get(known.caller_id)
        if caller is not None and party in caller.parties:
            caller.parties.remove(party)
        log.info("desk.party.left", call_id=known.caller_id, operator=known.operator, party_call_id=party.call_id,
                 answered=party.answered_at is not None)
        if caller is not None and caller.active:
            talk = self.talk(known.operator)
            staying = [p for p in caller.parties if p.state is CallState.CONFIRMED]
            if talk is None or talk.caller is not caller:
                if not staying:  # the operator left earlier: nobody is left to talk to
                    handler = self.ua.inbound if caller.direction == "inbound" else self.ua.outbound
                    handler.hangup(caller, EndReason.LOCAL_BYE)
            elif not staying and caller.caller_leg.media is not None and party.answered_at is not None:
                self.media.bridge(caller.caller_leg.media, talk.operator_leg)
        self._refresh(known.operator)

    # -- publishing -----------------------------------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        names = set()
        operator = getattr(event, "operator", None)
        if operator in self.acd.operators:
            names.add(operator)
        call_id = getattr(event, "call_id", None)
        if call_id:
            names.update(n for n, call in self._published.items() if call is not None and call["call_id"] == call_id)
            party = self._parties.get(call_id)
            if party is not None:
                names.add(party.operator)
        if names:
            self._dirty |= names
            if self._flush_timer is None:
                self._flush_timer = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        names, self._dirty = self._dirty, set()
        for name in sorted(names):
            try:
                self._refresh(name)
            except Exception:
                log.exception("desk.call.publish_failed", operator=name, call_id=None)

    def _refresh(self, name: str) -> dict[str, Any] | None:
        """Publish the operator's conversation if it changed since last published; returns it."""
        call = self.current(name)
        last = self._published.get(name)
        if call != last:
            self._published[name] = call
            call_id = call["call_id"] if call is not None else last["call_id"] if last is not None else None
            if self.bus is not None:
                self.bus.publish(DeskCallChanged(operator=name, call_id=call_id, call=call))
            log.info("desk.call.changed", operator=name, call_id=call_id,
                     state=call["state"] if call is not None else "ended")
        return call
