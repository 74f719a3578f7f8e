"""Callbacks dialled from the desktop (callcenter.acd.dialler) with a fake telephone side.

The fake outbound handler records what the dialler asks (ring a desk phone, call a number, hang up) and
lets each test decide when a phone answers or a call ends; the Distributor and the callback tasks (in a
temporary SQLite database) are the real ones."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.dialler import CallbackDialler, DialError
from callcenter.acd.events import EventList
from callcenter.acd.model import QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.calls.model import Call, CallState, EndReason, Leg
from callcenter.calls.outbound import OutboundError
from callcenter.ivr.runner import QueueRequest
from callcenter.store.db import create_engine_for, run_migrations
from callcenter.store.models import CallbackTask

OS = OperatorState
ELDER = "01088886666"
RETRY = [300.0, 900.0]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    return url


@dataclass
class Media:
    name: str
    actions: list[str] = field(default_factory=list)


class FakeMediaService:
    def __init__(self) -> None:
        self.bridged: list[tuple[str, str]] = []
        self.recording: list[str] = []

    def bridge(self, a: Media, b: Media) -> None:
        self.bridged.append((a.name, b.name))

    def start_recording(self, a: Media) -> None:
        self.recording.append(a.name)


class FakeOutbound:
    """call_phone / originate / hangup of callcenter.calls.outbound, without SIP."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.record_calls = True
        self.phones: list[dict[str, Any]] = []
        self.originated: list[dict[str, Any]] = []
        self.hung_up: list[tuple[str, EndReason]] = []
        self.refuse_phone: str | None = None
        self.refuse_originate: str | None = None
        self._answer: dict[str, Callable[[Call], None] | None] = {}
        self._end: dict[str, Callable[[Call], None] | None] = {}

    def _call(self, call_id: str, dialled: str) -> Call:
        call = Call(call_id=call_id, direction="outbound", from_uri="sip:callcenter@cc", to_uri=f"sip:{dialled}@x",
                    caller_number="callcenter", caller_display=None, dialled=dialled,
                    source=("UDP", "127.0.0.2", 5060), started_at=self.clock.seconds())
        call.legs.append(Leg(role="caller", media=Media(call_id)))
        return call

    def call_phone(self, account: str, *, caller_number: str, caller_display: str | None = None,
                   ring_timeout: float = 30.0, on_answer: Callable[[Call], None] | None = None,
                   on_end: Callable[[Call], None] | None = None) -> Call:
        if self.refuse_phone:
            raise OutboundError(self.refuse_phone)
        call = self._call(f"phone-{len(self.phones)}", account)
        self.phones.append({"account": account, "caller_number": caller_number, "display": caller_display,
                            "ring_timeout": ring_timeout, "call": call})
        self._answer[call.call_id], self._end[call.call_id] = on_answer, on_end
        return call

    def originate(self, number: str, *, trunk_name: str | None = None, caller_id: str = "callcenter",
                  max_duration: float | None = None, on_end: Callable[[Call], None] | None = None,
                  on_answer: Callable[[Call], None] | None = None, emergency: bool | None = None) -> Call:
        if self.refuse_originate:
            raise OutboundError(self.refuse_originate)
        call = self._call(f"elder-{len(self.originated)}", number)
        call.trunk = "carrier"
        self.originated.append({"number": number, "caller_id": caller_id, "emergency": emergency, "call": call})
        self._answer[call.call_id], self._end[call.call_id] = on_answer, on_end
        return call

    def hangup(self, call: Call, reason: EndReason) -> None:
        """The far end goes along at once: the call ends with the reason (487 when it had not answered)."""
        self.hung_up.append((call.call_id, reason))
        if call.active:
            self.end(call, EndReason.CANCELLED if call.answered_at is None else reason,
                     487 if call.answered_at is None else None)

    # -- what the far ends do -------------------------------------------------------------------------
    def answer(self, call: Call) -> None:
        call.state, call.answered_at = CallState.CONFIRMED, self.clock.seconds()
        callback = self._answer.pop(call.call_id, None)
        if callback is not None:
            callback(call)

    def end(self, call: Call, reason: EndReason, status: int | None) -> None:
        call.state, call.end_reason, call.sip_status = CallState.ENDED, reason, status
        call.ended_at = self.clock.seconds()
        callback = self._end.pop(call.call_id, None)
        if callback is not None:
            callback(call)


class FakeUa:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.outbound = FakeOutbound(clock)


