"""Callbacks dialled by an operator whose device is the browser softphone (callcenter.acd.dialler + softphone).

The real Distributor, SipConnector, Softphones, CallbackDialler, MediaService (fake UDP) and callback tasks (a
temporary SQLite database) share one ``task.Clock``; the outbound side is a fake that creates calls with real RTP
legs and lets each test decide when the elder answers or hangs up; the softphone legs are real WebRtcLegs without a
peer connection (tests.unit.test_softphones.FakeGateway). No desk phone rings: the elder is called at once and
bridged with the browser; the desktop's hang-up, the elder's and a browser lost for good end the attempt with the
desk phone's bookkeeping."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.control import CallControl, ControlError
from callcenter.acd.dialler import CallbackDialler, DialError
from callcenter.acd.events import EventList
from callcenter.acd.model import AcdSettings, QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.acd.softphone import Softphones
from callcenter.acd.telephony import SipConnector
from callcenter.calls.model import Call, CallState, EndReason, Leg
from callcenter.calls.outbound import OutboundError
from callcenter.ivr.runner import QueueRequest
from callcenter.media.mixing import Bridge
from callcenter.media.prompts import PromptCache
from callcenter.media.service import MediaService
from callcenter.media.session import Negotiated
from callcenter.media.webrtc import WebRtcLeg
from callcenter.store.db import create_engine_for, run_migrations
from callcenter.store.models import CallbackTask
from tests.unit.mediahelpers import TE_PT, FakeReactor
from tests.unit.test_softphones import FakeFlows, FakeGateway

OS = OperatorState
ELDER = "01088886666"
RETRY = [300.0, 900.0]
RING = 15.0
GRACE = 5.0


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    return url


class FakeOutbound:
    """originate / call_phone / hangup without SIP; every call gets a real RTP leg of the media service."""

    def __init__(self, ua: FakeUa) -> None:
        self.ua = ua
        self.record_calls = True
        self.originated: list[Call] = []
        self.phones: list[str] = []
        self.hung_up: list[tuple[str, EndReason]] = []
        self.refuse_originate: str | None = None
        self.cancel_pending = False  # a CANCEL whose 487 has not come yet (a 200 may still cross it)
        self._answer: dict[str, Callable[[Call], None] | None] = {}
        self._end: dict[str, Callable[[Call], None] | None] = {}

    def originate(self, number: str, *, trunk_name: str | None = None, caller_id: str = "callcenter",
                  max_duration: float | None = None, on_end: Callable[[Call], None] | None = None,
                  on_answer: Callable[[Call], None] | None = None, emergency: bool | None = None) -> Call:
        if self.refuse_originate:
            raise OutboundError(self.refuse_originate)
        call = self.ua.new_call(f"out-{len(self.originated)}", number)
        self.originated.append(call)
        self._answer[call.call_id], self._end[call.call_id] = on_answer, on_end
        return call

    def call_phone(self, account: str, **kwargs: Any) -> Call:
        self.phones.append(account)
        call = self.ua.new_call(f"phone-{len(self.phones)}", account)
        self._answer[call.call_id], self._end[call.call_id] = kwargs.get("on_answer"), kwargs.get("on_end")
        return call

    def hangup(self, call: Call, reason: EndReason) -> None:
        self.hung_up.append((call.call_id, reason))
        if not call.active or (self.cancel_pending and call.answered_at is None):
            return
        self.end(call, EndReason.CANCELLED if call.answered_at is None else reason,
                 487 if call.answered_at is None else None)

    # -- what the far ends do ------------------------------------------------------------------------------
    def answer(self, call: Call) -> None:
        call.state, call.answered_at = CallState.CONFIRMED, self.ua.clock.seconds()
        callback = self._answer.pop(call.call_id, None)
        if callback is not None:
            callback(call)

    def end(self, call: Call, reason: EndReason, status: int | None) -> None:
        call.state, call.end_reason, call.sip_status = CallState.ENDED, reason, status
        self.ua.ended(call)
        callback = self._end.pop(call.call_id, None)
        if callback is not None:
            callback(call)


class FakeInbound:
    def __init__(self) -> None:
        self.hangups: list[str] = []

    def hangup(self, call: Call, reason: EndReason) -> None:
        self.hangups.append(call.call_id)


class FakeUa:
    def __init__(self, clock: Any, media: MediaService) -> None:
        self.clock = clock
        self.media = media
        self.calls: dict[str, Call] = {}
        self.outbound = FakeOutbound(self)
        self.inbound = FakeInbound()

    def new_call(self, call_id: str, dialled: str, direction: str = "outbound") -> Call:
        call = Call(call_id=call_id, direction=direction, from_uri="sip:callcenter@cc", to_uri=f"sip:{dialled}@x",
                    caller_number="callcenter" if direction == "outbound" else dialled, caller_display=None,
                    dialled=dialled, source=("UDP", "192.0.2.60", 5060), started_at=self.clock.seconds())
        session = self.media.open_leg(call_id, "caller")
        session.configure(Negotiated(codec="PCMU", payload_type=0, telephone_event_pt=TE_PT,
                                     remote=("192.0.2.60", 40000 + 2 * len(self.calls))))
        call.legs.append(Leg(role="caller", media=session))
        self.calls[call_id] = call
        return call

    def ended(self, call: Call) -> None:
        """What the user agent does when a call ends: its media leg closes, the call is forgotten."""
        call.ended_at = self.clock.seconds()
        if call.caller_leg.media is not None:
            self.media.close_leg(call.caller_leg.media)
        self.calls.pop(call.call_id, None)


class Rig:
    def __init__(self, root: Path, db_url: str, *, wrap_up: float = 0.0) -> None:
        self.reactor = FakeReactor()
        self.clock = self.reactor.clock
        self.media = MediaService(self.reactor, address="127.0.0.1", port_min=20000, port_max=20100,
                                  prompts=PromptCache(root / "prompts"), recordings_root=root / "recordings")
        self.ua = FakeUa(self.clock, self.media)
        self.op1 = Operator("op1", "Op 1", None, "operator1", {"cmn": 5}, {"care": 5}, wrap_up, device="browser")
        self.op2 = Operator("op2", "Op 2", "1002", "operator2", {"cmn": 5}, {"care": 5}, 0.0)
        self.acd = Distributor(self.clock, None, queues=[QueueSettings("care")], operators=[self.op1, self.op2],
                               settings=AcdSettings(ring_timeout=RING), events=EventList())
        self.connector = SipConnector(self.ua, self.media, FakeFlows(), ring_timeout=RING, keepalive=0,  # type: ignore[arg-type]
                                      acd=self.acd)
        self.acd.connector = self.connector
        self.gateway = FakeGateway()
        self.phones = Softphones(self.connector, self.gateway, reconnect_grace=GRACE)  # type: ignore[arg-type]
        self.db = create_engine_for(db_url)
        self.tasks = CallbackTasks(self.db)
        self.dialler = CallbackDialler(self.ua, self.media, self.acd, self.tasks, retry=list(RETRY),  # type: ignore[arg-type]
                                       max_attempts=3, ring_timeout=40.0, softphones=self.phones)
        self.acd.set_state("op1", "available")
        self.seen: list[tuple[str, str | None, str | None]] = []  # (state, call id, the attempt's number then)
        self.op1.listener = self._changed

    def _changed(self, operator: Operator, old: OperatorState, new: OperatorState) -> None:
        """What the desktop's push sees: reserved with "callback-<task>" pops the elder of that attempt."""
        number = None
        if (operator.call_id or "").startswith("callback-"):
            attempt = self.dialler.attempts.get(int((operator.call_id or "")[len("callback-"):]))
            number = attempt.number if attempt is not None else None
        self.seen.append((new.value, operator.call_id, number))

    @property
    def outbound(self) -> FakeOutbound:
        return self.ua.outbound

    async def connect(self, name: str = "op1") -> WebRtcLeg:
        await self.phones.connect(name, "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n")
        leg = self.phones.leg(name)
        assert leg is not None
        return leg

    async def new_task(self) -> int:
        return await self.tasks.create(number=ELDER, call_id="c0", elder_id=7, reason="asked in the IVR",
                                       source="ivr", due_at=dt.datetime.now(dt.UTC))

    async def task(self, task_id: int) -> CallbackTask:
        await self.dialler.drain()
        task = await self.tasks.get(task_id)
        assert task is not None
        return task

    async def dialled(self) -> tuple[int, Call, WebRtcLeg]:
        """op1's softphone is connected, a task is dialled: the elder's phone rings."""
        leg = self.phones.leg("op1") or await self.connect()
        task_id = await self.new_task()
        await self.dialler.dial(task_id, "op1")
        return task_id, self.outbound.originated[-1], leg

    def partner(self, session: Any) -> Any:
        entry = self.media._legs.get(id(session))
        handler = entry.handler if entry is not None else None
        if not isinstance(handler, Bridge):
            return None
        return handler.other if handler.caller is session else handler.caller

    def state(self, name: str = "op1") -> tuple[str, str | None]:
        operator = self.acd.operators[name]
        return operator.state.value, operator.pause_reason


