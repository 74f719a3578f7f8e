"""The browser softphone as an operator's telephone (callcenter.acd.softphone) on a simulated clock.

The real Distributor, the real SipConnector and a real MediaService (fake UDP, see mediahelpers) share one
``task.Clock``; the user-agent core and the flows are small fakes; the softphone legs are real WebRtcLegs that a
fake gateway hands out without any peer connection (it can also make one "go away", as a failed or closed peer
connection does). Offers ring, are answered, refused, time out; conversations end, are pre-empted, and lose
their browser — each seen from the ACD (operator states, queue events) and from the media (who is bridged)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from callcenter.acd.events import EventList
from callcenter.acd.model import AcdSettings, CallState, QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.acd.softphone import Softphones
from callcenter.acd.telephony import OPERATOR_LOST, PREEMPTED_REQUEUE, SipConnector
from callcenter.calls.model import CallState as SipState
from callcenter.calls.model import EndReason
from callcenter.ivr.runner import QueueRequest
from callcenter.media.mixing import Bridge
from callcenter.media.prompts import PromptCache
from callcenter.media.service import MediaService
from callcenter.media.session import Negotiated, RtpSession
from callcenter.media.webrtc import WebRtcError, WebRtcLeg
from tests.unit.mediahelpers import FakeReactor

OS = OperatorState
RING = 15.0


# -- fakes -------------------------------------------------------------------------------------------------
@dataclass
class FakeLeg:
    media: Any = None


@dataclass(eq=False)
class FakeCall:
    call_id: str
    caller_number: str
    caller_display: str | None = None
    state: SipState = SipState.CONFIRMED
    linked: Any = None
    parties: list[Any] = field(default_factory=list)
    legs: list[FakeLeg] = field(default_factory=lambda: [FakeLeg()])
    direction: str = "inbound"
    emergency: bool = False

    @property
    def active(self) -> bool:
        return self.state is not SipState.ENDED

    @property
    def caller_leg(self) -> FakeLeg:
        return self.legs[0]


class FakeInbound:
    def __init__(self, ua: FakeUa) -> None:
        self.ua = ua
        self.hangups: list[tuple[str, EndReason]] = []

    def hangup(self, call: FakeCall, reason: EndReason) -> None:
        self.hangups.append((call.call_id, reason))
        self.ua.end(call)


class FakeOutbound:
    def __init__(self) -> None:
        self.rung: list[str] = []
        self.hung_up: list[str] = []

    def hangup(self, call: FakeCall, reason: EndReason) -> None:
        self.hung_up.append(call.call_id)

    def call_phone(self, account: str, **kwargs: Any) -> FakeCall:
        self.rung.append(account)
        return FakeCall(f"phone-{len(self.rung)}", account)


class FakeUa:
    def __init__(self, clock: Any, media: MediaService) -> None:
        self.clock = clock
        self.media = media
        self.calls: dict[str, FakeCall] = {}
        self.inbound = FakeInbound(self)
        self.outbound = FakeOutbound()

    def call(self, call_id: str, number: str = "01066001234") -> FakeCall:
        call = FakeCall(call_id, number)
        session = self.media.open_leg(call_id, "caller")
        session.configure(Negotiated(codec="PCMU", payload_type=0, remote=("192.0.2.50", 40000)))
        call.caller_leg.media = session
        self.calls[call_id] = call
        return call

    def end(self, call: FakeCall) -> None:
        call.state = SipState.ENDED
        if call.caller_leg.media is not None:
            self.media.close_leg(call.caller_leg.media)


class FakeFlows:
    """What the connector says to callers (prompts are not rendered: prompt_for gives None)."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str | None]] = []
        self.directory = None  # lookup fails → the caller's language is "cmn"

    async def prompt_for(self, utterance: Any, *, call_id: str) -> None:
        self.said.append((call_id, utterance.text))


class FakeGateway:
    """Answers every offer with a new WebRtcLeg (no peer connection); ``go_away`` plays a failed connection."""

    def __init__(self) -> None:
        self.gone: dict[int, Callable[[WebRtcLeg], None]] = {}
        self.closed = False

    async def answer(self, offer_sdp: str, *, label: str,
                     on_gone: Callable[[WebRtcLeg], None] | None = None) -> tuple[str, WebRtcLeg]:
        if "m=audio" not in offer_sdp:
            raise WebRtcError("the offer has no audio (m=audio) section")
        leg = WebRtcLeg(label)
        if on_gone is not None:
            self.gone[id(leg)] = on_gone
        return f"answer for {label}", leg

    def go_away(self, leg: WebRtcLeg) -> None:
        leg.close()
        self.gone[id(leg)](leg)

    async def close(self) -> None:
        self.closed = True


