"""The desktop's push channel (agents.push): GET /api/desk/events and the DeskHub behind it.

A fake engine with the real in-process bus, the real Distributor (on a Twisted Clock) publishing through the real
AcdPublisher, a pop builder that counts its builds, and a directory that records its access log. Streams are read
over HTTP (aiohttp's TestServer on 127.0.0.1) or, for the filtering rules, taken from the hub directly."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from twisted.internet.task import Clock

from agents.auth import User
from agents.push import HUB, DeskHub
from agents.web import create_app
from callcenter.acd.model import QueueSettings
from callcenter.acd.operators import Operator
from callcenter.acd.publish import AcdPublisher
from callcenter.acd.router import Distributor
from callcenter.bus.events import CallEnded, DeskCallChanged, OperatorStateChanged
from callcenter.bus.inprocess import InProcessBus
from callcenter.config import Config
from callcenter.ivr.runner import QueueRequest
from tests.unit.test_web import FakeEngine, Now, basic, make_call, make_config

ELDER_NUMBER = "01066001234"


def push_config() -> Config:
    data = make_config().model_dump(mode="json")
    data["queues"] = [{"name": "hotline"}, {"name": "emergency", "strategy": "ring_all"}]
    data["operators"] = [
        {"name": "op1", "user": "op", "queues": {"hotline": 5, "emergency": 10}},
        {"name": "op2", "user": "sup", "queues": {"hotline": 5, "emergency": 10}},  # a supervisor who also takes calls
        {"name": "op3", "queues": {"hotline": 5}},
    ]
    return Config.model_validate(data)


class FakeDirectory:
    def __init__(self) -> None:
        self.access: list[dict[str, Any]] = []

    async def log_access(self, **row: Any) -> None:
        self.access.append(row)


class Builder:
    """Counts pop builds; ``gate`` holds them until set."""

    def __init__(self) -> None:
        self.built: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, facts: dict[str, Any]) -> dict[str, Any]:
        self.built.append(facts)
        if self.gate is not None:
            await self.gate.wait()
        return {"call": facts, "unknown": False, "elder": {"id": 7, "name": "王秀英"}, "records": [],
                "work_orders": [], "callbacks": []}


class FakePlaced:
    def __init__(self, number: str, elder_id: int | None = None) -> None:
        self.number = number
        self.elder_id = elder_id


class FakeDialler:
    """callcenter.acd.dialler.Dialler's ``find``: the call being placed by its key."""

    def __init__(self) -> None:
        self.placed: dict[str, FakePlaced] = {}

    def find(self, key: str) -> FakePlaced | None:
        return self.placed.get(key)


class PushEngine(FakeEngine):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.clock = Clock()
        self.clock.advance(1_700_000_000.0)
        self.bus = InProcessBus()
        publisher = AcdPublisher(self.bus, self.ua.calls.get)
        self.acd = Distributor(
            self.clock, None, queues=[QueueSettings(q.name, strategy=q.strategy) for q in config.queues],
            operators=[Operator(o.name, o.name, None, o.user, {}, dict(o.queues), 0.0) for o in config.operators],
            events=publisher)
        for operator in self.acd.operators.values():
            operator.listener = publisher.operator_changed
        self.directory = FakeDirectory()
        self.dialler = FakeDialler()
        self.db = None

    def call_in(self, call_id: str, queue: str = "emergency", priority: str = "emergency") -> None:
        call = make_call(call_id, caller=ELDER_NUMBER, emergency=priority == "emergency")
        call.button, call.elder_id = "emergency", 7
        self.ua.calls[call_id] = call
        self.acd.enqueue(call_id, ELDER_NUMBER, QueueRequest(queue, priority, 9, {}, None, None, "terminal", "q"))


Test = Callable[[TestClient, PushEngine, DeskHub, Builder], Awaitable[None]]


