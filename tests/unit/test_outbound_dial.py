"""Ordinary outbound calls an operator places from the desktop (callcenter.acd.dialler.Dialler.call), on both
devices, with call control on them (callcenter.acd.control).

Desk phone: a ``task.Clock``, the real Distributor, and the fake telephone side of tests/unit/test_acd_dialler.py
(each test decides when the desk phone or the elder answers or hangs up). Browser softphone: the real
SipConnector, Softphones and MediaService (fake UDP) of tests/unit/test_dialler_browser.py with real WebRtcLegs
without a peer connection. No callback task is involved (the dialler has no task store at all here)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.control import CallControl
from callcenter.acd.dialler import DialError, Dialler, Placed
from callcenter.acd.events import EventList
from callcenter.acd.model import AcdSettings, QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.acd.softphone import Softphones
from callcenter.acd.telephony import SipConnector
from callcenter.calls.model import EndReason
from callcenter.calls.trunks import Trunk, TrunkSet
from callcenter.ivr.runner import QueueRequest
from callcenter.media.mixing import Bridge
from callcenter.media.prompts import PromptCache
from callcenter.media.service import MediaService
from callcenter.store.db import create_engine_for, run_migrations
from tests.unit import test_acd_dialler as phone_side
from tests.unit import test_dialler_browser as browser_side
from tests.unit.mediahelpers import TE_PT, FakeReactor
from tests.unit.test_softphones import FakeFlows, FakeGateway

OS = OperatorState
ELDER = "13800138001"
START = 1_700_000_000.0


def carrier(channels: int = 2, reserve: int = 1) -> Trunk:
    return Trunk("carrier", "127.0.0.2", 5060, "UDP", channels, reserve, frozenset())


# -- the desk phone --------------------------------------------------------------------------------------------
class DeskMedia(phone_side.FakeMediaService):
    """What call control asks of media for a desk phone conversation (legs named by their call id)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, Any]] = []

    def hold_leg(self, leg: phone_side.Media, held: bool) -> bool:
        self.asked.append(("hold", leg.name, held))
        return True

    def mute(self, leg: phone_side.Media, muted: bool) -> None:
        self.asked.append(("mute", leg.name, muted))

    def send_dtmf(self, leg: phone_side.Media, digits: str) -> bool:
        self.asked.append(("dtmf", leg.name, digits))
        return True