def operator(name: str, device: str = "browser", wrap_up: float = 0.0) -> Operator:
    return Operator(name, name.upper(), f"{name}-phone", name, {"cmn": 5}, {"care": 1}, wrap_up, device=device)


def request(priority: str = "normal") -> QueueRequest:
    return QueueRequest("care", priority, 1, {}, None, None, "flow", "node")


class Rig:
    def __init__(self, root: Path, operators: list[Operator], **settings: Any) -> None:
        self.reactor = FakeReactor()
        self.clock = self.reactor.clock
        self.media = MediaService(self.reactor, address="127.0.0.1", port_min=20000, port_max=20100,
                                  prompts=PromptCache(root / "prompts"), recordings_root=root / "recordings")
        self.ua = FakeUa(self.clock, self.media)
        self.flows = FakeFlows()
        self.log = EventList()
        self.acd = Distributor(self.clock, None, queues=[QueueSettings("care")], operators=operators,
                               settings=AcdSettings(ring_timeout=RING, **settings), events=self.log)
        self.connector = SipConnector(self.ua, self.media, self.flows, ring_timeout=RING, keepalive=0,  # type: ignore[arg-type]
                                      acd=self.acd)
        self.acd.connector = self.connector
        self.gateway = FakeGateway()
        self.phones = Softphones(self.connector, self.gateway, reconnect_grace=5.0)  # type: ignore[arg-type]
        for o in operators:
            self.acd.set_state(o.name, "available")

    def connect(self, name: str) -> WebRtcLeg:
        answer = asyncio.run(self.phones.connect(name, "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"))
        assert answer == f"answer for softphone:{name}"
        leg = self.phones.leg(name)
        assert leg is not None
        return leg

    def enqueue(self, call_id: str, priority: str = "normal") -> FakeCall:
        call = self.ua.call(call_id)
        self.acd.enqueue(call_id, call.caller_number, request(priority))
        return call

    def state(self, name: str) -> tuple[str, str | None]:
        o = self.acd.operators[name]
        return o.state.value, o.pause_reason

    def partner(self, session: Any) -> Any:
        """The leg bridged with ``session`` (None when it is in no bridge)."""
        handler = self.media._legs[id(session)].handler
        if not isinstance(handler, Bridge):
            return None
        return handler.other if handler.caller is session else handler.caller

    def misses(self) -> list[tuple[str | None, str]]:
        return [(e.operator, e.detail) for e in self.log.events if e.kind == "miss"]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, [operator("op1")])


def talking(rig: Rig, call_id: str = "c1", name: str = "op1") -> tuple[FakeCall, WebRtcLeg]:
    leg = rig.phones.leg(name) or rig.connect(name)
    call = rig.enqueue(call_id)
    offer = rig.phones.ringing(name)
    assert offer is not None and offer.call.call_id == call_id
    assert rig.phones.answer(name, offer.id)
    return call, leg


# -- ringing and answering --------------------------------------------------------------------------------------
def test_an_offer_rings_on_the_desktop_and_answering_bridges_the_caller_with_the_browser(rig: Rig) -> None:
    leg = rig.connect("op1")
    assert rig.phones.connected("op1") and rig.media.is_open(leg)  # type: ignore[arg-type]
    call = rig.enqueue("c1")
    offer = rig.phones.ringing("op1")
    assert offer is not None and offer.handle is leg and rig.state("op1") == ("reserved", None)
    assert not rig.ua.outbound.rung  # no desk phone rang
    assert not rig.phones.answer("op1", offer.id + 1)  # not the offer that rings
    assert rig.phones.answer("op1", offer.id)
    assert rig.state("op1") == ("talking", None)
    assert rig.acd.calls["c1"].state is CallState.CONNECTED
    assert rig.partner(call.caller_leg.media) is leg
    assert rig.phones.talking_call("op1") == "c1" and rig.phones.operator_for("c1") == "op1"
    assert rig.phones.ringing("op1") is None and not rig.phones.answer("op1", offer.id)
    assert rig.connector._connected(call)  # type: ignore[arg-type]
    assert [e.kind for e in rig.log.events] == ["enter", "offer", "connect"]