def run(test: Test, **hub_settings: Any) -> None:
    async def main() -> None:
        config = push_config()
        engine = PushEngine(config)
        app = create_app(engine, config, now=Now())
        hub = app[HUB]
        builder = Builder()
        hub.pops.build = builder
        for name, value in hub_settings.items():
            setattr(hub, name, value)
        async with TestClient(TestServer(app)) as client:
            await test(client, engine, hub, builder)

    asyncio.run(main())


async def events(client: TestClient, user: str) -> ClientResponse:
    response = await client.get("/api/desk/events", headers=basic(user))
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    return response


async def next_event(response: ClientResponse, timeout: float = 2.0) -> tuple[str, Any]:
    """The next event (kind, data), or ("comment", text) for a keep-alive; EOFError when the stream ends."""
    kind: str | None = None
    data: Any = None
    while True:
        line = (await asyncio.wait_for(response.content.readline(), timeout)).decode()
        if not line:
            raise EOFError
        line = line.rstrip("\n")
        if line.startswith(":"):
            return "comment", line[1:].strip()
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and kind is not None:
            return kind, data


async def expect(response: ClientResponse, kind: str, timeout: float = 2.0) -> Any:
    """Skip other kinds until ``kind`` arrives."""
    while True:
        got, data = await next_event(response, timeout)
        if got == kind:
            return data


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- the stream -----------------------------------------------------------------------------------------------


def test_hello_comes_first_and_names_the_user_and_their_operator():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        assert await next_event(response) == ("hello", {"user": "op", "display_name": "<b>op</b>", "role": "operator",
                                                        "operator": "op1", "lang": "zh"})
        auditor = await client.get("/api/desk/events?lang=en", headers=basic("aud"))
        assert (await next_event(auditor))[1]["operator"] is None and len(hub.streams) == 2

    run(test)


def test_anonymous_users_get_no_stream():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await client.get("/api/desk/events")
        assert response.status == 401 and "error" in await response.json()
        assert not hub.streams

    run(test)


def test_a_keep_alive_comment_after_silence():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        await next_event(response)
        assert await next_event(response, timeout=1.0) == ("comment", "keep-alive")
        assert await next_event(response, timeout=1.0) == ("comment", "keep-alive")

    run(test, keepalive=0.05)


def test_the_offered_operator_gets_the_offer_with_its_pop_before_answering():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        await next_event(response)
        engine.acd.set_state("op1", "available")
        assert (await expect(response, "operator"))["state"] == "available"
        engine.call_in("c1")
        assert (await expect(response, "operator"))["state"] == "reserved"
        offer = await expect(response, "offer")
        (ringing,) = engine.acd.offers.values()
        assert offer["offer_id"] == ringing.id and offer["call_id"] == "c1" and offer["operator"] == "op1"
        call = offer["pop"]["call"]
        assert call["caller_number"] == ELDER_NUMBER and call["did"] == "12349" and call["button"] == "emergency"
        assert call["queue"] == "emergency" and call["priority"] == "emergency" and call["emergency"] is True
        offered_at = dt.datetime.fromisoformat(call["offered_at"])  # when the ACD offered it (the bus event)
        assert call["direction"] == "inbound" and abs((dt.datetime.now(dt.UTC) - offered_at).total_seconds()) < 5
        assert offer["pop"]["elder"]["name"] == "王秀英"
        await settle()
        assert engine.directory.access == [{"username": "op", "role": "operator", "action": "pop", "elder_id": 7,
                                            "detail": "call c1"}]

    run(test)


def test_a_ring_all_offer_builds_the_pop_once_and_current_reuses_it():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        op, sup = await events(client, "op"), await events(client, "sup")
        engine.acd.set_state("op1", "available")
        engine.acd.set_state("op2", "available")
        engine.call_in("c1")
        first, second = await expect(op, "offer"), await expect(sup, "offer")
        assert (first["operator"], second["operator"]) == ("op1", "op2") and first["pop"] == second["pop"]
        assert len(builder.built) == 1
        current = await (await client.get("/api/desk/current", headers=basic("op"))).json()
        assert current["operator"]["state"] == "reserved" and current["offer"]["offer_id"] == first["offer_id"]
        assert current["offer"]["pop"] == first["pop"] and current["call"] is None
        assert len(builder.built) == 1 and hub.pops.counters["reused"] >= 2
        await settle()
        assert sorted(a["username"] for a in engine.directory.access) == ["op", "sup"]  # once per user, not per ask

    run(test)


