"""The ACD's JSON API (agents.acd_api): operators and their states, queues, callback tasks, the day's KPIs.

The desktop app of agents.web against a fake engine that carries a real Distributor (on a Twisted Clock), real
callback tasks and the queue event log in a temporary SQLite database, and a fake callback dialler."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from twisted.internet.task import Clock

from agents.web import create_app
from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.dialler import DialError
from callcenter.acd.eventlog import QueueEventWriter
from callcenter.acd.events import EventList, QueueEvent
from callcenter.acd.model import QueueSettings
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.calls.model import Call
from callcenter.config import Config
from callcenter.ivr.runner import QueueRequest
from callcenter.store.db import create_engine_for, run_migrations
from tests.unit.test_web import FakeEngine, Now, basic, logged_in, make_config

OS = OperatorState
ELDER = "01088886666"
DAY = dt.date(2025, 3, 1)  # in Asia/Shanghai (the default flows.timezone): 2025-02-28 16:00 to 03-01 16:00 UTC


def acd_config() -> Config:
    data = make_config().model_dump(mode="json")
    data["queues"] = [{"name": "hotline", "service_level": 20}, {"name": "emergency", "service_level": 10}]
    data["operators"] = [
        {"name": "op1", "phone": "1001", "user": "op", "queues": {"hotline": 5, "emergency": 10}},
        {"name": "op2", "queues": {"hotline": 5}},
    ]
    return Config.model_validate(data)


@dataclass
class FakeAttempt:
    phone: Call | None


class FakeDialler:
    def __init__(self, acd: Distributor) -> None:
        self.acd = acd
        self.dialled: list[tuple[int, str]] = []
        self.error: DialError | None = None

    async def dial(self, task_id: int, operator_name: str) -> FakeAttempt:
        if self.error is not None:
            raise self.error
        self.dialled.append((task_id, operator_name))
        return FakeAttempt(None)


class AcdEngine(FakeEngine):
    def __init__(self, config: Config, db: Any) -> None:
        super().__init__(config)
        self.clock = Clock()
        self.clock.advance(1_700_000_000.0)
        self.events = EventList()
        self.acd = Distributor(
            self.clock, None, queues=[QueueSettings(q.name, service_level=q.service_level) for q in config.queues],
            operators=[Operator(o.name, o.display_name or o.name, o.phone, o.user, dict(o.skills), dict(o.queues),
                                0.0) for o in config.operators],
            events=self.events)
        self.acd.set_state("op1", "available")
        self.db = db
        self.callbacks = CallbackTasks(db)
        self.dialler: FakeDialler | None = FakeDialler(self.acd)

    def queue_call(self, call_id: str, priority: str = "normal", queue: str = "hotline") -> None:
        self.acd.enqueue(call_id, ELDER, QueueRequest(queue, priority, 1, {}, None, None, "terminal", "queue"))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    return url


def run(db_url: str, test: Callable[[TestClient, AcdEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        db = create_engine_for(db_url)
        config = acd_config()
        engine = AcdEngine(config, db)
        try:
            async with TestClient(TestServer(create_app(engine, config, now=Now()))) as client:
                await test(client, engine)
        finally:
            await db.dispose()

    asyncio.run(main())


async def new_task(engine: AcdEngine, number: str = ELDER, source: str = "abandoned") -> int:
    return await engine.callbacks.create(number=number, call_id=f"call-{number}", elder_id=None, reason="hung up",
                                         source=source, due_at=dt.datetime.now(dt.UTC), queue="hotline")


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


# -- operators and queues ------------------------------------------------------------------------------------


def test_operators_and_queues_for_everybody_logged_in(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        assert (await client.get("/api/operators")).status == 401
        engine.queue_call("c1")  # rings op1
        engine.clock.advance(7)
        engine.queue_call("c2", "emergency", "emergency")  # seizes op1: c1 waits again
        engine.clock.advance(2)
        body = await json_of(await client.get("/api/operators", headers=basic("aud")), 200)
        assert [o["name"] for o in body["operators"]] == ["op1", "op2"]
        op1 = body["operators"][0]
        assert (op1["state"], op1["call_id"], op1["phone"], op1["user"]) == ("reserved", "c2", "1001", "op")
        assert op1["queues"] == {"hotline": 5, "emergency": 10} and op1["offers"] == 2 and op1["since"] == 9.0
        assert body["operators"][1]["state"] == "logged_out"
        assert body["counts"] == {"logged_out": 1, "available": 0, "reserved": 1, "talking": 0, "wrap_up": 0,
                                  "paused": 0}

        body = await json_of(await client.get("/api/queues", headers=basic("op")), 200)
        assert set(body["queues"]) == {"hotline", "emergency"}
        hotline, emergency = body["queues"]["hotline"], body["queues"]["emergency"]
        assert (hotline["waiting"], hotline["longest_wait"]) == (1, 9.0)
        (c1,) = hotline["calls"]
        assert (c1["call_id"], c1["caller"], c1["state"], c1["ringing"], c1["waited"]) == (
            "c1", ELDER, "waiting", [], 9.0)
        (c2,) = emergency["calls"]
        assert (c2["call_id"], c2["priority"], c2["state"], c2["ringing"]) == ("c2", "emergency", "offered", ["op1"])
        assert emergency["waiting"] == 1 and emergency["longest_wait"] == 2.0

    run(db_url, test)


def test_an_operator_changes_their_own_state(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        url = "/api/operators/op1/state"
        body = await json_of(await client.post(url, json={"state": "paused", "reason": "午饭 lunch"},
                                               headers=basic("op")), 200)
        assert body == {"operator": "op1", "state": "paused", "pending": None}
        op1 = engine.acd.operators["op1"]
        assert op1.state is OS.PAUSED and op1.pause_reason == "午饭 lunch"
        await json_of(await client.post(url, json={"state": "paused"}, headers=basic("op")), 200)
        assert op1.pause_reason == "break"  # a pause always has a reason
        body = await json_of(await client.post(url, json={"state": "available"}, headers=basic("op")), 200)
        assert body["state"] == "available" and op1.state is OS.AVAILABLE and op1.pause_reason is None
        body = await json_of(await client.post(url, json={"state": "logged_out", "reason": "ignored"},
                                               headers=basic("op")), 200)
        assert body["state"] == "logged_out" and op1.state is OS.LOGGED_OUT

    run(db_url, test)


def test_only_supervisors_change_other_operators(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        op2 = engine.acd.operators["op2"]
        response = await client.post("/api/operators/op2/state", json={"state": "available"}, headers=basic("op"))
        assert (await json_of(response, 403))["error"].startswith("an operator may only")
        assert op2.state is OS.LOGGED_OUT
        response = await client.post("/api/operators/op2/state", json={"state": "available"}, headers=basic("aud"))
        await json_of(response, 403)  # auditors watch, they do not act
        for user, state in (("sup", "available"), ("admin", "paused")):
            response = await client.post("/api/operators/op2/state", json={"state": state}, headers=basic(user))
            assert (await json_of(response, 200))["state"] == state and op2.state.value == state
        response = await client.post("/api/operators/op1/state", json={"state": "paused"}, headers=basic("sup"))
        await json_of(response, 200)

    run(db_url, test)


def test_state_changes_with_a_session_need_the_csrf_token(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        csrf = await logged_in(client, "op")
        response = await client.post("/api/operators/op1/state", json={"state": "paused"})
        assert (await json_of(response, 403))["error"].startswith("missing or wrong CSRF token")
        assert engine.acd.operators["op1"].state is OS.AVAILABLE
        response = await client.post("/api/operators/op1/state", json={"state": "paused"},
                                     headers={"X-CSRF-Token": csrf})
        await json_of(response, 200)
        assert engine.acd.operators["op1"].state is OS.PAUSED

    run(db_url, test)


@pytest.mark.parametrize(("body", "field"), [
    ({"state": "talking"}, "state"),
    ({}, "state"),
    ({"state": ["paused"]}, "state"),
    ({"state": "paused", "reason": "<script>"}, "reason"),
    ({"state": "paused", "reason": "lunch\n"}, "reason"),
    ({"state": "paused", "reason": "x" * 65}, "reason"),
    ({"state": "paused", "reason": ""}, "reason"),
    ({"state": "paused", "reason": 5}, "reason"),
    ({"state": "paused", "mood": "tired"}, "mood"),
])
def test_bad_state_requests_name_the_field(db_url: str, body: dict[str, Any], field: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        response = await client.post("/api/operators/op1/state", json=body, headers=basic("op"))
        assert (await json_of(response, 422))["field"] == field
        assert engine.acd.operators["op1"].state is OS.AVAILABLE

    run(db_url, test)


def test_unknown_operator_and_bad_bodies(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        response = await client.post("/api/operators/op9/state", json={"state": "paused"}, headers=basic("sup"))
        await json_of(response, 404)
        response = await client.post("/api/operators/op1/state", data="state=paused", headers=basic("op"))
        await json_of(response, 415)
        response = await client.post("/api/operators/op1/state", json=["paused"], headers=basic("op"))
        await json_of(response, 400)
        assert (await client.get("/api/operators/op1/state", headers=basic("op"))).status == 405

    run(db_url, test)


def test_a_state_change_during_a_call_waits_for_its_end(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        engine.queue_call("c1")
        (offer,) = engine.acd.offers.values()
        engine.acd.answered(offer)
        op1 = engine.acd.operators["op1"]
        assert op1.state is OS.TALKING
        response = await client.post("/api/operators/op1/state", json={"state": "paused", "reason": "meeting"},
                                     headers=basic("op"))
        assert await json_of(response, 200) == {"operator": "op1", "state": "talking", "pending": "paused"}
        body = await json_of(await client.get("/api/operators", headers=basic("op")), 200)
        assert body["operators"][0]["pending"] == "paused"
        engine.acd.conversation_ended("c1")
        engine.clock.advance(0)  # wrap-up of 0 s
        assert op1.state is OS.PAUSED and op1.pause_reason == "meeting"

    run(db_url, test)


def test_no_distributor_is_503(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        engine.acd = None  # type: ignore[assignment]
        await json_of(await client.get("/api/operators", headers=basic("op")), 503)

    run(db_url, test)


# -- callback tasks ------------------------------------------------------------------------------------------


def test_callback_list_and_state_filter(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        tasks = engine.callbacks
        open_id = await new_task(engine, "01000000001")
        dialling = await new_task(engine, "01000000002")
        await tasks.start_attempt(dialling, "op1")
        done = await new_task(engine, "01000000003")
        await tasks.finish(done, state="completed", outcome="fine", by="op")
        closed = await new_task(engine, "01000000004")
        await tasks.finish(closed, state="closed", outcome="wrong number", by="sup")
        body = await json_of(await client.get("/api/callbacks", headers=basic("aud")), 200)
        assert sorted(t["id"] for t in body["callbacks"]) == [open_id, dialling]
        first = next(t for t in body["callbacks"] if t["id"] == open_id)
        assert set(first) == {"id", "number", "elder_id", "call_id", "reason", "source", "state", "due_at",
                              "attempts", "created_at", "closed_at", "outcome", "queue", "operator",
                              "last_attempt_at"}
        assert (first["number"], first["source"], first["queue"], first["state"]) == (
            "01000000001", "abandoned", "hotline", "open")
        assert dt.datetime.fromisoformat(first["due_at"]).tzinfo is not None and first["closed_at"] is None
        for state, expected in (("closed", [closed]), ("completed", [done]), ("dialling", [dialling]),
                                ("open", [open_id])):
            body = await json_of(await client.get(f"/api/callbacks?state={state}", headers=basic("op")), 200)
            assert [t["id"] for t in body["callbacks"]] == expected, state
        body = await json_of(await client.get("/api/callbacks?state=closed", headers=basic("op")), 200)
        assert body["callbacks"][0]["outcome"] == "wrong number (sup)"
        response = await client.get("/api/callbacks?state=everything", headers=basic("op"))
        assert (await json_of(response, 422))["field"] == "state"

    run(db_url, test)


def test_closing_a_callback(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        first, second = await new_task(engine), await new_task(engine, "01000000002")
        response = await client.post(f"/api/callbacks/{first}/close",
                                     json={"result": "completed", "outcome": "  called back, all is well "},
                                     headers=basic("op"))
        body = await json_of(response, 200)
        assert (body["id"], body["state"], body["outcome"]) == (first, "completed", "called back, all is well (op)")
        assert body["closed_at"] is not None and body["operator"] == "op"
        response = await client.post(f"/api/callbacks/{second}/close",
                                     json={"result": "closed", "outcome": "family visited"}, headers=basic("sup"))
        assert (await json_of(response, 200))["state"] == "closed"
        again = await client.post(f"/api/callbacks/{first}/close", json={"result": "closed", "outcome": "again"},
                                  headers=basic("op"))
        await json_of(again, 409)
        (remaining,) = await engine.callbacks.tasks(states=("completed",))
        assert remaining.outcome == "called back, all is well (op)"  # the second close changed nothing

    run(db_url, test)


@pytest.mark.parametrize(("body", "field"), [
    ({"result": "completed"}, "outcome"),
    ({"result": "completed", "outcome": "   "}, "outcome"),
    ({"result": "completed", "outcome": "x" * 201}, "outcome"),
    ({"result": "completed", "outcome": 3}, "outcome"),
    ({"result": "done", "outcome": "ok"}, "result"),
    ({"outcome": "ok"}, "result"),
    ({"result": "closed", "outcome": "ok", "by": "me"}, "by"),
])
def test_bad_close_requests_name_the_field(db_url: str, body: dict[str, Any], field: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        task_id = await new_task(engine)
        response = await client.post(f"/api/callbacks/{task_id}/close", json=body, headers=basic("op"))
        assert (await json_of(response, 422))["field"] == field
        (task,) = await engine.callbacks.tasks()
        assert task.state == "open"

    run(db_url, test)


def test_closing_unknown_or_busy_tasks(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        ok = {"result": "closed", "outcome": "x"}
        task_id = await new_task(engine)
        for unknown in (str(task_id + 1), "abc", "-1", "9" * 19):
            response = await client.post(f"/api/callbacks/{unknown}/close", json=ok, headers=basic("sup"))
            await json_of(response, 404)
        await engine.callbacks.start_attempt(task_id, "op1")
        response = await client.post(f"/api/callbacks/{task_id}/close", json=ok, headers=basic("sup"))
        assert "being dialled" in (await json_of(response, 409))["error"]
        response = await client.post(f"/api/callbacks/{task_id}/close", json=ok, headers=basic("aud"))
        await json_of(response, 403)

    run(db_url, test)


def test_dialling_a_callback(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        dialler = engine.dialler
        assert dialler is not None
        task_id = await new_task(engine)
        response = await client.post(f"/api/callbacks/{task_id}/dial", headers=basic("op"))  # as themselves
        assert await json_of(response, 202) == {"task_id": task_id, "operator": "op1", "call_id": None}
        response = await client.post(f"/api/callbacks/{task_id}/dial", json={"operator": "op2"}, headers=basic("sup"))
        assert (await json_of(response, 202))["operator"] == "op2"
        assert dialler.dialled == [(task_id, "op1"), (task_id, "op2")]

        response = await client.post(f"/api/callbacks/{task_id}/dial", json={"operator": "op2"}, headers=basic("op"))
        await json_of(response, 403)
        response = await client.post(f"/api/callbacks/{task_id}/dial", headers=basic("sup"))  # not an operator
        assert (await json_of(response, 422))["field"] == "operator"
        response = await client.post(f"/api/callbacks/{task_id}/dial", json={"operator": "op9"}, headers=basic("sup"))
        assert (await json_of(response, 422))["field"] == "operator"
        response = await client.post(f"/api/callbacks/{task_id}/dial", json={"number": "120"}, headers=basic("sup"))
        assert (await json_of(response, 422))["field"] == "number"
        assert len(dialler.dialled) == 2

        for status in (409, 404):
            dialler.error = DialError(status, f"refused with {status}")
            response = await client.post(f"/api/callbacks/{task_id}/dial", headers=basic("op"))
            assert (await json_of(response, status))["error"] == f"refused with {status}"
        engine.dialler = None
        await json_of(await client.post(f"/api/callbacks/{task_id}/dial", headers=basic("op")), 503)

    run(db_url, test)


# -- the day's statistics ------------------------------------------------------------------------------------


def test_stats_of_a_local_day_from_the_queue_event_log(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        noon = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()
        events = [
            QueueEvent(noon, "enter", "a", "hotline", "normal"),
            QueueEvent(noon + 5, "offer", "a", "hotline", "normal", "op1"),
            QueueEvent(noon + 8, "connect", "a", "hotline", "normal", "op1", wait=8.0),
            QueueEvent(noon + 68, "complete", "a", "hotline", "normal", "op1", seconds=60.0),
            QueueEvent(noon + 10, "enter", "b", "emergency", "emergency"),
            QueueEvent(noon + 40, "abandon", "b", "emergency", "emergency", wait=30.0),
            QueueEvent(noon + 41, "callback", "b", "emergency", "emergency", detail="1 abandoned"),
            # 2025-03-02 00:30 in Shanghai (16:30 UTC on the 1st): the next local day
            QueueEvent(noon + 12.5 * 3600, "enter", "c", "hotline", "normal"),
        ]
        writer = QueueEventWriter(engine.db, node="node-test")
        await writer.start()
        for event in events:
            writer.record(event)
        await writer.close()

        for user in ("sup", "aud", "admin"):
            body = await json_of(await client.get(f"/api/stats?day={DAY.isoformat()}", headers=basic(user)), 200)
            assert body["day"] == "2025-03-01" and body["events"] == 7
        overall, queues = body["overall"], body["queues"]
        assert (overall["offered"], overall["answered"], overall["abandoned"], overall["callbacks"]) == (2, 1, 1, 1)
        assert set(queues) == {"hotline", "emergency"}
        assert queues["hotline"]["answered_within"] == 1 and queues["hotline"]["asa"] == 8.0
        assert queues["emergency"]["abandoned"] == 1 and body["emergency_answer_rate"] == 0.0
        assert body["operators"]["op1"]["talk_seconds"] == 60.0
        body = await json_of(await client.get("/api/stats?day=2025-03-02", headers=basic("sup")), 200)
        assert body["events"] == 1 and body["overall"]["offered"] == 1
        body = await json_of(await client.get("/api/stats", headers=basic("sup")), 200)  # today: nothing
        assert body["events"] == 0 and set(body["queues"]) == {"hotline", "emergency"}

    run(db_url, test)


def test_stats_refusals(db_url: str) -> None:
    async def test(client: TestClient, engine: AcdEngine) -> None:
        await json_of(await client.get("/api/stats", headers=basic("op")), 403)
        for day in ("2025-13-01", "2025-02-30", "yesterday", "2025-3-1", "２０２５-03-01"):
            response = await client.get("/api/stats", params={"day": day}, headers=basic("sup"))
            assert (await json_of(response, 422))["field"] == "day", day

    run(db_url, test)