class PhoneRig:
    """op1 has desk phone 1001 and a wrap-up; op2 has no desk phone; a waiting call would ring op1 when free."""

    def __init__(self, *, wrap_up: float = 0.0, trunk: Trunk | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.ua = phone_side.FakeUa(self.clock)
        self.ua.trunks = TrunkSet([trunk or carrier()])  # type: ignore[attr-defined]
        self.media = DeskMedia()
        self.op1 = Operator("op1", "Op 1", "1001", "operator1", {"cmn": 5}, {"hotline": 5}, wrap_up)
        self.op2 = Operator("op2", "Op 2", None, None, {"cmn": 5}, {"hotline": 5}, 0.0)
        self.acd = Distributor(self.clock, None, queues=[QueueSettings("hotline")], operators=[self.op1, self.op2],
                               events=EventList())
        self.acd.set_state("op1", "available")
        self.dialler = Dialler(self.ua, self.media, self.acd, None, ring_timeout=40.0)  # type: ignore[arg-type]
        self.control = CallControl(ua=self.ua, media=self.media, acd=self.acd, dialler=self.dialler)

    @property
    def outbound(self) -> phone_side.FakeOutbound:
        return self.ua.outbound

    def waiting_call(self) -> None:
        self.acd.enqueue("queued", "01077770000", QueueRequest("hotline", "normal", 1, {}, None, None, "f", "n"))


def test_the_desk_phone_rings_first_then_the_elder_through_the_trunk_then_they_talk() -> None:
    rig = PhoneRig(wrap_up=10.0)
    placed = rig.dialler.call("op1", ELDER, elder_id=7)
    assert isinstance(placed, Placed) and placed.kind == "outbound" and placed.key.startswith("outbound-")
    assert placed.task_id is None and placed.elder_id == 7 and rig.dialler.attempts == {}  # no callback attempt
    (ring,) = rig.outbound.phones
    assert ring["account"] == "1001" and ring["caller_number"] == ELDER and ring["ring_timeout"] == 40.0
    assert ring["display"] == f"外呼 {ELDER}" and rig.outbound.originated == []  # the operator first
    assert rig.op1.state is OS.RESERVED and rig.acd.outbound == {"op1": placed.key}
    rig.waiting_call()
    assert rig.acd.offers == {}  # a reserved operator is offered no queued call
    assert rig.control.current("op1") == {
        "call_id": placed.key, "state": "ringing", "device": "phone", "muted": False, "held": False, "parties": [],
        "started_at": "2023-11-14T22:13:20+00:00", "kind": "outbound"}

    rig.clock.advance(3)
    phone = ring["call"]
    rig.outbound.answer(phone)  # the operator picks up: now the elder is called, through a trunk
    (dialled,) = rig.outbound.originated
    elder = dialled["call"]
    assert dialled["number"] == ELDER and dialled["emergency"] is False  # never on the emergency reserve
    assert elder.trunk == "carrier" and elder.elder_id == 7  # the record and the pop know whom it is about
    current = rig.control.current("op1")
    assert current is not None and (current["state"], current["call_id"]) == ("ringing", elder.call_id)
    assert rig.op1.state is OS.RESERVED and rig.media.bridged == []

    rig.clock.advance(5)
    rig.outbound.answer(elder)
    assert rig.media.bridged == [(elder.call_id, phone.call_id)] and rig.media.recording == [elder.call_id]
    assert rig.op1.state is OS.TALKING and rig.dialler.status() == {
        placed.key: {"number": ELDER, "operator": "op1", "reached": True}}
    talk = rig.control.talk("op1")
    assert talk is not None and talk.kind == "outbound" and talk.caller is elder and talk.phone is phone
    current = rig.control.current("op1")
    assert current is not None and (current["state"], current["kind"]) == ("talking", "outbound")
    assert current["started_at"] == "2023-11-14T22:13:28+00:00"  # when the elder answered

    rig.clock.advance(60)
    rig.outbound.end(elder, EndReason.CALLER_BYE, None)  # the elder hangs up: the desk phone is hung up too
    assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE)] and not phone.active
    assert rig.dialler.placed == {} and rig.acd.outbound == {} and rig.control.current("op1") is None
    assert rig.op1.state is OS.WRAP_UP  # as after any conversation
    rig.clock.advance(10)
    assert rig.op1.state is OS.RESERVED and [o.call.call_id for o in rig.acd.offers.values()] == ["queued"]


def test_call_control_holds_mutes_sends_digits_and_hangs_up_a_desk_phone_outbound_call() -> None:
    rig = PhoneRig()
    rig.dialler.call("op1", ELDER)
    phone = rig.outbound.phones[0]["call"]
    rig.outbound.answer(phone)
    elder = rig.outbound.originated[0]["call"]
    rig.outbound.answer(elder)
    assert rig.control.hold("op1", True)["state"] == "held"  # type: ignore[index]
    rig.control.hold("op1", False)
    assert rig.control.mute("op1", True)["muted"] is True  # type: ignore[index]
    rig.control.dtmf("op1", "5")
    assert rig.media.asked == [("hold", phone.call_id, True), ("hold", phone.call_id, False),
                               ("mute", phone.call_id, True), ("dtmf", elder.call_id, "5")]  # digits to the elder
    assert rig.control.hangup("op1") is None  # the desk phone is put down: the elder gets a BYE too
    assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE), (elder.call_id, EndReason.LOCAL_BYE)]
    assert not elder.active and rig.dialler.placed == {} and rig.op1.state is OS.AVAILABLE
    assert ("mute", phone.call_id, False) in rig.media.asked  # unmuted when the conversation ended


def test_hanging_up_on_the_desktop_cancels_while_the_desk_phone_rings() -> None:
    rig = PhoneRig()
    placed = rig.dialler.call("op1", ELDER)
    phone = rig.outbound.phones[0]["call"]
    assert rig.control.hangup("op1") is None  # the ringing desk phone gets a CANCEL
    assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE)] and not phone.active
    assert rig.outbound.originated == [] and rig.dialler.placed == {} and placed.done
    assert rig.op1.state is OS.AVAILABLE and rig.acd.outbound == {}