def test_a_pop_is_dropped_when_the_call_ends():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        engine.acd.set_state("op1", "available")
        engine.call_in("c1")
        await expect(response, "offer")
        engine.bus.publish(CallEnded(call_id="c1", reason="caller_bye"))
        assert "c1" not in hub.pops.entries and hub.pops.counters["evicted"] == 1

    run(test)


def test_an_offer_withdrawn_before_its_pop_is_ready_is_never_sent():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        engine.acd.set_state("op1", "available")
        builder.gate = asyncio.Event()
        engine.call_in("c1")
        await settle()
        engine.acd.leave("c1", "caller_hangup")  # the caller hangs up while the pop is being built
        builder.gate.set()
        await settle()
        kinds = []
        with pytest.raises(TimeoutError):
            while True:
                kinds.append((await next_event(response, timeout=0.3))[0])
        assert "offer" not in kinds and "offer_withdrawn" not in kinds and hub.counters["offers_cancelled"] == 1

    run(test)


def test_a_sent_offer_is_withdrawn_with_the_reason():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        engine.acd.set_state("op1", "available")
        engine.call_in("c1")
        offer = await expect(response, "offer")
        engine.acd.leave("c1", "caller_hangup")
        assert await expect(response, "offer_withdrawn") == {"offer_id": offer["offer_id"], "call_id": "c1",
                                                             "reason": "caller_gone"}

    run(test)


def test_a_reconnected_desk_restores_the_offer_from_current():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        engine.acd.set_state("op1", "available")
        engine.call_in("c1")
        offer = await expect(response, "offer")
        response.close()  # the page reloads
        again = await events(client, "op")
        assert (await next_event(again))[0] == "hello"
        current = await (await client.get("/api/desk/current", headers=basic("op"))).json()
        assert current["offer"] == {"offer_id": offer["offer_id"], "call_id": "c1", "pop": offer["pop"]}
        engine.acd.answered(engine.acd.offers[offer["offer_id"]])  # answered on the desk phone
        call = await expect(again, "call")  # no call control in this engine: the hub says what it knows
        assert call["call_id"] == "c1" and call["state"] == "talking" and call["pop"] == offer["pop"]

    run(test)


def test_call_control_events_carry_the_pop():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        engine.control = object()  # call control present: its desk.call events are the truth
        response = await events(client, "op")
        engine.ua.calls["c9"] = make_call("c9", caller=ELDER_NUMBER)
        engine.bus.publish(DeskCallChanged(operator="op1", call_id="c9", call={
            "call_id": "c9", "state": "held", "device": "browser", "muted": False, "held": True, "parties": [],
            "started_at": "2025-03-01T08:00:00+00:00"}))
        call = await expect(response, "call")
        assert call["state"] == "held" and call["pop"]["call"]["caller_number"] == ELDER_NUMBER
        engine.bus.publish(DeskCallChanged(operator="op2", call_id="c8", call=None))  # somebody else's
        engine.bus.publish(DeskCallChanged(operator="op1", call_id="c9", call=None))
        ended = await expect(response, "call")
        assert ended["call_id"] == "c9" and ended["state"] == "ended" and ended["pop"] == call["pop"]

    run(test)