class Rig:
    def __init__(self, db_url: str, *, max_attempts: int = 3, wrap_up: float = 0.0) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000.0)
        self.db = create_engine_for(db_url)
        self.tasks = CallbackTasks(self.db)
        self.ua = FakeUa(self.clock)
        self.media = FakeMediaService()
        self.op1 = Operator("op1", "Op 1", "1001", "operator1", {"cmn": 5}, {"hotline": 5}, wrap_up)
        self.op2 = Operator("op2", "Op 2", None, None, {"cmn": 5}, {"hotline": 5}, 0.0)
        self.acd = Distributor(self.clock, None, queues=[QueueSettings("hotline")], operators=[self.op1, self.op2],
                               events=EventList())
        self.acd.set_state("op1", "available")
        self.dialler = CallbackDialler(self.ua, self.media, self.acd, self.tasks, retry=list(RETRY),  # type: ignore[arg-type]
                                       max_attempts=max_attempts, ring_timeout=40.0)

    @property
    def outbound(self) -> FakeOutbound:
        return self.ua.outbound

    async def new_task(self, number: str = ELDER) -> int:
        return await self.tasks.create(number=number, call_id="c1", elder_id=7, reason="asked in the IVR",
                                       source="ivr", due_at=dt.datetime.now(dt.UTC))

    async def task(self, task_id: int) -> CallbackTask:
        await self.settle()
        (task,) = [t for t in await self.tasks.tasks(states=("open", "dialling", "completed", "closed"))
                   if t.id == task_id]
        return task

    async def settle(self) -> None:
        """Let the dialler's database updates finish."""
        await self.dialler.drain()

    async def busy_attempt(self, task_id: int, status: int = 486) -> None:
        await self.dialler.dial(task_id, "op1")
        phone = self.outbound.phones[-1]["call"]
        self.outbound.answer(phone)
        elder = self.outbound.originated[-1]["call"]
        self.outbound.end(elder, EndReason.FAILED, status)
        await self.settle()


def run(db_url: str, test: Callable[[Rig], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        rig = Rig(db_url, **kwargs)
        try:
            await test(rig)
        finally:
            await rig.settle()
            await rig.db.dispose()

    asyncio.run(main())


def close_to(value: dt.datetime, expected: dt.datetime, tolerance: float = 5.0) -> bool:
    return abs((value - expected).total_seconds()) <= tolerance


def waiting_call(rig: Rig, call_id: str = "queued") -> None:
    rig.acd.enqueue(call_id, "01077770000", QueueRequest("hotline", "normal", 1, {}, None, None, "f", "n"))


def test_dial_rings_the_operator_first_and_reserves_them(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        attempt = await rig.dialler.dial(task_id, "op1")
        task = await rig.task(task_id)
        assert (task.state, task.attempts, task.operator) == ("dialling", 1, "op1")
        assert task.last_attempt_at is not None
        (ring,) = rig.outbound.phones
        assert ring["account"] == "1001" and ring["caller_number"] == ELDER and ring["ring_timeout"] == 40.0
        assert ELDER in ring["display"]
        assert attempt.phone is ring["call"] and attempt.number == ELDER and rig.outbound.originated == []
        assert rig.op1.state is OS.RESERVED and rig.acd.outbound == {"op1": f"callback-{task_id}"}
        waiting_call(rig)
        assert rig.acd.offers == {}  # a reserved operator is offered no queued call
        assert rig.dialler.status() == {str(task_id): {"number": ELDER, "operator": "op1", "reached": False}}

    run(db_url, test)


def test_operator_answers_elder_answers_bridged_then_reached(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        await rig.dialler.dial(task_id, "op1")
        phone = rig.outbound.phones[0]["call"]
        rig.outbound.answer(phone)
        (dialled,) = rig.outbound.originated
        assert dialled["number"] == ELDER and dialled["emergency"] is False
        elder = dialled["call"]
        assert rig.media.bridged == [] and rig.op1.state is OS.RESERVED
        rig.outbound.answer(elder)
        assert rig.media.bridged == [(elder.call_id, phone.call_id)] and rig.media.recording == [elder.call_id]
        assert rig.op1.state is OS.TALKING
        waiting_call(rig)
        assert rig.acd.offers == {}
        rig.clock.advance(120)
        rig.outbound.end(elder, EndReason.CALLER_BYE, None)  # the elder hangs up
        assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE)]
        assert rig.dialler.attempts == {}
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 1)
        assert task.outcome == "reached on attempt 1: complete or close it with the result"
        # the operator is free again: the waiting call rings them
        assert rig.op1.state is OS.RESERVED and [o.call.call_id for o in rig.acd.offers.values()] == ["queued"]
        done = await rig.tasks.finish(task_id, state="completed", outcome="elder is fine", by="operator1")
        assert done is not None and done.state == "completed" and done.outcome == "elder is fine (operator1)"
        assert (await rig.task(task_id)).closed_at is not None

    run(db_url, test, wrap_up=0.0)


def test_wrap_up_after_a_reached_callback(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        await rig.dialler.dial(task_id, "op1")
        rig.outbound.answer(rig.outbound.phones[0]["call"])
        elder = rig.outbound.originated[0]["call"]
        rig.outbound.answer(elder)
        rig.outbound.end(elder, EndReason.CALLER_BYE, None)
        assert rig.op1.state is OS.WRAP_UP
        rig.clock.advance(10)
        assert rig.op1.state is OS.AVAILABLE
        assert (await rig.task(task_id)).outcome.startswith("reached on attempt 1")

    run(db_url, test, wrap_up=10.0)


def test_failed_attempts_back_off_and_then_a_supervisor_decides(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        await rig.busy_attempt(task_id, 486)
        task = await rig.task(task_id)
        now = dt.datetime.now(dt.UTC)
        assert (task.state, task.attempts, task.outcome) == ("open", 1, "attempt 1: busy")
        assert close_to(task.due_at, now + dt.timedelta(seconds=RETRY[0]))
        phone = rig.outbound.phones[0]["call"]
        assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE)] and not phone.active
        assert rig.op1.state is OS.AVAILABLE and rig.acd.outbound == {} and rig.dialler.attempts == {}

        await rig.busy_attempt(task_id, 480)
        task = await rig.task(task_id)
        assert (task.state, task.attempts, task.outcome) == ("open", 2, "attempt 2: no answer")
        assert close_to(task.due_at, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=RETRY[1]))

        await rig.busy_attempt(task_id, 500)
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 3)
        assert task.outcome == "attempt 3: failed (500); 3 attempts: a supervisor decides"
        assert close_to(task.due_at, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=RETRY[-1]))

    run(db_url, test, max_attempts=3)