def test_a_softphone_that_is_not_connected_is_unreachable(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [operator("op1"), operator("op2", device="phone")])
    rig.acd.set_state("op2", "paused", "break")
    rig.enqueue("c1")
    assert rig.state("op1") == ("paused", "phone_unreachable")
    assert rig.misses() == [("op1", "unreachable")]
    assert rig.acd.calls["c1"].state is CallState.WAITING


def test_an_unanswered_offer_is_a_miss_after_the_ring_timeout(rig: Rig) -> None:
    rig.connect("op1")
    rig.enqueue("c1")
    first = rig.phones.ringing("op1")
    rig.clock.advance(RING - 0.1)
    assert rig.phones.ringing("op1") is first
    rig.clock.advance(0.2)
    assert rig.misses() == [("op1", "no_answer")]
    second = rig.phones.ringing("op1")  # the only operator: offered again at once
    assert second is not None and second is not first and not rig.phones.answer("op1", first.id)  # type: ignore[union-attr]
    for _ in range(int(RING * 2) + 1):  # step by step: a timer set inside advance() counts from its end
        rig.clock.advance(1)
    assert rig.misses() == [("op1", "no_answer")] * 3
    assert rig.state("op1") == ("paused", "missed_offers")  # max_missed (3) in a row
    assert rig.phones.ringing("op1") is None


def test_declining_is_a_busy_miss_and_the_call_keeps_its_place(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [operator("op1"), operator("op2")])
    rig.connect("op1")
    rig.connect("op2")
    rig.enqueue("c1")
    first = next(n for n in ("op1", "op2") if rig.phones.ringing(n) is not None)
    other = "op2" if first == "op1" else "op1"
    rig.clock.advance(1)  # so that the other operator has now been idle longer
    assert rig.phones.decline(first)
    assert not rig.phones.decline(first)
    assert rig.misses() == [(first, "busy")]
    assert rig.phones.ringing(other) is not None and rig.acd.calls["c1"].state is CallState.OFFERED
    rig.clock.advance(RING + 1)  # the declined offer's ring timer must not report a second miss
    assert rig.misses() == [(first, "busy"), (other, "no_answer")]


def test_a_caller_who_hangs_up_while_it_rings_withdraws_the_offer(rig: Rig) -> None:
    rig.connect("op1")
    call = rig.enqueue("c1")
    offer = rig.phones.ringing("op1")
    assert offer is not None
    rig.ua.end(call)
    rig.acd.leave("c1", "caller_hangup")
    assert rig.phones.ringing("op1") is None and rig.phones.offers == {}
    assert not rig.phones.answer("op1", offer.id)
    assert rig.state("op1") == ("available", None)
    rig.clock.advance(RING + 1)
    assert rig.misses() == [("op1", "caller_gone")]


def test_answering_after_the_caller_vanished_unnoticed_is_refused(rig: Rig) -> None:
    rig.connect("op1")
    call = rig.enqueue("c1")
    offer = rig.phones.ringing("op1")
    assert offer is not None
    call.state = SipState.ENDED  # the ACD has not heard yet
    assert not rig.phones.answer("op1", offer.id)
    assert "c1" not in rig.acd.calls and rig.state("op1") == ("available", None)


# -- conversations ending -----------------------------------------------------------------------------------
def test_hanging_up_ends_the_call_with_wrap_up_and_keeps_the_softphone(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [operator("op1", wrap_up=10)])
    call, leg = talking(rig)
    assert rig.phones.hangup("op1")
    assert rig.ua.inbound.hangups == [("c1", EndReason.LOCAL_BYE)]
    assert rig.state("op1") == ("wrap_up", None)
    assert rig.phones.talking_call("op1") is None and not rig.phones.hangup("op1")
    assert rig.phones.connected("op1") and rig.media.is_open(leg)  # type: ignore[arg-type]
    assert [e.kind for e in rig.log.events][-1] == "complete"
    rig.clock.advance(10)
    assert rig.state("op1") == ("available", None)
    second, _ = talking(rig, "c2")  # the same leg takes the next call
    assert rig.partner(second.caller_leg.media) is leg