def test_a_callback_being_dialled_pops_the_elder_to_call():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "op")
        engine.dialler.placed["callback-5"] = FakePlaced("13800138001")
        engine.acd.set_state("op1", "available")
        engine.acd.begin_outbound("op1", "callback-5")
        offer = await expect(response, "offer")
        assert offer["offer_id"] is None and offer["call_id"] == "callback-5"
        assert offer["pop"]["call"]["direction"] == "callback"
        assert offer["pop"]["call"]["caller_number"] == "13800138001"
        current = await (await client.get("/api/desk/current", headers=basic("op"))).json()
        assert current["offer"]["call_id"] == "callback-5" and current["offer"]["pop"] == offer["pop"]
        engine.acd.end_outbound("op1")  # nobody answered
        assert (await expect(response, "offer_withdrawn"))["reason"] == "ended"
        assert "callback-5" not in hub.pops.entries

    run(test)


def test_an_answered_callback_keeps_its_pop_for_the_conversation():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        engine.control = object()
        response = await events(client, "op")
        engine.dialler.placed["callback-6"] = FakePlaced("13800138001")
        engine.acd.set_state("op1", "available")
        engine.acd.begin_outbound("op1", "callback-6")
        offer = await expect(response, "offer")
        engine.acd.outbound_answered("op1")  # the operator picked up, the elder answered
        assert (await expect(response, "offer_withdrawn"))["reason"] == "answered"
        engine.bus.publish(DeskCallChanged(operator="op1", call_id="out-1", call={
            "call_id": "out-1", "state": "talking", "device": "phone", "muted": False, "held": False, "parties": [],
            "started_at": None, "kind": "callback"}))
        call = await expect(response, "call")
        assert call["pop"] == offer["pop"] and len(builder.built) == 1
        engine.acd.end_outbound("op1")
        await settle()
        assert "callback-6" not in hub.pops.entries and not hub.dialling

    run(test)


def test_an_outbound_call_pops_the_elder_it_was_placed_for_and_keeps_the_pop_for_the_conversation():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        engine.control = object()
        response = await events(client, "op")
        engine.dialler.placed["outbound-ab12"] = FakePlaced("13800138001", elder_id=42)
        engine.acd.set_state("op1", "available")
        engine.acd.begin_outbound("op1", "outbound-ab12")
        offer = await expect(response, "offer")
        assert offer["offer_id"] is None and offer["call_id"] == "outbound-ab12"
        assert offer["pop"]["call"]["direction"] == "outbound"
        assert offer["pop"]["call"]["caller_number"] == "13800138001"
        (facts,) = builder.built
        assert facts["elder_id"] == 42 and facts["direction"] == "outbound"  # the elder it was placed for
        engine.acd.outbound_answered("op1")
        assert (await expect(response, "offer_withdrawn"))["reason"] == "answered"
        engine.bus.publish(DeskCallChanged(operator="op1", call_id="sip-9", call={
            "call_id": "sip-9", "state": "talking", "device": "browser", "muted": False, "held": False,
            "parties": [], "started_at": None, "kind": "outbound"}))
        call = await expect(response, "call")
        assert call["kind"] == "outbound" and call["pop"] == offer["pop"] and len(builder.built) == 1
        engine.acd.end_outbound("op1")
        await settle()
        assert "outbound-ab12" not in hub.pops.entries and not hub.dialling

    run(test)


# -- who gets what ----------------------------------------------------------------------------------------


def test_each_role_gets_its_own_share_of_the_events():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        users = {name: User(name, role) for name, role in
                 (("op", "operator"), ("sup", "supervisor"), ("aud", "auditor"), ("admin", "admin"))}
        streams = {name: hub.open(user, "zh") for name, user in users.items()}
        hub.queue_interval = 0.0
        engine.acd.set_state("op1", "available")
        engine.acd.set_state("op3", "available")
        engine.call_in("c1", queue="hotline", priority="normal")
        await asyncio.sleep(0.05)
        hub.emit("callbacks", {"open": 2})

        def received(name: str) -> list[tuple[str, Any]]:
            items = []
            while not streams[name].queue.empty():
                kind, text = streams[name].queue.get_nowait()  # type: ignore[misc]
                data = json.loads(text)
                items.append((kind, data.get("name") or data.get("operator") or data.get("open")))
            return items

        op, sup, aud, admin = received("op"), received("sup"), received("aud"), received("admin")
        assert aud == []
        assert ("operator", "op3") not in op and ("queue", None) not in op
        assert [k for k, _ in op].count("operator") == 2 and ("offer", "op1") in op and ("callbacks", 2) in op
        assert ("operator", "op3") in sup and ("operator", "op1") in sup and ("callbacks", 2) in sup
        assert any(kind == "queue" for kind, _ in sup) and ("offer", "op1") not in sup  # not sup's offer
        assert [k for k, _ in admin] == [k for k, _ in sup]

    run(test)