def test_hanging_up_on_the_desktop_cancels_while_the_elder_rings() -> None:
    rig = PhoneRig(wrap_up=10.0)
    rig.dialler.call("op1", ELDER)
    phone = rig.outbound.phones[0]["call"]
    rig.outbound.answer(phone)
    elder = rig.outbound.originated[0]["call"]
    assert rig.control.hangup("op1") is None
    assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE), (elder.call_id, EndReason.LOCAL_BYE)]
    assert not elder.active and elder.sip_status == 487 and rig.dialler.placed == {}
    assert rig.op1.state is OS.AVAILABLE  # nobody talked: no wrap-up


def test_a_busy_elder_or_an_operator_who_does_not_pick_up_frees_the_operator() -> None:
    rig = PhoneRig(wrap_up=10.0)
    rig.dialler.call("op1", ELDER)
    phone = rig.outbound.phones[0]["call"]
    rig.outbound.answer(phone)
    rig.outbound.end(rig.outbound.originated[0]["call"], EndReason.FAILED, 486)
    assert not phone.active and rig.op1.state is OS.AVAILABLE and rig.dialler.placed == {}

    rig.dialler.call("op1", ELDER)
    rig.outbound.end(rig.outbound.phones[1]["call"], EndReason.TIMEOUT, 408)  # the desk phone's ring timeout
    assert len(rig.outbound.originated) == 1 and rig.op1.state is OS.AVAILABLE and rig.dialler.placed == {}


def test_what_cannot_be_placed_and_nothing_happens_then() -> None:
    rig = PhoneRig()
    for number in ("", "1", "12-34", "abc", "1" * 33, None):
        with pytest.raises(DialError) as info:
            rig.dialler.call("op1", number)  # type: ignore[arg-type]
        assert (info.value.status, info.value.field) == (422, "number")
    with pytest.raises(DialError) as info:
        rig.dialler.call("nobody", ELDER)
    assert (info.value.status, info.value.field) == (404, "operator")
    with pytest.raises(DialError) as info:
        rig.dialler.call("op2", ELDER)
    assert info.value.status == 409 and "no desk phone" in str(info.value)
    rig.acd.set_state("op1", "logged_out")
    with pytest.raises(DialError) as info:
        rig.dialler.call("op1", ELDER)
    assert info.value.status == 409 and "logged_out" in str(info.value)
    rig.acd.set_state("op1", "available")
    rig.outbound.refuse_phone = "1001 is not registered"
    with pytest.raises(DialError) as info:
        rig.dialler.call("op1", ELDER)
    assert info.value.status == 409 and "not registered" in str(info.value)
    assert rig.op1.state is OS.AVAILABLE and rig.dialler.placed == {} and rig.acd.outbound == {}
    rig.outbound.refuse_phone = None

    rig.dialler.call("op1", ELDER)
    with pytest.raises(DialError) as info:
        rig.dialler.call("op1", "13900139000")  # already placing one
    assert info.value.status == 409 and len(rig.outbound.phones) == 1


def test_an_operator_on_a_call_cannot_place_one() -> None:
    rig = PhoneRig()
    rig.waiting_call()
    (offer,) = rig.acd.offers.values()
    with pytest.raises(DialError) as info:
        rig.dialler.call("op1", ELDER)  # ringing with a queued call
    assert info.value.status == 409
    rig.acd.answered(offer)
    with pytest.raises(DialError) as info:
        rig.dialler.call("op1", ELDER)
    assert info.value.status == 409 and rig.outbound.phones == [] and rig.op1.state is OS.TALKING


