"""CallControl (callcenter.acd.control): the operator desktop's call actions, against the real Distributor and the
real SipConnector on a task.Clock with fake SIP calls, fake media and a fake browser softphone; then the media
parts it relies on (mute, the operator's hold) in Bridge, Conference and MediaService on real RTP sessions."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from callcenter.acd.control import CallControl, ControlError
from callcenter.acd.events import EventList, FanOut
from callcenter.acd.model import QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.publish import AcdPublisher
from callcenter.acd.router import Distributor
from callcenter.acd.telephony import SipConnector
from callcenter.bus.events import CallEnded, DeskCallChanged
from callcenter.bus.inprocess import InProcessBus
from callcenter.calls.model import Call, CallState, EndReason, Leg
from callcenter.calls.outbound import OutboundError
from callcenter.ivr.runner import QueueRequest
from callcenter.media.g711 import codec_for
from callcenter.media.mixing import Bridge, Conference
from callcenter.media.prompts import hold_music
from tests.unit.mediahelpers import const_frame
from tests.unit.test_media_service import feed_and_tick, rig, sent_payloads  # noqa: F401  (rig: a fixture)
from tests.unit.test_mixing import Rig

OS = OperatorState
ELDER = "13800138000"


# -- fakes ------------------------------------------------------------------------------------------------------
class FakeSession:
    """A media leg as CallControl sees it."""

    def __init__(self, call_id: str, role: str) -> None:
        self.call_id, self.role = call_id, role
        self.closed = False
        self.rfc4733 = True


class FakeMedia:
    """Records what the control asks of media; ``groups`` says who hears whom (bridge or conference)."""

    def __init__(self) -> None:
        self.groups: dict[int, list[Any]] = {}
        self.muted: set[int] = set()
        self.held: dict[int, bool] = {}
        self.dtmf: list[tuple[Any, str]] = []
        self.music: list[Any] = []
        self.log: list[tuple[Any, ...]] = []

    def _join(self, members: list[Any]) -> None:
        for m in members:
            old = self.groups.get(id(m))
            if old is not None and m in old:
                old.remove(m)
            self.groups[id(m)] = members

    def bridge(self, a: Any, b: Any) -> None:
        self.log.append(("bridge", a.call_id, b.call_id))
        self._join([a, b])

    def conference(self, members: list[Any]) -> None:
        self.log.append(("conference", [m.call_id for m in members]))
        self._join(list(members))

    def with_(self, session: Any) -> list[Any]:
        return [m for m in self.groups.get(id(session), []) if m is not session and not m.closed]

    def hold_leg(self, session: Any, held: bool) -> bool:
        if len(self.groups.get(id(session), [])) != 2:
            return False
        self.held[id(session)] = held
        self.log.append(("hold", session.call_id, held))
        return True

    def mute(self, session: Any, muted: bool) -> None:
        (self.muted.add if muted else self.muted.discard)(id(session))

    def send_dtmf(self, session: Any, digits: str) -> bool:
        if not session.rfc4733:
            return False
        self.dtmf.append((session, digits))
        return True

    def music_on_hold(self, session: Any) -> None:
        self.music.append(session)

    def is_open(self, session: Any) -> bool:
        return not session.closed

    def stop_playing(self, session: Any) -> None:
        pass

    def play(self, session: Any, prompt: Any, **_: Any) -> None:
        pass

    def close_leg(self, session: Any) -> None:
        session.closed = True


class FakeOutbound:
    def __init__(self, ua: FakeUa) -> None:
        self.ua = ua
        self.ids = itertools.count(1)
        self.callbacks: dict[str, tuple[Any, Any]] = {}
        self.phones: list[Call] = []
        self.originated: list[tuple[str, str | None, str, bool | None]] = []
        self.hung_up: list[str] = []
        self.refuse: str | None = None

    def _new(self, prefix: str, dialled: str, on_answer: Any, on_end: Any) -> Call:
        call_id = f"{prefix}-{next(self.ids)}"
        call = Call(call_id, "outbound", "sip:x@y", f"sip:{dialled}@y", "callcenter", None, dialled,
                    ("UDP", "127.0.0.1", 5060), self.ua.clock.seconds())
        call.legs.append(Leg(role="callee", media=FakeSession(call_id, "callee")))
        self.ua.calls[call_id] = call
        self.callbacks[call_id] = (on_answer, on_end)
        return call

    def call_phone(self, account: str, *, caller_number: str, caller_display: str | None = None,
                   ring_timeout: float = 30.0, on_answer: Any = None, on_end: Any = None) -> Call:
        call = self._new("phone", account, on_answer, on_end)
        self.phones.append(call)
        return call

    def originate(self, number: str, *, trunk_name: str | None = None, caller_id: str = "callcenter",
                  max_duration: float | None = None, on_end: Any = None, on_answer: Any = None,
                  emergency: bool | None = None) -> Call:
        if self.refuse:
            raise OutboundError(self.refuse)
        self.originated.append((number, trunk_name, caller_id, emergency))
        return self._new("party", number, on_answer, on_end)

    def answer(self, call: Call) -> None:
        call.transition(CallState.ANSWERED)
        call.transition(CallState.CONFIRMED)
        call.answered_at = self.ua.clock.seconds()
        on_answer = self.callbacks[call.call_id][0]
        if on_answer is not None:
            on_answer(call)

    def hangup(self, call: Call, reason: EndReason) -> None:
        self.hung_up.append(call.call_id)
        self.end(call, 487 if call.answered_at is None else None)

    def end(self, call: Call, status: int | None = None) -> None:
        if not call.active:
            return
        call.sip_status = status
        self.ua.end(call)
        on_end = self.callbacks[call.call_id][1]
        if on_end is not None:
            on_end(call)


class FakeInbound:
    def __init__(self, ua: FakeUa) -> None:
        self.ua = ua
        self.hung_up: list[str] = []

    def hangup(self, call: Call, reason: EndReason) -> None:
        self.hung_up.append(call.call_id)
        self.ua.end(call)

    def callee_ended(self, call: Call, callee: Call) -> None:
        """As InboundCalls.callee_ended: the elder stays with a party of a three-way call, else is hung up."""
        call.linked = None
        staying = [p for p in call.parties if p.state is CallState.CONFIRMED]
        if staying:
            self.ua.world.media.bridge(call.caller_leg.media, staying[0].caller_leg.media)
            return
        self.hangup(call, EndReason.LOCAL_BYE)


class FakeUa:
    def __init__(self, world: World) -> None:
        self.world = world
        self.clock = world.clock
        self.calls: dict[str, Call] = {}
        self.outbound = FakeOutbound(self)
        self.inbound = FakeInbound(self)

    def incoming(self, call_id: str, number: str) -> Call:
        call = Call(call_id, "inbound", f"sip:{number}@carrier", "sip:1000@us", number, None, "1000",
                    ("UDP", "127.0.0.2", 5080), self.clock.seconds())
        call.legs.append(Leg(role="caller", media=FakeSession(call_id, "caller")))
        call.transition(CallState.ANSWERED)
        call.transition(CallState.CONFIRMED)
        call.answered_at = self.clock.seconds()
        self.calls[call_id] = call
        return call

    def end(self, call: Call) -> None:
        """What the call layer does when a call ends (session.end + the engine's observers)."""
        if not call.active:
            return
        call.transition(CallState.ENDED)
        call.caller_leg.media.closed = True
        self.calls.pop(call.call_id, None)
        linked, call.linked = call.linked, None
        if linked is not None and linked.active and call.direction == "inbound":
            linked.linked = None
            self.outbound.hangup(linked, EndReason.LOCAL_BYE)
        for party in list(call.parties):
            if party.active:
                self.outbound.hangup(party, EndReason.LOCAL_BYE)
        self.world.acd.leave(call.call_id, "caller_hangup", fire=False)  # FlowService.call_ended
        self.world.bus.publish(CallEnded(call_id=call.call_id, reason="caller_bye"))


class FakeSoftphones:
    """The Softphones interface (callcenter.acd.softphone) over fake legs."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.legs: dict[str, FakeSession] = {}
        self.offers: dict[str, Any] = {}
        self.talking: dict[str, str] = {}

    async def connect(self, operator: str, offer_sdp: str) -> str:
        if not offer_sdp.startswith("v=0"):
            raise ValueError("not an SDP offer")
        self.legs[operator] = FakeSession(f"webrtc-{operator}", "browser")
        return "v=0 answer"

    def connected(self, operator: str) -> bool:
        return operator in self.legs

    def leg(self, operator: str) -> FakeSession | None:
        return self.legs.get(operator)

    def ring(self, offer: Any) -> None:
        if not self.connected(offer.operator.name):
            self.world.connector._unreachable(offer, "browser softphone not connected")
            return
        self.offers[offer.operator.name] = offer

    def stop_ringing(self, offer: Any) -> None:
        if self.offers.get(offer.operator.name) is offer:
            del self.offers[offer.operator.name]

    def ringing(self, operator: str) -> Any:
        return self.offers.get(operator)

    def answer(self, operator: str, offer_id: int) -> bool:
        offer = self.offers.get(operator)
        if offer is None or offer.id != offer_id:
            return False
        del self.offers[operator]
        caller = self.world.ua.calls[offer.call.call_id]
        self.world.media.bridge(caller.caller_leg.media, self.legs[operator])
        self.talking[operator] = caller.call_id
        self.world.acd.answered(offer)
        return True

    def decline(self, operator: str) -> bool:
        offer = self.offers.pop(operator, None)
        if offer is None:
            return False
        self.world.acd.not_answered(offer, "busy")
        return True

    def talking_call(self, operator: str) -> str | None:
        caller_id = self.talking.get(operator)
        queued = self.world.acd.calls.get(caller_id or "")
        if queued is None or queued.operator is None or queued.operator.name != operator:
            self.talking.pop(operator, None)
            return None
        return caller_id

    def operator_for(self, caller_id: str) -> str | None:
        return next((n for n in list(self.talking) if self.talking_call(n) == caller_id), None)

    def talking_calls(self) -> list[str]:
        return [c for c in (self.talking_call(n) for n in list(self.talking)) if c]

    def hangup(self, operator: str) -> bool:
        caller_id = self.talking.pop(operator, None)
        if caller_id is None:
            return False
        self.world.acd.conversation_ended(caller_id)
        caller = self.world.ua.calls.get(caller_id)
        if caller is not None:
            self.world.ua.inbound.callee_ended(caller, caller)
        return True

    def preempted(self, caller_id: str) -> None:
        operator = self.operator_for(caller_id)
        if operator is not None:
            del self.talking[operator]


class FakeFlows:
    def __init__(self) -> None:
        self.transfers: list[tuple[Call, str, Deferred[bool]]] = []
        self.no_line = False

    def transfer(self, call: Call, number: str, *, trunk: str | None, ring_timeout: float) -> Deferred[bool]:
        if self.no_line:
            return succeed(False)
        result: Deferred[bool] = Deferred()
        self.transfers.append((call, number, result))
        return result

    async def prompt_for(self, utterance: Any, *, call_id: str) -> None:
        return None


class World:
    def __init__(self, operators: tuple[str, ...] = ("op1", "op2", "op3")) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.bus = InProcessBus()
        self.changes: list[DeskCallChanged] = []
        self.bus.subscribe(DeskCallChanged, self.changes.append)
        self.media = FakeMedia()
        self.ua = FakeUa(self)
        self.events = EventList()
        publisher = AcdPublisher(self.bus, self.ua.calls.get)
        self.acd = Distributor(
            self.clock, None, queues=[QueueSettings("hotline"), QueueSettings("emergency")],
            operators=[Operator(name, name, f"10{i}", None, {}, {"hotline": 5, "emergency": 10}, 10.0)
                       for i, name in enumerate(operators, 1)],
            events=FanOut(self.events, publisher))
        for operator in self.acd.operators.values():
            operator.listener = publisher.operator_changed
        self.flows = FakeFlows()
        self.connector = SipConnector(self.ua, self.media, self.flows, acd=self.acd, keepalive=0)  # type: ignore[arg-type]
        self.acd.connector = self.connector
        self.softphones = FakeSoftphones(self)
        self.connector.softphones = self.softphones
        self.control = CallControl(ua=self.ua, media=self.media, acd=self.acd, connector=self.connector,
                                   softphones=self.softphones, flows=self.flows, bus=self.bus,
                                   services={"120": "120", "110": "110"}, transfer_ring_timeout=20)
        self.control.start()

    def available(self, *names: str) -> None:
        for name in names:
            self.acd.set_state(name, "available")

    def call_in(self, call_id: str = "c1", queue: str = "hotline", priority: str = "normal") -> Call:
        call = self.ua.incoming(call_id, ELDER)
        self.acd.enqueue(call_id, ELDER, QueueRequest(queue, priority, 1, {}, None, None, "terminal", "queue"))
        return call

    def phone(self, operator: str) -> Call:
        """The last call to this operator's desk phone."""
        account = self.acd.operators[operator].phone
        return [p for p in self.ua.outbound.phones if p.dialled == account][-1]

    def talking(self, operator: str = "op1", call_id: str = "c1") -> tuple[Call, Call]:
        """A caller connected to the operator's desk phone: (caller, phone)."""
        self.available(operator)
        caller = self.call_in(call_id)
        phone = self.phone(operator)
        self.ua.outbound.answer(phone)
        assert self.acd.operators[operator].state is OS.TALKING
        return caller, phone

    def flush(self) -> None:
        self.clock.advance(0)

    def published(self, operator: str = "op1") -> list[dict[str, Any] | None]:
        return [c.call for c in self.changes if c.operator == operator]

    def kinds(self, call_id: str) -> list[tuple[str, str | None, str]]:
        return [(e.kind, e.operator, e.detail) for e in self.events.events if e.call_id == call_id]


def error(action: Any, status: int, field: str | None = None) -> ControlError:
    with pytest.raises(ControlError) as caught:
        action()
    assert (caught.value.status, caught.value.field) == (status, field), caught.value.message
    return caught.value


# -- what the desktop sees -----------------------------------------------------------------------------------------
def test_the_conversation_as_it_rings_is_answered_and_ends_is_published() -> None:
    w = World()
    control = w.control
    assert control.current("op1") is None
    w.available("op1")
    caller = w.call_in()
    ringing = control.current("op1")
    assert ringing is not None
    (offer,) = w.acd.offers.values()
    assert ringing == {"call_id": "c1", "state": "ringing", "device": "phone", "muted": False, "held": False,
                       "parties": [], "started_at": "2023-11-14T22:13:20+00:00", "kind": "queue",
                       "offer_id": offer.id}
    assert w.changes == []  # published after the distributor's step, not inside it
    w.flush()
    assert w.published() == [ringing]

    w.clock.advance(3)
    w.ua.outbound.answer(w.phone("op1"))  # lifted on the desk phone
    w.flush()
    talking = control.current("op1")
    assert talking is not None and talking["state"] == "talking" and talking["device"] == "phone"
    assert talking["started_at"] == "2023-11-14T22:13:23+00:00"
    assert w.published()[-1] == talking and w.changes[-1].call_id == "c1"

    w.ua.inbound.hangup(caller, EndReason.CALLER_BYE)  # the elder hung up: the phone gets a BYE
    w.flush()
    assert w.published()[-1] is None and w.changes[-1].call_id == "c1"
    assert control.current("op1") is None and w.acd.operators["op1"].state is OS.WRAP_UP
    assert len(w.published()) == 3  # nothing twice
    with pytest.raises(ControlError) as unknown:
        control.current("op9")
    assert (unknown.value.status, unknown.value.field) == (404, "operator")


def test_desk_phone_answer_is_refused_and_hangup_ends_the_call() -> None:
    w = World()
    w.available("op1")
    caller = w.call_in()
    (offer,) = w.acd.offers.values()
    assert "desk phone" in error(lambda: w.control.answer("op1", offer.id), 409).message
    phone = w.phone("op1")
    w.ua.outbound.answer(phone)
    w.flush()
    assert w.published()[-1]["state"] == "talking"
    w.control.hangup("op1")
    assert phone.call_id in w.ua.outbound.hung_up and not phone.active
    assert w.ua.inbound.hung_up == ["c1"] and not caller.active  # the caller got a BYE
    assert w.acd.operators["op1"].state is OS.WRAP_UP
    assert ("complete", "op1", "") in w.kinds("c1")
    assert w.published()[-1] is None
    error(lambda: w.control.hangup("op1"), 409)  # nothing left to hang up


def test_hanging_up_a_ringing_desk_phone_refuses_the_offer() -> None:
    w = World()
    w.available("op1")
    w.clock.advance(1)
    w.available("op2")
    w.call_in()
    first = w.phone("op1")
    w.clock.advance(1)
    w.control.hangup("op1")
    assert first.call_id in w.ua.outbound.hung_up and not first.active  # the phone stopped ringing
    assert ("miss", "op1", "busy") in w.kinds("c1")
    assert w.acd.operators["op1"].missed_in_row == 1
    assert w.phone("op2").active and w.control.current("op2")["state"] == "ringing"  # the call rings on


def test_browser_answer_decline_and_hangup() -> None:
    w = World()
    w.control.set_device("op1", "browser")
    assert w.acd.operators["op1"].device == "browser"
    asyncio.run(w.control.connect_browser("op1", "v=0 offer"))
    w.available("op1", "op2")
    caller = w.call_in()
    (offer,) = w.acd.offers.values()
    assert w.control.current("op1")["device"] == "browser"
    error(lambda: w.control.answer("op1", offer.id + 5), 409, "offer_id")
    call = w.control.answer("op1", offer.id)
    assert call is not None and (call["state"], call["device"]) == ("talking", "browser")
    assert w.media.with_(w.softphones.legs["op1"]) == [caller.caller_leg.media]
    w.control.hangup("op1")
    assert not caller.active and w.acd.operators["op1"].state is OS.WRAP_UP

    w.call_in("c2")  # op2 takes it on the desk phone; a browser offer refused from the desktop
    w.ua.outbound.answer(w.phone("op2"))
    w.acd.set_state("op1", "available")
    w.call_in("c3")
    assert w.control.current("op1")["state"] == "ringing"
    declined = w.control.ringing("op1")
    w.control.hangup("op1")
    assert ("miss", "op1", "busy") in w.kinds("c3")
    again = w.softphones.ringing("op1")  # nobody else is free: the call rings op1 again, as a new offer
    assert again is not None and again.id != declined.id
    error(lambda: w.control.answer("op1", declined.id), 409, "offer_id")


def test_browser_answer_needs_a_connected_softphone_and_device_changes_wait_for_the_call() -> None:
    w = World()
    w.control.set_device("op1", "browser")
    w.available("op1")
    w.call_in()
    assert w.acd.operators["op1"].state is OS.PAUSED  # not connected: unreachable, like a phone that is off
    asyncio.run(w.control.connect_browser("op1", "v=0"))
    w.acd.set_state("op1", "available")
    w.softphones.legs.clear()  # the page went away between the ring and the click
    offer = w.control.ringing("op1")
    assert offer is not None
    assert "not connected" in error(lambda: w.control.answer("op1", offer.id), 409).message
    error(lambda: w.control.set_device("op1", "phone"), 409)
    error(lambda: w.control.set_device("op1", "tablet"), 422, "device")
    error(lambda: asyncio.run(w.control.connect_browser("op1", "hello")), 422, "sdp")
    w.control.softphones = None
    error(lambda: asyncio.run(w.control.connect_browser("op1", "v=0")), 503)
    error(lambda: w.control.set_device("op2", "browser"), 409, "device")


# -- hold, mute, digits --------------------------------------------------------------------------------------------
def test_hold_and_mute_act_on_the_operators_leg() -> None:
    w = World()
    caller, phone = w.talking()
    leg = phone.caller_leg.media
    error(lambda: w.control.hold("op2", True), 409)
    call = w.control.hold("op1", True)
    assert call is not None and (call["state"], call["held"]) == ("held", True)
    assert w.media.held[id(leg)] is True and w.media.log[-1] == ("hold", phone.call_id, True)
    assert w.published()[-1]["state"] == "held"
    assert w.control.hold("op1", True)["held"] is True and w.media.log[-1][0] == "hold"  # no second hold
    call = w.control.hold("op1", False)
    assert call["state"] == "talking" and w.media.held[id(leg)] is False
    call = w.control.mute("op1", True)
    assert call["muted"] is True and id(leg) in w.media.muted
    assert w.control.mute("op1", False)["muted"] is False and id(leg) not in w.media.muted
    w.media.groups.clear()  # the audio is not bridged (any more): hold cannot work
    error(lambda: w.control.hold("op1", True), 409)


def test_a_browser_leg_is_unmuted_when_its_conversation_ends() -> None:
    w = World()
    w.control.set_device("op1", "browser")
    asyncio.run(w.control.connect_browser("op1", "v=0"))
    w.available("op1")
    caller = w.call_in()
    w.control.answer("op1", w.control.ringing("op1").id)
    w.control.mute("op1", True)
    leg = w.softphones.legs["op1"]
    assert id(leg) in w.media.muted
    w.ua.inbound.hangup(caller, EndReason.CALLER_BYE)
    w.flush()
    assert id(leg) not in w.media.muted  # the next call starts unmuted
    assert w.published()[-1] is None


@pytest.mark.parametrize("digits", ["", "12a", "1 2", "E", "#" * 33, None, 12])
def test_bad_digits_name_the_field(digits: Any) -> None:
    w = World()
    w.talking()
    error(lambda: w.control.dtmf("op1", digits), 422, "digits")
    assert w.media.dtmf == []


def test_digits_go_to_the_callers_leg_as_rfc4733() -> None:
    w = World()
    error(lambda: w.control.dtmf("op1", "1"), 409)  # no call
    caller, _ = w.talking()
    w.control.dtmf("op1", "12*#AD")
    assert w.media.dtmf == [(caller.caller_leg.media, "12*#AD")]
    caller.caller_leg.media.rfc4733 = False
    assert "RFC 4733" in error(lambda: w.control.dtmf("op1", "5"), 409).message


# -- blind transfer ------------------------------------------------------------------------------------------------
def test_transfer_to_a_queue_keeps_an_emergency_an_emergency() -> None:
    w = World()
    w.available("op1")
    caller = w.call_in("e1", queue="hotline", priority="emergency")
    phone = w.phone("op1")
    w.ua.outbound.answer(phone)
    result = w.control.transfer("op1", queue="emergency")
    assert result == {"call_id": "e1", "target": "queue:emergency"}
    assert caller.active and not phone.active and w.ua.inbound.hung_up == []  # only the operator left
    assert w.media.music == [caller.caller_leg.media]
    queued = w.acd.calls["e1"]
    assert (queued.queue.name, queued.priority, queued.emergency) == ("emergency", "emergency", True)
    assert w.kinds("e1")[-5:] == [("transfer", "op1", "queue:emergency"), ("complete", "op1", ""),
                                  ("enter", None, "transfer"), ("wrapup", "op1", ""), ("offer", "op1", "seize")]
    # nobody else free: the emergency took op1 straight out of wrap-up again
    w.flush()
    assert w.published()[-1]["state"] == "ringing"


def test_transfer_to_an_operator_offers_the_call_to_them_only() -> None:
    w = World()
    caller, _ = w.talking()
    error(lambda: w.control.transfer("op1", operator="op2"), 409, "operator")  # op2 is not logged in
    error(lambda: w.control.transfer("op1", operator="op9"), 422, "operator")
    error(lambda: w.control.transfer("op1", operator="op1"), 422, "operator")
    w.acd.set_state("op2", "paused", "lunch")
    w.available("op3")
    w.clock.advance(5)
    w.control.transfer("op1", operator="op2")
    assert w.acd.calls["c1"].target == "op2" and w.acd.offers == {}  # op3 is free, but it waits for op2
    w.acd.set_state("op2", "available")
    (offer,) = w.acd.offers.values()
    assert offer.operator.name == "op2"
    w.acd.not_answered(offer, "no_answer")  # op2 did not take it: anyone may
    assert w.acd.calls["c1"].target is None
    assert [o.operator.name for o in w.acd.offers.values()] == ["op3"]
    assert caller.active


def test_an_emergency_never_waits_for_a_busy_colleague() -> None:
    w = World()
    w.available("op1", "op2")
    w.call_in("e1", priority="emergency")
    w.ua.outbound.answer(w.phone("op1"))
    w.call_in("c2")
    w.ua.outbound.answer(w.phone("op2"))  # op2 talks to a normal call
    w.available("op3")
    w.control.transfer("op1", operator="op2")
    assert w.acd.calls["e1"].target is None
    assert [o.operator.name for o in w.acd.offers.values()] == ["op3"]


def test_transfer_to_a_number_releases_the_operator_and_requeues_when_unanswered() -> None:
    w = World()
    caller, phone = w.talking()
    error(lambda: w.control.transfer("op1"), 422, "number")
    error(lambda: w.control.transfer("op1", number="12", queue="hotline"), 422, "number")
    error(lambda: w.control.transfer("op1", number="12-34"), 422, "number")
    error(lambda: w.control.transfer("op1", queue="nowhere"), 422, "queue")
    w.flows.no_line = True
    assert "no free trunk" in error(lambda: w.control.transfer("op1", number="13700137000"), 409, "number").message
    assert w.acd.operators["op1"].state is OS.TALKING and phone.active  # the operator keeps the caller
    w.flows.no_line = False
    result = w.control.transfer("op1", number="13700137000")
    assert result["target"] == "number:13700137000"
    (transferred, number, ringing), = w.flows.transfers
    assert (transferred, number) == (caller, "13700137000")
    assert not phone.active and caller.active and "c1" not in w.acd.calls
    assert ("transfer", "op1", "number:13700137000") in w.kinds("c1")
    ringing.callback(False)  # nobody answered: back in the queue rather than dropped
    assert w.acd.calls["c1"].queue.name == "hotline" and w.kinds("c1")[-1][:3] == ("enter", None, "requeue")
    assert w.media.music == [caller.caller_leg.media] * 2


def test_a_transfer_needs_a_queue_conversation_without_parties() -> None:
    w = World()
    error(lambda: w.control.transfer("op1", queue="hotline"), 409)
    w.talking()
    w.control.conference("op1", service="120")
    assert "third party" in error(lambda: w.control.transfer("op1", queue="hotline"), 409).message


# -- three-way calls -----------------------------------------------------------------------------------------------
def test_a_three_way_call_with_120_and_back() -> None:
    w = World()
    caller, phone = w.talking()
    party = w.control.conference("op1", service="120")
    assert w.ua.outbound.originated == [("120", None, ELDER, True)]
    assert (party["number"], party["label"], party["state"]) == ("120", "120", "ringing")
    assert caller.parties and caller.parties[0].call_id == party["call_id"]
    assert w.published()[-1]["parties"] == [party]
    assert "three-way" in error(lambda: w.control.hold("op1", True), 409).message

    third = caller.parties[0]
    w.ua.outbound.answer(third)
    assert w.media.log[-1] == ("conference", ["c1", phone.call_id, third.call_id])
    assert w.published()[-1]["parties"][0]["state"] == "talking"

    error(lambda: w.control.drop_party("op1", "party-99"), 404, "party_call_id")
    w.control.drop_party("op1", third.call_id)
    assert not third.active and caller.parties == []
    assert w.media.log[-1] == ("bridge", "c1", phone.call_id)  # just the two again
    assert w.published()[-1]["parties"] == []
    assert w.control.hold("op1", True)["held"] is True
    assert "hold" in error(lambda: w.control.conference("op1", number="01066001234"), 409).message


def test_the_elder_stays_with_120_when_the_operator_leaves() -> None:
    w = World()
    caller, phone = w.talking()
    w.control.conference("op1", number="01066001234")
    third = caller.parties[0]
    w.ua.outbound.answer(third)
    w.control.hangup("op1")
    assert caller.active and third.active and w.media.log[-1] == ("bridge", "c1", third.call_id)
    assert w.published()[-1] is None  # the operator's conversation is over
    w.ua.outbound.end(third)  # 120 hangs up: nobody is left for the elder
    assert not caller.active and w.ua.inbound.hung_up == ["c1"]


def test_conference_input_and_refusals() -> None:
    w = World()
    error(lambda: w.control.conference("op1", service="120"), 409)  # no call
    w.talking()
    error(lambda: w.control.conference("op1"), 422, "number")
    error(lambda: w.control.conference("op1", number="120", service="120"), 422, "number")
    error(lambda: w.control.conference("op1", service="119"), 422, "service")
    error(lambda: w.control.conference("op1", number="x120"), 422, "number")
    w.ua.outbound.refuse = "trunk carrier has no free channel"
    assert "no free channel" in error(lambda: w.control.conference("op1", service="110"), 409, "service").message
    w.ua.outbound.refuse = None
    w.control.conference("op1", service="110")
    w.control.conference("op1", number="01066001234")
    error(lambda: w.control.conference("op1", number="01066001235"), 409, "number")  # two parties at most


def test_a_party_that_never_answers_leaves_the_bridge_alone() -> None:
    w = World()
    caller, phone = w.talking()
    w.control.conference("op1", service="120")
    before = list(w.media.log)
    w.ua.outbound.end(caller.parties[0], 486)
    assert w.media.log == before and caller.active and caller.parties == []


# -- the router's targeted calls, directly -------------------------------------------------------------------------
def test_a_targeted_call_is_untargeted_when_the_colleague_logs_out() -> None:
    w = World()
    w.available("op1")
    w.acd.set_state("op2", "paused", "meeting")
    w.ua.incoming("c1", ELDER)
    w.acd.enqueue("c1", ELDER, QueueRequest("hotline", "normal", 1, {}, None, None, "f", "n"), target="op2")
    assert w.acd.offers == {}
    w.acd.set_state("op2", "logged_out")
    assert [o.operator.name for o in w.acd.offers.values()] == ["op1"]


# -- media: mute and the operator's hold ---------------------------------------------------------------------------
def test_bridge_mute_and_deaf_holder() -> None:
    r = Rig("PCMU", "PCMU")
    a, b = r.legs
    bridge = Bridge(a.session, b.session)
    r.clock.add_handler(bridge)
    r.step(const_frame(1000), const_frame(2000))
    r.step(const_frame(1000), const_frame(2000))
    assert a.sent[-1] == const_frame(2000) and b.sent[-1] == const_frame(1000)
    bridge.muted.add(id(b.session))  # the operator (b) muted: the caller hears nothing of b, b still hears a
    r.step(const_frame(1000), const_frame(2000))
    r.step(const_frame(1000), const_frame(2000))
    assert a.sent[-1] == codec_for("PCMU").silence and b.sent[-1] == const_frame(1000)
    bridge.muted.clear()
    music = [const_frame(300)] * 10
    player = type("P", (), {"next_frame": lambda self: music.pop()})()
    bridge.hold(b.session, player, holder_hears=False)  # the operator's hold: music to a, silence to b
    r.step(const_frame(1000), const_frame(2000))
    r.step(const_frame(1000), const_frame(2000))
    assert a.sent[-1] == const_frame(300) and b.sent[-1] == codec_for("PCMU").silence
    bridge.unhold(b.session)
    r.step(const_frame(1000), const_frame(2000))
    r.step(const_frame(1000), const_frame(2000))
    assert a.sent[-1] == const_frame(2000) and b.sent[-1] == const_frame(1000)


def test_conference_mute_keeps_the_muted_member_listening() -> None:
    r = Rig("PCMU", "PCMU", "PCMU")
    a, b, c = r.legs
    conference = Conference([a.session, b.session, c.session])
    r.clock.add_handler(conference)
    conference.muted.add(id(b.session))
    for _ in range(3):
        r.step(const_frame(1000), const_frame(2000), const_frame(4000))
    pcm = {leg.session.role: codec_for("PCMU").decode(leg.sent[-1]).astype(int) for leg in (a, b, c)}
    assert abs(int(np.median(pcm["leg0"])) - 4000) < 200  # a hears c only (b is muted)
    assert abs(int(np.median(pcm["leg2"])) - 1000) < 100  # c hears a only
    assert abs(int(np.median(pcm["leg1"])) - 5000) < 300  # b still hears a + c


def test_media_service_hold_leg_and_mute_survive_a_conference(rig) -> None:  # noqa: F811
    a, b, c = rig.leg(), rig.leg(role="operator", codec="PCMA"), rig.leg(role="family")
    service = rig.service
    assert service.hold_leg(b.session, True) is False  # not bridged yet
    service.bridge(a.session, b.session)
    feed_and_tick(rig, [a, b], [const_frame(1000), const_frame(2000, "PCMA")], n=3)
    assert service.hold_leg(b.session, True) is True
    a.udp.take(), b.udp.take()
    feed_and_tick(rig, [a, b], [const_frame(1000), const_frame(2000, "PCMA")], n=3)
    assert sent_payloads(a) == hold_music().frames("PCMU")[:3]  # the caller hears music
    assert set(sent_payloads(b)) == {codec_for("PCMA").silence}  # the operator hears silence
    assert service.hold_leg(b.session, False) is True
    service.mute(b.session, True)
    assert service.is_muted(b.session)
    service.conference([a.session, b.session, c.session])
    feed_and_tick(rig, [a, b, c], [const_frame(1000), const_frame(2000, "PCMA"), const_frame(3000)], n=3)
    heard = codec_for("PCMU").decode(sent_payloads(a)[-1]).astype(int)
    assert abs(int(np.median(heard)) - 3000) < 150  # the caller hears the family member, not the muted operator
    service.close_leg(b.session)
    assert not service.is_muted(b.session)