def test_queue_summaries_come_at_most_once_per_interval():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        response = await events(client, "sup")
        for index in range(5):
            engine.call_in(f"c{index}", queue="hotline", priority="normal")
        first = await expect(response, "queue")
        hotline = next(q for q in first["queues"] if q["name"] == "hotline")
        assert hotline["waiting"] == 5 and hotline["emergency_waiting"] == 0 and hotline["answered_today"] == 0
        engine.call_in("c9")  # an emergency
        loop = asyncio.get_running_loop()
        started = loop.time()
        second = await expect(response, "queue")
        assert loop.time() - started >= 0.15  # held back to the interval
        emergency = next(q for q in second["queues"] if q["name"] == "emergency")
        assert emergency["waiting"] == 1 and emergency["emergency_waiting"] == 1

    run(test, queue_interval=0.2)


# -- slow consumers -----------------------------------------------------------------------------------------


def test_a_slow_stream_is_dropped_without_holding_up_the_others():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        hub.queue_size = 3
        slow = await events(client, "sup")
        assert (await next_event(slow))[0] == "hello"
        hub.queue_size = 256
        fine = await events(client, "admin")
        await next_event(fine)
        for index in range(20):  # one burst: nothing reads in between
            engine.bus.publish(OperatorStateChanged(operator="op3", old="available", new="paused",
                                                    reason=f"r{index}"))
        with pytest.raises(EOFError):  # the hub let the slow one go: its response ends
            while True:
                await next_event(slow)
        reasons = [(await expect(fine, "operator"))["reason"] for _ in range(20)]
        assert reasons == [f"r{i}" for i in range(20)]
        assert hub.counters["dropped"] == 1 and len(hub.streams) == 1

    run(test)


def test_the_hub_drops_a_full_stream_at_once():
    config = push_config()
    hub = DeskHub(FakeEngine(config), config, queue_size=2)

    async def main() -> None:
        slow = hub.open(User("sup", "supervisor"), "zh")
        for index in range(3):
            hub.emit("operator", {"name": "op1", "n": index}, operator="op1")
        assert slow.dropped == "slow" and slow not in hub.streams and hub.counters["dropped"] == 1
        assert hub.emit("operator", {"name": "op1"}, operator="op1") == 0

    asyncio.run(main())


def test_a_browser_that_reads_nothing_is_cut_off_while_the_loop_runs_on():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        hub.queue_size = 8
        stuck = await events(client, "sup")  # read once, then never again
        assert (await next_event(stuck))[0] == "hello"
        (stream,) = hub.streams
        loop = asyncio.get_running_loop()
        blob = "x" * 100_000
        slowest = 0.0
        for index in range(1000):  # up to 100 MB, slowly enough for the handler to write until the socket is full
            started = loop.time()
            hub.emit("operator", {"name": "op3", "reason": blob, "n": index}, operator="op3")
            slowest = max(slowest, loop.time() - started)
            await asyncio.sleep(0.002)
            if stream.dropped:
                break
        assert stream.dropped == "slow" and slowest < 0.05  # the hub never waited for the browser
        for _ in range(200):  # its handler, stuck in a write, ends: the hub closed the connection
            if stream.ended:
                break
            await asyncio.sleep(0.01)
        assert stream.ended and stream not in hub.streams and hub.counters["dropped"] == hub.counters["aborted"] == 1

    run(test)