def test_no_free_trunk_line_refuses_before_the_desk_phone_rings() -> None:
    trunk = carrier(channels=2, reserve=1)
    rig = PhoneRig(trunk=trunk)
    trunk.active_calls.add("someone")  # one channel used, the other kept for emergencies
    with pytest.raises(DialError) as info:
        rig.dialler.call("op1", ELDER)
    assert info.value.status == 409 and "no free non-emergency channel" in str(info.value)
    assert rig.outbound.phones == [] and rig.op1.state is OS.AVAILABLE
    rig.ua.trunks = TrunkSet([])  # type: ignore[attr-defined]
    with pytest.raises(DialError) as info:
        rig.dialler.call("op1", ELDER)
    assert info.value.status == 409 and "no outbound trunk" in str(info.value)
    trunk.active_calls.clear()
    rig.ua.trunks = TrunkSet([trunk])  # type: ignore[attr-defined]
    rig.dialler.call("op1", ELDER)
    rig.outbound.refuse_originate = "trunk carrier has no free non-emergency channel"  # taken meanwhile
    phone = rig.outbound.phones[0]["call"]
    rig.outbound.answer(phone)
    assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE)] and rig.op1.state is OS.AVAILABLE


def test_callbacks_and_outbound_calls_share_the_dialler_without_mixing(tmp_path: Path) -> None:
    """A callback task's attempt is still counted as before while another operator places an outbound call."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)

    async def main() -> None:
        rig = PhoneRig()
        op3 = Operator("op3", "Op 3", "1003", None, {"cmn": 5}, {"hotline": 5}, 0.0)
        rig.acd.operators["op3"] = op3
        rig.acd.set_state("op3", "available")
        db = create_engine_for(url)
        rig.dialler.tasks = CallbackTasks(db)
        rig.dialler.retry = [60.0]
        try:
            task_id = await rig.dialler.tasks.create(number="01088886666", call_id="c1", elder_id=9, reason="asked",
                                                     source="ivr", due_at=dt.datetime.now(dt.UTC))
            callback = await rig.dialler.dial(task_id, "op3")
            outbound = rig.dialler.call("op1", ELDER)
            assert rig.dialler.attempts == {task_id: callback} and set(rig.dialler.placed) == {callback.key,
                                                                                                outbound.key}
            assert callback.key == f"callback-{task_id}" and callback.elder_id == 9
            assert rig.control.current("op3")["kind"] == "callback"  # type: ignore[index]
            assert rig.control.current("op1")["kind"] == "outbound"  # type: ignore[index]
            rig.outbound.end(rig.outbound.phones[0]["call"], EndReason.TIMEOUT, 408)  # op3 did not pick up
            await rig.dialler.drain()
            task = await rig.dialler.tasks.get(task_id)
            assert task is not None and (task.state, task.attempts) == ("open", 0)
            assert list(rig.dialler.placed) == [outbound.key] and rig.op1.state is OS.RESERVED
        finally:
            await rig.dialler.drain()
            await db.dispose()

    asyncio.run(main())


# -- the browser softphone ------------------------------------------------------------------------------------------
class BrowserRig:
    """op1 talks on the browser softphone; the elder's call gets a real RTP leg of the media service."""

    def __init__(self, root: Path, *, wrap_up: float = 0.0) -> None:
        self.reactor = FakeReactor()
        self.clock = self.reactor.clock
        self.media = MediaService(self.reactor, address="127.0.0.1", port_min=20000, port_max=20100,
                                  prompts=PromptCache(root / "prompts"), recordings_root=root / "recordings")
        self.ua = browser_side.FakeUa(self.clock, self.media)
        self.op1 = Operator("op1", "Op 1", None, "operator1", {"cmn": 5}, {"care": 5}, wrap_up, device="browser")
        self.acd = Distributor(self.clock, None, queues=[QueueSettings("care")], operators=[self.op1],
                               settings=AcdSettings(ring_timeout=15.0), events=EventList())
        self.connector = SipConnector(self.ua, self.media, FakeFlows(), ring_timeout=15.0, keepalive=0,  # type: ignore[arg-type]
                                      acd=self.acd)
        self.acd.connector = self.connector
        self.gateway = FakeGateway()
        self.phones = Softphones(self.connector, self.gateway, reconnect_grace=5.0)  # type: ignore[arg-type]
        self.dialler = Dialler(self.ua, self.media, self.acd, None, softphones=self.phones)  # type: ignore[arg-type]
        self.control = CallControl(ua=self.ua, media=self.media, acd=self.acd, connector=self.connector,
                                   softphones=self.phones, dialler=self.dialler)
        self.acd.set_state("op1", "available")

    @property
    def outbound(self) -> browser_side.FakeOutbound:
        return self.ua.outbound

    async def connect(self) -> Any:
        await self.phones.connect("op1", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n")
        return self.phones.leg("op1")

    def partner(self, session: Any) -> Any:
        entry = self.media._legs.get(id(session))
        handler = entry.handler if entry is not None else None
        if not isinstance(handler, Bridge):
            return None
        return handler.other if handler.caller is session else handler.caller


def run_browser(tmp_path: Path, test: Callable[[BrowserRig], Awaitable[None]], **kwargs: Any) -> None:
    asyncio.run(test(BrowserRig(tmp_path, **kwargs)))


def test_the_browser_calls_the_elder_at_once_and_call_control_works_on_it(tmp_path: Path) -> None:
    async def test(rig: BrowserRig) -> None:
        leg = await rig.connect()
        placed = rig.dialler.call("op1", ELDER, elder_id=3)
        (elder,) = rig.outbound.originated
        assert rig.outbound.phones == [] and elder.dialled == ELDER and elder.elder_id == 3  # no desk phone
        assert rig.phones.talking_call("op1") == elder.call_id and rig.phones.talking_kind("op1") == "outbound"
        assert rig.op1.state is OS.RESERVED and rig.acd.outbound == {"op1": placed.key}
        ringing = rig.control.current("op1")
        assert ringing is not None and (ringing["call_id"], ringing["state"], ringing["device"], ringing["kind"]) \
            == (elder.call_id, "ringing", "browser", "outbound")
        assert rig.partner(leg) is None  # not before the elder answers

        rig.clock.advance(4)
        rig.outbound.answer(elder)
        session = elder.caller_leg.media
        assert rig.partner(session) is leg and rig.op1.state is OS.TALKING
        assert rig.media._legs[id(session)].tap is not None  # recorded
        talking = rig.control.current("op1")
        assert talking is not None and (talking["state"], talking["kind"]) == ("talking", "outbound")
        rig.control.mute("op1", True)
        assert rig.media.is_muted(leg)
        rig.control.hold("op1", True)
        assert rig.control.current("op1")["state"] == "held"  # type: ignore[index]
        rig.control.hold("op1", False)
        rig.control.dtmf("op1", "1#")
        session.transport.take()
        rig.media.clock.run_once(rig.reactor.seconds())
        assert [p.payload_type for p in session.transport.take()] == [TE_PT]  # RFC 4733 to the elder
        rig.control.hangup("op1")
        assert rig.outbound.hung_up == [(elder.call_id, EndReason.LOCAL_BYE)] and not elder.active
        assert rig.op1.state is OS.WRAP_UP and rig.dialler.placed == {} and rig.phones.outbound == {}
        assert not rig.media.is_muted(leg) and rig.phones.connected("op1")

    run_browser(tmp_path, test, wrap_up=10.0)


def test_the_browser_operator_cancels_while_the_elder_rings(tmp_path: Path) -> None:
    async def test(rig: BrowserRig) -> None:
        await rig.connect()
        rig.dialler.call("op1", ELDER)
        (elder,) = rig.outbound.originated
        rig.control.hangup("op1")
        assert not elder.active and elder.sip_status == 487 and rig.op1.state is OS.AVAILABLE
        assert rig.control.current("op1") is None and rig.dialler.placed == {}

    run_browser(tmp_path, test, wrap_up=10.0)


def test_the_browser_path_refuses_without_a_softphone_or_a_line(tmp_path: Path) -> None:
    async def test(rig: BrowserRig) -> None:
        with pytest.raises(DialError) as info:
            rig.dialler.call("op1", ELDER)
        assert info.value.status == 409 and "softphone is not connected" in str(info.value)
        await rig.connect()
        rig.outbound.refuse_originate = "no outbound trunk"
        with pytest.raises(DialError) as info:
            rig.dialler.call("op1", ELDER)
        assert info.value.status == 409 and "no line" in str(info.value)
        assert rig.op1.state is OS.AVAILABLE and rig.dialler.placed == {} and rig.phones.outbound == {}

    run_browser(tmp_path, test)