def test_an_operator_who_does_not_answer_costs_no_attempt(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        await rig.dialler.dial(task_id, "op1")
        phone = rig.outbound.phones[0]["call"]
        rig.outbound.end(phone, EndReason.TIMEOUT, 408)
        assert rig.outbound.originated == [] and rig.op1.state is OS.AVAILABLE
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 0)
        assert task.outcome == "not dialled (operator did not answer)"
        assert close_to(task.due_at, dt.datetime.now(dt.UTC))
        await rig.dialler.dial(task_id, "op1")  # at once again
        assert (await rig.task(task_id)).attempts == 1

    run(db_url, test)


def test_no_free_trunk_channel_costs_no_attempt(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        await rig.dialler.dial(task_id, "op1")
        rig.outbound.refuse_originate = "trunk carrier has no free non-emergency channel"
        phone = rig.outbound.phones[0]["call"]
        rig.outbound.answer(phone)
        assert rig.outbound.hung_up == [(phone.call_id, EndReason.LOCAL_BYE)]
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 0)
        assert "no line" in (task.outcome or "") and rig.op1.state is OS.AVAILABLE

    run(db_url, test)


def test_the_operator_hangs_up_while_the_elder_rings(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        await rig.dialler.dial(task_id, "op1")
        phone = rig.outbound.phones[0]["call"]
        rig.outbound.answer(phone)
        elder = rig.outbound.originated[0]["call"]
        rig.outbound.end(phone, EndReason.CALLER_BYE, None)
        assert rig.outbound.hung_up == [(elder.call_id, EndReason.LOCAL_BYE)] and not elder.active
        assert rig.op1.state is OS.AVAILABLE and rig.dialler.attempts == {}
        task = await rig.task(task_id)
        assert task.state == "open" and task.attempts == 1

    run(db_url, test)


def test_what_cannot_be_dialled(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "nobody")
        assert info.value.status == 404
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op2")  # no desk phone
        assert info.value.status == 409
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id + 100, "op1")
        assert info.value.status == 404
        await rig.dialler.dial(task_id, "op1")
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op1")
        assert info.value.status == 409 and "being dialled" in str(info.value)
        rig.outbound.end(rig.outbound.phones[0]["call"], EndReason.TIMEOUT, 408)
        await rig.settle()
        assert await rig.tasks.finish(task_id, state="closed", outcome="family called", by="sup") is not None
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op1")
        assert info.value.status == 409
        assert (await rig.task(task_id)).state == "closed" and len(rig.outbound.phones) == 1

    run(db_url, test)


def test_an_operator_in_a_call_cannot_dial_and_the_task_stays_uncounted(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        waiting_call(rig)
        (offer,) = rig.acd.offers.values()
        rig.acd.answered(offer)
        assert rig.op1.state is OS.TALKING
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op1")
        assert info.value.status == 409
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 0)
        assert rig.outbound.phones == [] and rig.op1.state is OS.TALKING and rig.dialler.attempts == {}
        assert rig.acd.outbound == {}

    run(db_url, test)


def test_an_unreachable_desk_phone_is_refused_and_costs_no_attempt(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        rig.outbound.refuse_phone = "1001 is not registered"
        with pytest.raises(DialError) as info:
            await rig.dialler.dial(task_id, "op1")
        assert info.value.status == 409 and "not registered" in str(info.value)
        assert rig.op1.state is OS.AVAILABLE and rig.dialler.attempts == {}
        task = await rig.task(task_id)
        assert (task.state, task.attempts) == ("open", 0)

    run(db_url, test)


def test_a_paused_operator_stays_paused_after_dialling(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        task_id = await rig.new_task()
        rig.acd.set_state("op1", "paused", "callbacks")
        await rig.dialler.dial(task_id, "op1")
        assert rig.op1.state is OS.RESERVED
        rig.outbound.end(rig.outbound.phones[0]["call"], EndReason.TIMEOUT, 408)
        assert rig.op1.state is OS.PAUSED and rig.op1.pause_reason == "callbacks"

    run(db_url, test)