def test_hanging_up_a_three_way_call_leaves_the_elder_with_the_third_party(rig: Rig) -> None:
    call, leg = talking(rig)
    ambulance = rig.ua.call("ambulance")
    call.parties.append(ambulance)
    rig.media.conference([call.caller_leg.media, leg, ambulance.caller_leg.media])
    assert rig.phones.hangup("op1")
    assert rig.ua.inbound.hangups == [] and call.active
    assert rig.partner(call.caller_leg.media) is ambulance.caller_leg.media
    assert rig.partner(leg) is None


def test_when_the_caller_hangs_up_the_softphone_stays_for_the_next_call(rig: Rig) -> None:
    call, leg = talking(rig)
    rig.ua.end(call)
    rig.acd.leave("c1", "caller_hangup")
    assert rig.phones.talking_call("op1") is None and rig.phones.talking == {}
    rig.clock.advance(0)  # wrap-up of 0 seconds
    assert rig.state("op1") == ("available", None)
    assert not rig.phones.hangup("op1")
    assert rig.phones.connected("op1") and rig.partner(leg) is None


def test_an_emergency_preempts_a_browser_conversation(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [operator("op1")])
    call, leg = talking(rig, "c1")
    emergency = rig.enqueue("e1", "emergency")
    assert rig.phones.talking_call("op1") is None
    assert rig.partner(leg) is None and rig.partner(call.caller_leg.media) is None
    victim = rig.acd.calls["c1"]
    assert victim.state is CallState.WAITING and victim.head
    assert ("c1", PREEMPTED_REQUEUE["cmn"]) in rig.flows.said
    offer = rig.phones.ringing("op1")
    assert offer is not None and offer.call.call_id == "e1" and offer.seized
    assert rig.phones.answer("op1", offer.id)
    assert rig.partner(emergency.caller_leg.media) is leg


def test_an_announcement_in_flight_is_not_played_over_a_browser_conversation(rig: Rig) -> None:
    call, _ = talking(rig)
    queued = rig.acd.calls["c1"]
    rig.connector._say(queued, call, {"cmn": "position"}, then="music")  # type: ignore[arg-type]
    assert rig.media._legs[id(call.caller_leg.media)].player is None  # nothing plays to the caller


# -- the browser going away ----------------------------------------------------------------------------------
def test_a_browser_lost_mid_call_is_a_lost_phone_after_the_grace(rig: Rig) -> None:
    call, leg = talking(rig)
    rig.gateway.go_away(leg)
    assert not rig.phones.connected("op1") and not rig.media.is_open(leg)  # type: ignore[arg-type]
    assert rig.media._legs[id(call.caller_leg.media)].player is not None  # music meanwhile
    assert rig.state("op1") == ("talking", None)
    rig.clock.advance(5.0)
    assert rig.state("op1") == ("paused", "phone_lost")
    queued = rig.acd.calls["c1"]
    assert queued.state is CallState.WAITING and queued.head
    assert ("c1", OPERATOR_LOST["cmn"]) in rig.flows.said
    assert [(e.kind, e.detail) for e in rig.log.events][-2:] == [("complete", "operator_lost"), ("enter", "requeue")]


def test_a_reload_within_the_grace_takes_over_the_running_call(rig: Rig) -> None:
    call, old = talking(rig)
    rig.gateway.go_away(old)
    rig.clock.advance(3.0)
    new = rig.connect("op1")
    assert new is not old and rig.partner(call.caller_leg.media) is new
    rig.clock.advance(10.0)
    assert rig.state("op1") == ("talking", None) and rig.phones.talking_call("op1") == "c1"


def test_a_new_offer_from_the_same_desktop_replaces_the_leg_mid_call(rig: Rig) -> None:
    call, old = talking(rig)
    new = rig.connect("op1")
    assert old.closed and not rig.media.is_open(old)  # type: ignore[arg-type]
    assert rig.partner(call.caller_leg.media) is new
    assert rig.state("op1") == ("talking", None)


def test_a_browser_lost_while_ringing_pauses_the_operator(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [operator("op1"), operator("op2")])
    legs = {name: rig.connect(name) for name in ("op1", "op2")}
    rig.enqueue("c1")
    ringing = next(n for n in ("op1", "op2") if rig.phones.ringing(n) is not None)
    rig.gateway.go_away(legs[ringing])
    assert rig.state(ringing) == ("paused", "phone_unreachable")
    other = "op2" if ringing == "op1" else "op1"
    assert rig.phones.ringing(other) is not None


