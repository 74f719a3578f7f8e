"""The desk's read side (agents.desk_api): /api/desk/current, /api/wallboard, /api/dispositions, and today's
figures behind the wallboard (agents.today), against the push tests' engine (real bus, Distributor, publisher)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient

from agents.push import DeskHub
from agents.roles import route_roles
from agents.today import TodayTally
from callcenter.acd.eventlog import QueueEventWriter
from callcenter.acd.events import QueueEvent
from callcenter.acd.model import AcdSettings
from callcenter.store.db import create_engine_for, run_migrations
from tests.unit.test_push import Builder, PushEngine, expect, push_config, run
from tests.unit.test_web import basic

ZONE = ZoneInfo("Asia/Shanghai")


async def json_of(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


# -- dispositions -----------------------------------------------------------------------------------------


def test_dispositions_come_from_the_configuration_for_everybody():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        for user in ("op", "sup", "aud", "admin"):
            body = await json_of(await client.get("/api/dispositions", headers=basic(user)))
            assert "紧急救助已派120" in body["dispositions"] and "误按" in body["dispositions"]
            assert body["work_order_types"][:3] == ["上门探视", "维修", "送餐"] and "养老驿站" in body["assignees"]

    run(test)


# -- the current desk -------------------------------------------------------------------------------------


class FakeControl:
    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}

    def current(self, operator: str) -> dict[str, Any] | None:
        return self.calls.get(operator)


def test_current_shows_the_operator_and_the_call_with_its_pop():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        engine.control = FakeControl()
        engine.acd.set_state("op1", "available")
        body = await json_of(await client.get("/api/desk/current", headers=basic("op")))
        assert body == {"operator": {"name": "op1", "display_name": "op1", "state": "available", "reason": None,
                                     "device": "phone", "call_id": None}, "offer": None, "call": None}
        engine.call_in("c1")
        engine.acd.answered(next(iter(engine.acd.offers.values())))
        engine.control.calls["op1"] = {"call_id": "c1", "state": "talking", "device": "phone", "muted": False,
                                       "held": False, "parties": [], "started_at": "2025-03-01T00:00:00+00:00"}
        body = await json_of(await client.get("/api/desk/current", headers=basic("op")))
        assert body["offer"] is None and body["operator"]["state"] == "talking"
        assert body["call"]["state"] == "talking" and body["call"]["pop"]["call"]["call_id"] == "c1"
        assert len(builder.built) == 1  # the pop of the offer, reused
        await asyncio.sleep(0.01)
        assert [a["username"] for a in engine.directory.access] == ["op"]

    run(test)


def test_current_for_another_operator_is_for_supervisors_only():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        engine.acd.set_state("op3", "paused", "meal")
        body = await json_of(await client.get("/api/desk/current?operator=op3", headers=basic("sup")))
        assert body["operator"]["state"] == "paused" and body["operator"]["reason"] == "meal"
        denied = await json_of(await client.get("/api/desk/current?operator=op3", headers=basic("op")), 403)
        assert denied["field"] == "operator"
        assert (await json_of(await client.get("/api/desk/current?operator=op1", headers=basic("op"))))["operator"]
        missing = await json_of(await client.get("/api/desk/current?operator=nobody", headers=basic("admin")), 404)
        assert missing["field"] == "operator"
        nobody = await json_of(await client.get("/api/desk/current", headers=basic("admin")))  # not an operator
        assert nobody == {"operator": None, "offer": None, "call": None}
        assert (await client.get("/api/desk/current", headers=basic("aud"))).status == 403

    run(test)


# -- the wallboard ----------------------------------------------------------------------------------------


def test_the_wallboard_adds_up_what_happened_today():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        supervisor = await client.get("/api/desk/events", headers=basic("sup"))
        engine.acd.set_state("op1", "available")
        engine.call_in("c1", queue="hotline", priority="normal")  # offered to op1, answered
        engine.acd.answered(next(iter(engine.acd.offers.values())))
        engine.call_in("c2", queue="hotline", priority="normal")  # waits, then the caller hangs up
        engine.acd.leave("c2", "caller_hangup")
        engine.acd.settings = AcdSettings(seize_after=600)  # no line seize here: the emergency waits
        engine.call_in("c3")  # an emergency waiting: op1 is talking, nobody else takes emergencies
        engine.acd.set_state("op3", "paused", "training")
        board = await json_of(await client.get("/api/wallboard", headers=basic("sup")))
        queues = {q["name"]: q for q in board["queues"]}
        assert queues["hotline"] | {"longest_wait": 0} == {
            "name": "hotline", "display_name": "hotline", "waiting": 0, "longest_wait": 0, "emergency_waiting": 0,
            "answered_today": 1, "abandoned_today": 1, "service_level_today": 0.5}
        assert queues["emergency"]["waiting"] == 1 and queues["emergency"]["emergency_waiting"] == 1
        operators = {o["name"]: o for o in board["operators"]}
        assert operators["op1"]["state"] == "talking" and operators["op1"]["calls_today"] == 1
        assert operators["op3"]["state"] == "paused" and operators["op3"]["reason"] == "training"
        assert operators["op1"]["device"] == "phone" and operators["op2"]["state"] == "logged_out"
        kpi = board["kpi"]
        assert (kpi["offered"], kpi["answered"], kpi["abandoned"]) == (3, 1, 1)
        assert sum(h["offered"] for h in kpi["hourly"]) == 3 and sum(h["answered"] for h in kpi["hourly"]) == 1
        assert board["day"] == dt.datetime.now(ZONE).date().isoformat()
        pushed = await expect(supervisor, "queue")  # the same figures go out on the push channel (once a second)
        while {q["name"]: q for q in pushed["queues"]}["emergency"]["emergency_waiting"] != 1:
            pushed = await expect(supervisor, "queue", timeout=3.0)
        assert pushed["queues"] == board["queues"]
        for user in ("op", "aud"):
            assert (await client.get("/api/wallboard", headers=basic(user))).status == 403

    run(test)


def test_today_is_loaded_from_the_event_log_once_and_rolls_over_at_midnight(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    config = push_config()
    noon = dt.datetime(2025, 3, 1, 12, 0, tzinfo=ZONE).timestamp()
    clock = {"now": noon}

    def event(kind: str, call_id: str, at: float, **extra: Any) -> QueueEvent:
        return QueueEvent(at, kind, call_id, "hotline", "normal", **extra)

    async def main() -> None:
        db = create_engine_for(url)
        try:
            writer = QueueEventWriter(db, node="n1")
            await writer.start()
            for e in (event("enter", "old", noon - 86400), event("enter", "a", noon - 7200),
                      event("connect", "a", noon - 7190, operator="op1", wait=10.0)):
                writer.record(e)
            await writer.close()
            tally = TodayTally(config, now=lambda: clock["now"])
            loading = asyncio.ensure_future(tally.load(db))
            await asyncio.sleep(0)  # the load waits for the database; the bus goes on meanwhile
            tally.add(event("connect", "a", noon - 7189.9, operator="op1", wait=10.0))  # in the log too: kept once
            tally.add(event("enter", "b", noon - 60))  # only on the bus
            assert await loading == 2  # yesterday's call is not today's
            assert [(e.kind, e.call_id) for e in tally.events] == [("enter", "a"), ("connect", "a"), ("enter", "b")]
            report = tally.report()
            assert report.queues["hotline"].offered == 2 and report.queues["hotline"].answered == 1
            hourly = tally.hourly()
            assert len(hourly) == 13 and hourly[10] == {"hour": 10, "offered": 1, "answered": 1}
            assert hourly[11]["offered"] == 1
            clock["now"] = noon + 86400  # the next day
            assert tally.report().overall.offered == 0 and tally.events == []
        finally:
            await db.dispose()

    asyncio.run(main())


# -- the API description -----------------------------------------------------------------------------------


def test_openapi_describes_every_api_route_with_its_roles():
    async def test(client: TestClient, engine: PushEngine, hub: DeskHub, builder: Builder) -> None:
        document = await json_of(await client.get("/api/openapi.json", headers=basic("aud")))
        assert document["openapi"] == "3.1.0"
        described = {(method.upper(), path): operation for path, operations in document["paths"].items()
                     for method, operation in operations.items()}
        for route in client.server.app.router.routes():
            path = route.resource.canonical
            if route.method == "HEAD" or not path.startswith("/api/"):
                continue
            operation = described.pop((route.method, path))
            assert set(operation["x-roles"]) == set(route_roles(route)), path
            assert operation["summary"] and operation["responses"]
        assert described == {}  # nothing that is not a route
        create = document["paths"]["/api/work-orders"]["post"]
        assert create["summary"] == "A work order: ``{elder_id, call_id?, type, assignee, due_at, notes}`` → ``{id}``."
        assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == [
            "elder_id", "type", "assignee", "due_at"]
        assert document["paths"]["/api/elders/{elder_id}"]["patch"]["parameters"][0]["name"] == "elder_id"
        assert document["paths"]["/api/wallboard"]["get"]["x-roles"] == ["admin", "supervisor"]
        assert "text/event-stream" in document["paths"]["/api/desk/events"]["get"]["responses"]["200"]["content"]
        page = await client.get("/api/docs?lang=en", headers=basic("op"))
        html = await page.text()
        assert page.status == 200 and "/api/work-orders" in html and "<b>PATCH</b>" in html and "routes" in html
        assert (await client.get("/api/openapi.json")).status == 401

    run(test)
