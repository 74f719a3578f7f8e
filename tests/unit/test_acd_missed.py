"""Abandoned and missed calls become callback tasks (callcenter.acd.missed) in a temporary SQLite database.

A real Distributor on a Twisted Clock reports abandons; the asyncio loop runs the database writes
(``drain()`` waits for them)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.events import EventList, FanOut, QueueEvent
from callcenter.acd.missed import MissedCalls
from callcenter.acd.model import QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.calls.model import Call, CallState, EndReason
from callcenter.ivr.runner import QueueRequest
from callcenter.store.db import create_engine_for, run_migrations
from callcenter.store.models import CallbackTask

START = 1_700_000_000.0  # the Clock reads like Unix time, as the reactor does
THRESHOLD = 3.0


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    return url


def request(queue: str = "hotline", priority: str = "normal") -> QueueRequest:
    return QueueRequest(queue, priority, 1, {}, None, None, "terminal", "queue")


class Rig:
    """A Distributor with one logged-out operator, MissedCalls wired as the engine wires them."""

    def __init__(self, db_url: str) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.db = create_engine_for(db_url)
        self.tasks = CallbackTasks(self.db)
        self.log = EventList()
        self.calls: dict[str, Call] = {}
        events = FanOut(self.log)
        self.missed = MissedCalls(self.tasks, calls=self.calls.get, threshold=THRESHOLD, events=events,
                                  now=self.clock.seconds)
        events.sinks.append(self.missed)
        self.operator = Operator("op1", "Op 1", "1001", "operator1", {"cmn": 5}, {"hotline": 5, "emergency": 5},
                                 0.0)
        self.acd = Distributor(self.clock, None, queues=[QueueSettings("hotline"), QueueSettings("emergency")],
                               operators=[self.operator], events=events)
        self.acd.on_abandon = self.missed.queue_abandoned
        self.acd.on_preempt_callback = self.missed.preempted_to_callback
        self.missed.acd = self.acd

    def call(self, call_id: str, number: str = "01088886666", *, emergency: bool = False,
             route: str | None = "Hotline", dialled: str = "12349") -> Call:
        call = Call(call_id=call_id, direction="inbound", from_uri=f"sip:{number}@127.0.0.2",
                    to_uri=f"sip:{dialled}@cc", caller_number=number, caller_display=None, dialled=dialled,
                    source=("UDP", "127.0.0.2", 5060), started_at=self.clock.seconds(), trunk="carrier",
                    route_name=route, emergency=emergency)
        self.calls[call_id] = call
        return call

    def queue_and_hang_up(self, call: Call, wait: float, *, queue: str = "hotline",
                          priority: str = "normal") -> None:
        self.acd.enqueue(call.call_id, call.caller_number, request(queue, priority))
        self.clock.advance(wait)
        self.acd.leave(call.call_id, "caller_hangup")

    async def all_tasks(self) -> list[CallbackTask]:
        await self.missed.drain()
        return await self.tasks.tasks(states=("open", "dialling", "completed", "closed"))

    def callback_events(self) -> list[QueueEvent]:
        return [e for e in self.log.events if e.kind == "callback"]


def run(db_url: str, test: Callable[[Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        rig = Rig(db_url)
        try:
            await test(rig)
        finally:
            await rig.missed.drain()
            await rig.db.dispose()

    asyncio.run(main())


def ended(call: Call, reason: EndReason, status: int, after: float) -> Call:
    call.end_reason, call.sip_status = reason, status
    call.ended_at = call.started_at + after
    call.state = CallState.ENDED
    return call


def test_queue_abandon_creates_a_task_and_a_callback_event(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        call = rig.call("c1")
        call.elder_id = 42
        rig.queue_and_hang_up(call, 12.0)
        (task,) = await rig.all_tasks()
        assert (task.number, task.source, task.queue, task.state) == ("01088886666", "abandoned", "hotline", "open")
        assert task.call_id == "c1" and task.elder_id == 42 and task.attempts == 0
        assert task.reason == "hung up after waiting 12 s in queue hotline"
        assert task.due_at <= dt.datetime.now(dt.UTC)
        (event,) = rig.callback_events()
        assert (event.call_id, event.queue, event.priority) == ("c1", "hotline", "normal")
        assert event.detail == f"{task.id} abandoned" and event.at == rig.clock.seconds()
        assert [e.kind for e in rig.log.events] == ["enter", "abandon", "callback"]
        assert rig.missed.counters["abandoned"] == 1

    run(db_url, test)


def test_a_hang_up_under_the_threshold_is_a_misdial_except_for_emergencies(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.queue_and_hang_up(rig.call("quick"), 2.0)
        assert await rig.all_tasks() == []
        assert rig.callback_events() == [] and rig.missed.counters["ignored"] == 1
        rig.queue_and_hang_up(rig.call("sos", "01055551111", emergency=True), 0.5, queue="emergency",
                              priority="emergency")
        (task,) = await rig.all_tasks()
        assert (task.number, task.source, task.queue) == ("01055551111", "abandoned", "emergency")
        (event,) = rig.callback_events()
        assert event.priority == "emergency" and event.detail == f"{task.id} abandoned"

    run(db_url, test)


def test_the_threshold_counts_from_the_call_start_not_the_queue_entry(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        call = rig.call("long-ivr")
        rig.clock.advance(20.0)  # 20 s in the IVR, then 1 s in the queue
        rig.queue_and_hang_up(call, 1.0)
        (task,) = await rig.all_tasks()
        assert task.reason == "hung up after waiting 1 s in queue hotline"

    run(db_url, test)


def test_repeated_abandons_from_one_number_merge_into_one_open_task(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.queue_and_hang_up(rig.call("a1"), 5.0)
        await rig.missed.drain()
        rig.queue_and_hang_up(rig.call("a2"), 7.0)
        await rig.missed.drain()
        rig.missed.ivr_abandoned(rig.call("a3"), "menu")  # started now: under the threshold, ignored
        rig.clock.advance(THRESHOLD)
        rig.missed.ivr_abandoned(rig.calls["a3"], "menu")
        (task,) = await rig.all_tasks()
        assert task.call_id == "a1" and task.state == "open"
        assert task.reason == ("hung up after waiting 5 s in queue hotline; hung up after waiting 7 s in queue "
                               "hotline; hung up in the IVR at menu")
        assert [e.detail for e in rig.callback_events()] == [f"{task.id} abandoned"] * 2
        rig.queue_and_hang_up(rig.call("b1", "01077770000"), 5.0)
        assert len(await rig.all_tasks()) == 2  # another number: its own task

    run(db_url, test)


def test_ivr_abandon(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        call = rig.call("ivr1")
        rig.missed.ivr_abandoned(call, "welcome")
        assert await rig.all_tasks() == [] and rig.missed.counters["ignored"] == 1
        rig.clock.advance(10.0)
        rig.missed.ivr_abandoned(call, None)
        rig.missed.ivr_abandoned(rig.call("ivr-sos", "01055551111", emergency=True), "menu")
        tasks = sorted(await rig.all_tasks(), key=lambda t: t.number)
        assert [(t.number, t.reason, t.source, t.queue) for t in tasks] == [
            ("01055551111", "hung up in the IVR at menu", "abandoned", None),
            ("01088886666", "hung up in the IVR", "abandoned", None)]
        assert rig.callback_events() == []  # no queue: nothing for the queue event log
        assert rig.missed.counters["ivr_abandoned"] == 2

    run(db_url, test)


def test_missed_calls_from_the_call_observer(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.missed.call_ended(ended(rig.call("busy", "01000000001"), EndReason.REJECTED, 486, 0.0))
        rig.missed.call_ended(ended(rig.call("unavail", "01000000002"), EndReason.REJECTED, 503, 0.0))
        rig.missed.call_ended(ended(rig.call("gave-up", "01000000003"), EndReason.CANCELLED, 487, 10.0))
        tasks = {t.number: t for t in await rig.all_tasks()}
        assert {n: (t.source, t.reason, t.call_id) for n, t in tasks.items()} == {
            "01000000001": ("missed", "missed call (all lines busy, 12349)", "busy"),
            "01000000002": ("missed", "missed call (service unavailable, 12349)", "unavail"),
            "01000000003": ("missed", "missed call (gave up while ringing, 12349)", "gave-up"),
        }
        assert all(t.queue is None for t in tasks.values()) and rig.callback_events() == []
        assert rig.missed.counters["missed"] == 3

    run(db_url, test)


def test_calls_that_are_not_missed(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.missed.call_ended(ended(rig.call("nr", route=None), EndReason.REJECTED, 404, 0.0))  # no route
        rig.missed.call_ended(ended(rig.call("unrouted", route=None), EndReason.REJECTED, 503, 0.0))
        rig.missed.call_ended(ended(rig.call("codec"), EndReason.REJECTED, 488, 0.0))
        rig.missed.call_ended(ended(rig.call("short"), EndReason.CANCELLED, 487, THRESHOLD - 0.5))
        answered = rig.call("talked")
        answered.answered_at = answered.started_at + 1
        rig.missed.call_ended(ended(answered, EndReason.CALLER_BYE, 200, 60.0))
        out = rig.call("out")
        out.direction = "outbound"
        rig.missed.call_ended(ended(out, EndReason.FAILED, 486, 0.0))
        rig.missed.call_ended(ended(rig.call("anon", "anonymous"), EndReason.REJECTED, 486, 0.0))
        rig.missed.call_ended(ended(rig.call("blank", ""), EndReason.REJECTED, 503, 0.0))
        assert await rig.all_tasks() == []
        assert rig.missed.counters["missed"] == 2  # anonymous and blank count, but have nobody to call back
        assert rig.missed.counters["ignored"] == 1
        # an emergency that gives up while ringing is always called back
        rig.missed.call_ended(ended(rig.call("sos", "01055551111", emergency=True), EndReason.CANCELLED, 487, 0.5))
        (task,) = await rig.all_tasks()
        assert task.number == "01055551111" and task.source == "missed"

    run(db_url, test)


def test_anonymous_queue_abandon_gets_no_task(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.queue_and_hang_up(rig.call("anon", "Anonymous"), 30.0)
        rig.queue_and_hang_up(rig.call("unknown", "unknown"), 30.0)
        assert await rig.all_tasks() == [] and rig.callback_events() == []

    run(db_url, test)


def test_an_answered_call_completes_the_callers_abandoned_and_missed_tasks(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        number, other = "01088886666", "01077770000"
        rig.queue_and_hang_up(rig.call("first", number), 10.0)
        await rig.missed.drain()
        rig.queue_and_hang_up(rig.call("someone-else", other), 10.0)
        asked = await rig.tasks.create(number=number, call_id="asked", elder_id=None, reason="asked in the IVR",
                                       source="ivr", due_at=dt.datetime.now(dt.UTC))
        missed_calls = await rig.all_tasks()
        assert len(missed_calls) == 3
        # the caller calls again and an operator answers
        rig.call("again", number)
        rig.acd.set_state("op1", "available")
        assert rig.acd.offers == {}
        rig.acd.enqueue("again", number, request())
        (offer,) = rig.acd.offers.values()
        assert offer.operator is rig.operator and rig.operator.state is OperatorState.RESERVED
        rig.acd.answered(offer)
        tasks = {t.id: t for t in await rig.all_tasks()}
        closed = [t for t in tasks.values() if t.number == number and t.source == "abandoned"]
        assert len(closed) == 1 and closed[0].state == "completed" and closed[0].closed_at is not None
        assert closed[0].outcome == "the caller called again and was answered (call again)"
        assert tasks[asked].state == "open"  # a callback the elder asked for still needs its call
        assert [t.state for t in tasks.values() if t.number == other] == ["open"]
        assert rig.missed.counters["reached"] == 1

    run(db_url, test)


def test_a_connect_without_a_distributor_or_for_an_unknown_call_does_nothing(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.queue_and_hang_up(rig.call("first"), 10.0)
        await rig.missed.drain()
        rig.missed.record(QueueEvent(rig.clock.seconds(), "connect", "not-queued", "hotline", "normal", "op1"))
        rig.missed.acd = None
        rig.acd.set_state("op1", "available")
        rig.acd.enqueue("again", "01088886666", request())
        rig.acd.answered(next(iter(rig.acd.offers.values())))
        (task,) = await rig.all_tasks()
        assert task.state == "open"

    run(db_url, test)


def test_a_preempted_caller_may_get_a_callback(db_url: str) -> None:
    async def test(rig: Rig) -> None:
        rig.call("victim")
        rig.acd.enqueue("victim", "01088886666", request())
        rig.missed.preempted_to_callback(rig.acd.calls["victim"])
        (task,) = await rig.all_tasks()
        assert (task.source, task.reason, task.queue) == ("missed", "pre-empted by an emergency", "hotline")
        (event,) = rig.callback_events()
        assert event.detail == f"{task.id} missed"

    run(db_url, test)