def test_a_browser_lost_while_idle_only_disconnects(rig: Rig) -> None:
    leg = rig.connect("op1")
    rig.gateway.go_away(leg)
    assert not rig.phones.connected("op1") and rig.state("op1") == ("available", None)
    rig.gateway.go_away(leg)  # a late second report changes nothing
    rig.enqueue("c1")
    assert rig.state("op1") == ("paused", "phone_unreachable")


def test_a_bad_offer_or_an_unknown_operator_is_refused(rig: Rig) -> None:
    with pytest.raises(WebRtcError):
        asyncio.run(rig.phones.connect("op1", "v=0\r\n"))
    with pytest.raises(KeyError):
        asyncio.run(rig.phones.connect("nobody", "v=0\r\nm=audio 9 RTP/AVP 0\r\n"))
    assert rig.phones.legs == {}


# -- devices ------------------------------------------------------------------------------------------------
def test_the_device_decides_what_rings(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [operator("op1", device="phone")])
    changes: list[tuple[str, str]] = []
    rig.acd.operators["op1"].listener = lambda o, old, new: changes.append((o.name, o.device)) if old is new else None
    rig.connect("op1")
    rig.enqueue("c1")
    assert rig.ua.outbound.rung == ["op1-phone"] and rig.phones.ringing("op1") is None
    rig.connector.stop_ringing(rig.acd.offers[next(iter(rig.acd.offers))])
    assert rig.ua.outbound.hung_up == ["phone-1"]
    rig.acd.set_device("op1", "browser")
    assert changes == [("op1", "browser")]
    assert rig.acd.operators_view()[0]["device"] == "browser"
    rig.acd.set_device("op1", "browser")
    assert changes == [("op1", "browser")]  # no change, no event
    with pytest.raises(ValueError, match="device"):
        rig.acd.set_device("op1", "pager")


def test_close_ends_every_leg_and_timer(rig: Rig) -> None:
    leg = rig.connect("op1")
    rig.enqueue("c1")
    asyncio.run(rig.phones.close())
    assert leg.closed and rig.phones.legs == {} and rig.gateway.closed
    assert [c for c in rig.clock.getDelayedCalls() if c.func.__name__ == "_ring_timeout"] == []


def test_views_show_each_softphone(rig: Rig) -> None:
    rig.connect("op1")
    rig.enqueue("c1")
    offer = rig.phones.ringing("op1")
    assert offer is not None
    assert rig.phones.views() == {"op1": {"connected": True, "codec": None, "state": "new", "offer_id": offer.id,
                                          "call_id": None}}


def test_the_caller_legs_are_real_rtp_sessions(rig: Rig) -> None:
    assert isinstance(rig.ua.call("x").caller_leg.media, RtpSession)


# -- configuration --------------------------------------------------------------------------------------------
def test_the_demo_configuration_rings_op1_in_the_browser(tmp_path: Path) -> None:
    from callcenter.app import build_distributor
    from callcenter.config import load_config

    config = load_config(None, env={})
    assert config.webrtc.host_addresses == ["127.0.0.1"] and config.webrtc.ice_servers == []
    acd = build_distributor(config, FakeReactor().clock, EventList())
    assert acd.operators["op1"].device == "browser" and acd.operators["op2"].device == "phone"


def test_webrtc_and_device_settings_are_checked(tmp_path: Path) -> None:
    from callcenter.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text("webrtc:\n  host_addresses: [eth0]\n  ice_servers:\n    - urls: [http://stun.example.org]\n"
                    "    - urls: turn:turn.example.org:3478\n"
                    "queues:\n  - name: care\noperators:\n  - name: op9\n    device: browser\n"
                    "  - name: op8\n    device: pager\n")
    with pytest.raises(ConfigError) as failure:
        load_config(path, env={})
    text = str(failure.value)
    assert f"{path}:2:20: webrtc.host_addresses[0]: expected an IP address" in text
    assert "webrtc.ice_servers[0].urls[0]: expected a stun:, stuns:, turn: or turns: URL" in text
    assert "webrtc.ice_servers[1]: a TURN server needs a username and a credential" in text
    assert "operators[1].device: expected 'phone' or 'browser'" in text
    path.write_text("queues:\n  - name: care\noperators:\n  - name: op9\n    device: browser\n")
    with pytest.raises(ConfigError, match=r"operators\[0\]\.device: a browser softphone needs a desktop login"):
        load_config(path, env={})