def run(tmp_path: Path, db_url: str, test: Callable[[Rig], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        rig = Rig(tmp_path, db_url, **kwargs)
        try:
            await test(rig)
        finally:
            await rig.dialler.drain()
            await rig.db.dispose()

    asyncio.run(main())


def waiting_call(rig: Rig, call_id: str = "queued") -> Call:
    call = rig.ua.new_call(call_id, "01077770000", direction="inbound")
    rig.acd.enqueue(call_id, call.caller_number, QueueRequest("care", "normal", 1, {}, None, None, "f", "n"))
    return call


# -- the path ----------------------------------------------------------------------------------------------------
def test_the_elder_is_called_at_once_and_bridged_with_the_browser_when_they_answer(tmp_path: Path,
                                                                                    db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id, elder, leg = await rig.dialled()
        assert rig.outbound.phones == [] and elder.dialled == ELDER  # no desk phone rang
        assert rig.seen == [("reserved", f"callback-{task_id}", ELDER)]  # the desktop can pop the elder
        task = await rig.task(task_id)
        assert (task.state, task.attempts, task.operator) == ("dialling", 1, "op1")
        assert rig.phones.talking_call("op1") == elder.call_id and rig.phones.talking_kind("op1") == "callback"
        assert rig.phones.operator_for(elder.call_id) == "op1"
        assert rig.partner(leg) is None  # not before the elder answers
        waiting_call(rig)
        assert rig.acd.offers == {} and rig.phones.ringing("op1") is None  # reserved: no queued call rings

        rig.outbound.answer(elder)
        session = elder.caller_leg.media
        assert rig.partner(session) is leg and rig.state() == ("talking", None)
        assert rig.media._legs[id(session)].tap is not None  # recorded, as on the desk phone
        assert rig.dialler.status() == {str(task_id): {"number": ELDER, "operator": "op1", "reached": True}}

        rig.clock.advance(90)
        rig.outbound.end(elder, EndReason.CALLER_BYE, None)  # the elder hangs up
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 1) and (task.outcome or "").startswith("reached on attempt 1")
        assert rig.dialler.attempts == {} and rig.acd.outbound == {} and rig.phones.outbound == {}
        assert rig.phones.talking_call("op1") is None and rig.phones.connected("op1") and rig.partner(leg) is None
        assert rig.media.stats()["legs"] == 2  # the browser's and the waiting caller's
        offer = rig.phones.ringing("op1")  # free again: the waiting call rings on the same softphone
        assert offer is not None and offer.call.call_id == "queued"

    run(tmp_path, db_url, test)


def test_the_desktops_hang_up_ends_the_callback_with_wrap_up(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id, elder, leg = await rig.dialled()
        rig.outbound.answer(elder)
        assert rig.phones.hangup("op1")
        assert rig.outbound.hung_up == [(elder.call_id, EndReason.LOCAL_BYE)] and not elder.active
        assert rig.state() == ("wrap_up", None) and not rig.phones.hangup("op1")
        assert (await rig.task(task_id)).outcome == "reached on attempt 1: complete or close it with the result"
        rig.clock.advance(10)
        assert rig.state() == ("available", None) and rig.phones.connected("op1")

    run(tmp_path, db_url, test, wrap_up=10.0)


def test_hanging_up_while_the_elder_rings_is_a_counted_attempt_that_did_not_reach(tmp_path: Path,
                                                                                  db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id, elder, _ = await rig.dialled()
        assert rig.phones.hangup("op1")
        assert rig.outbound.hung_up == [(elder.call_id, EndReason.LOCAL_BYE)] and elder.sip_status == 487
        task = await rig.task(task_id)
        assert (task.state, task.attempts, task.outcome) == ("open", 1, "attempt 1: no answer")
        assert rig.state() == ("available", None) and rig.dialler.attempts == {}

    run(tmp_path, db_url, test, wrap_up=10.0)


def test_an_elder_who_answers_as_the_operator_hangs_up_is_hung_up(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id, elder, leg = await rig.dialled()
        rig.outbound.cancel_pending = True
        assert rig.phones.hangup("op1")  # CANCEL sent …
        assert rig.phones.talking_call("op1") is None and rig.state() == ("reserved", None)
        rig.outbound.answer(elder)  # … but the elder's 200 OK crossed it
        assert rig.outbound.hung_up == [(elder.call_id, EndReason.LOCAL_BYE)] * 2 and not elder.active
        assert rig.partner(leg) is None
        task = await rig.task(task_id)
        assert (task.state, task.attempts, task.outcome) == ("open", 1, "attempt 1: not reached")
        assert rig.state() == ("available", None)

    run(tmp_path, db_url, test)


def test_the_elder_not_answering_backs_off_like_the_phone_path(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id, elder, _ = await rig.dialled()
        rig.outbound.end(elder, EndReason.FAILED, 486)
        task = await rig.task(task_id)
        assert (task.state, task.attempts, task.outcome) == ("open", 1, "attempt 1: busy")
        assert rig.state() == ("available", None) and rig.phones.outbound == {}
        assert rig.seen[-1] == ("available", None, None)

    run(tmp_path, db_url, test)


# -- refusals ----------------------------------------------------------------------------------------------------
def test_a_softphone_that_is_not_connected_is_refused_and_costs_nothing(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op1")
        assert info.value.status == 409 and "softphone is not connected" in str(info.value)
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 0)
        assert rig.outbound.originated == [] and rig.state() == ("available", None) and rig.seen == []

    run(tmp_path, db_url, test)


def test_no_free_trunk_channel_is_refused_and_costs_no_attempt(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        await rig.connect()
        task_id = await rig.new_task()
        rig.outbound.refuse_originate = "trunk carrier has no free non-emergency channel"
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op1")
        assert info.value.status == 409 and "no line" in str(info.value)
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 0) and "no line" in (task.outcome or "")
        assert rig.state() == ("available", None) and rig.phones.outbound == {} and rig.dialler.attempts == {}

    run(tmp_path, db_url, test)


def test_an_operator_in_a_call_cannot_dial(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        await rig.connect()
        waiting_call(rig)
        offer = rig.phones.ringing("op1")
        assert offer is not None and rig.phones.answer("op1", offer.id)
        task_id = await rig.new_task()
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op1")
        assert info.value.status == 409 and rig.dialler.attempts == {} and rig.outbound.originated == []
        assert (await rig.task(task_id)).attempts == 0 and rig.phones.talking_call("op1") == "queued"

    run(tmp_path, db_url, test)


# -- the browser going away ------------------------------------------------------------------------------------------
def test_a_reload_during_a_callback_takes_the_elder_over(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id, elder, old = await rig.dialled()
        rig.outbound.answer(elder)
        session = elder.caller_leg.media
        rig.gateway.go_away(old)
        assert rig.media._legs[id(session)].player is not None  # the elder hears music meanwhile
        rig.clock.advance(GRACE - 1)
        new = await rig.connect()
        assert rig.partner(session) is new and rig.state() == ("talking", None)
        rig.clock.advance(GRACE * 2)
        assert elder.active and rig.phones.talking_call("op1") == elder.call_id
        replaced = await rig.connect()  # a second tab's offer replaces a live leg: the bridge moves with it
        assert rig.partner(session) is replaced and new.closed

    run(tmp_path, db_url, test)


def test_a_browser_lost_for_good_ends_the_callback_and_pauses_the_operator(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id, elder, leg = await rig.dialled()
        rig.outbound.answer(elder)
        rig.gateway.go_away(leg)
        rig.clock.advance(GRACE)
        assert rig.outbound.hung_up == [(elder.call_id, EndReason.LOCAL_BYE)] and not elder.active
        assert rig.state() == ("paused", "phone_lost") and rig.phones.outbound == {}
        assert (await rig.task(task_id)).outcome == "reached on attempt 1: complete or close it with the result"

    run(tmp_path, db_url, test)


def test_the_browser_away_while_the_elder_rings_then_back_before_the_answer(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        _, elder, old = await rig.dialled()
        rig.gateway.go_away(old)
        session = elder.caller_leg.media
        assert rig.media._legs[id(session)].player is None  # no music into a call not answered yet
        rig.outbound.answer(elder)  # answered while the page reloads: music until it is back
        assert rig.media._legs[id(session)].player is not None and rig.partner(session) is None
        new = await rig.connect()
        assert rig.partner(session) is new

    run(tmp_path, db_url, test)


# -- call control on it -------------------------------------------------------------------------------------------
def test_call_control_holds_mutes_sends_digits_and_hangs_up_a_browser_callback(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        control = CallControl(ua=rig.ua, media=rig.media, acd=rig.acd, connector=rig.connector,
                              softphones=rig.phones, dialler=rig.dialler)
        task_id, elder, leg = await rig.dialled()
        talk = control.talk("op1")
        assert talk is not None and talk.caller is elder and talk.operator_leg is leg and talk.device == "browser"
        with pytest.raises(ControlError):
            control.hold("op1", True)  # nothing to hold while the elder's phone rings
        rig.outbound.answer(elder)
        session = elder.caller_leg.media
        call = control.current("op1")
        assert call is not None and call["call_id"] == elder.call_id and call["state"] == "talking"
        control.mute("op1", True)
        assert rig.media.is_muted(leg)  # type: ignore[arg-type]
        control.hold("op1", True)
        bridge = rig.media._legs[id(session)].handler
        assert isinstance(bridge, Bridge) and id(leg) in bridge.deaf and id(leg) in bridge.hold_sources
        control.hold("op1", False)
        control.dtmf("op1", "12")
        session.transport.take()
        rig.media.clock.run_once(rig.reactor.seconds())
        assert [p.payload_type for p in session.transport.take()] == [TE_PT]  # RFC 4733 to the elder, not audio
        control.hangup("op1")
        assert not elder.active and rig.phones.talking_call("op1") is None
        assert not rig.media.is_muted(leg)  # type: ignore[arg-type]  # the softphone outlives the call unmuted
        assert (await rig.task(task_id)).outcome == "reached on attempt 1: complete or close it with the result"

    run(tmp_path, db_url, test)


def test_a_desk_phone_operator_still_gets_the_desk_phone_and_the_pop(tmp_path: Path, db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.acd.set_state("op2", "available")
        seen: list[str | None] = []
        rig.op2.listener = lambda o, old, new: seen.append(
            getattr(rig.dialler.attempts.get(int(o.call_id[9:])), "number", None)
            if (o.call_id or "").startswith("callback-") else None)
        task_id = await rig.new_task()
        await rig.dialler.dial(task_id, "op2")
        assert rig.outbound.phones == ["1002"] and rig.outbound.originated == [] and seen == [ELDER]
        assert rig.phones.talking_call("op2") is None

    run(tmp_path, db_url, test)
