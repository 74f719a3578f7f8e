"""The directory's JSON API (agents.directory_api) over the real DirectoryStore in a temporary SQLite database:
elders (search, quick create, profile, update, history), service records, work orders, history search; the
access log; every bad input answered 4xx naming the field."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.screenpop import call_facts, directory_builder
from agents.web import create_app
from callcenter.acd.callbacks import CallbackTasks
from callcenter.directory.numbers import national
from callcenter.directory.store import DirectoryStore
from callcenter.directory.validation import id_check_digit
from callcenter.store.cdr import CallRecordData, CdrWriter
from callcenter.store.db import create_engine_for, run_migrations
from tests.unit.test_web import FakeEngine, Now, basic, logged_in, make_call, make_config

ZONE = ZoneInfo("Asia/Shanghai")
ID_NUMBER = "11010219430501123" + id_check_digit("11010219430501123")


class DirectoryEngine(FakeEngine):
    def __init__(self, db: Any) -> None:
        super().__init__(make_config())
        self.db = db
        self.directory = DirectoryStore(db, zone=ZONE)


Test = Callable[[TestClient, DirectoryEngine], Awaitable[None]]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    return url


def run(db_url: str, test: Test) -> None:
    async def main() -> None:
        db = create_engine_for(db_url)
        engine = DirectoryEngine(db)
        store = engine.directory
        await store.start()  # the access log batched, as in the engine: access() sees rows through its flush
        try:
            async with TestClient(TestServer(create_app(engine, engine.config, now=Now()))) as client:
                await test(client, engine)
        finally:
            await store.close()
            await db.dispose()

    asyncio.run(main())


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def new_elder(client: TestClient, **extra: Any) -> int:
    body = {"name": "王秀英", "number": "010-6600 1234", "id_number": ID_NUMBER, "district": "西城区",
            "community": "白纸坊社区", "living_alone": True, **extra}
    return int((await json_of(await client.post("/api/elders", json=body, headers=basic("op")), 201))["id"])


async def access(engine: DirectoryEngine) -> list[tuple[str, str, int | None]]:
    rows = await engine.directory.access_log(limit=100)
    return [(r["username"], r["action"], r["elder_id"]) for r in reversed(rows)]


# -- elders -----------------------------------------------------------------------------------------------


def test_quick_create_then_find_and_view_the_elder_with_every_look_logged(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        elder_id = await new_elder(client)
        found = await json_of(await client.get("/api/elders?q=01066001234", headers=basic("op")), 200)
        assert [e["id"] for e in found["elders"]] == [elder_id]
        assert [e["id"] for e in (await json_of(await client.get("/api/elders?q=王秀", headers=basic("aud")),
                                                200))["elders"]] == [elder_id]
        profile = await json_of(await client.get(f"/api/elders/{elder_id}", headers=basic("op")), 200)
        assert profile["name"] == "王秀英" and profile["living_alone"] is True and profile["age"] >= 80
        assert profile["id_number"] != ID_NUMBER and profile["id_number"].endswith(ID_NUMBER[-4:])
        assert profile["phones"][0]["number"] == "01066001234"
        whole = await json_of(await client.get(f"/api/elders/{elder_id}?unmask=1", headers=basic("admin")), 200)
        assert whole["id_number"] == ID_NUMBER
        assert await access(engine) == [("op", "create", elder_id), ("op", "search", None), ("aud", "search", None),
                                        ("op", "view", elder_id), ("admin", "view", elder_id)]
        # auditors read the access log over the API (an operator may not); reading it is logged too
        assert (await client.get(f"/api/access-log?elder_id={elder_id}", headers=basic("op"))).status == 403
        log = await json_of(await client.get(f"/api/access-log?elder_id={elder_id}", headers=basic("aud")), 200)
        assert [(r["username"], r["action"]) for r in log["access_log"]] == [
            ("admin", "view"), ("op", "view"), ("op", "create")]
        assert (await access(engine))[-1] == ("aud", "search", elder_id)

    run(db_url, test)


def test_elder_input_errors_name_the_field(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        op = basic("op")
        assert (await json_of(await client.post("/api/elders", json={"number": "13800138001"}, headers=op),
                              422))["field"] == "name"
        assert (await json_of(await client.post("/api/elders", json={"name": "李", "sex": "X"}, headers=op),
                              422))["field"] == "sex"
        bad_number = {"name": "李", "number": "138001380011"}
        assert (await json_of(await client.post("/api/elders", json=bad_number, headers=op), 422))["field"] == "number"
        assert (await json_of(await client.post("/api/elders", json={"name": "李", "number": 5}, headers=op),
                              422))["field"] == "number"
        assert (await client.post("/api/elders", data="name=x", headers=op)).status == 415
        assert (await client.post("/api/elders", data=b"{", headers={**op, "Content-Type": "application/json"})
                ).status == 400
        assert (await json_of(await client.get("/api/elders", headers=op), 422))["field"] == "q"
        assert (await json_of(await client.get("/api/elders?q=王&limit=0", headers=op), 422))["field"] == "limit"
        assert (await json_of(await client.get("/api/elders?q=" + "x" * 65, headers=op), 422))["field"] == "q"
        for path in ("/api/elders/999", "/api/elders/abc", "/api/elders/0", "/api/elders/999/history"):
            assert (await client.get(path, headers=op)).status == 404, path
        elder_id = await new_elder(client)
        denied = await json_of(await client.get(f"/api/elders/{elder_id}?unmask=1", headers=op), 403)
        assert denied["field"] == "unmask"

    run(db_url, test)


def test_update_an_elder(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        elder_id = await new_elder(client)
        csrf = await logged_in(client, "op")  # the browser's way: session cookie and CSRF token
        headers = {"X-CSRF-Token": csrf}
        body = await json_of(await client.patch(f"/api/elders/{elder_id}", json={"health_notes": "高血压"},
                                                headers=headers), 200)
        assert body == {"id": elder_id, "updated": ["health_notes"]}
        assert (await engine.directory.elder(elder_id))["health_notes"] == "高血压"
        assert (await client.patch(f"/api/elders/{elder_id}", json={"health_notes": "x"})).status == 403  # no CSRF
        assert (await json_of(await client.patch(f"/api/elders/{elder_id}", json={"language": "fr"},
                                                 headers=headers), 422))["field"] == "language"
        assert (await client.patch("/api/elders/999", json={"name": "x"}, headers=headers)).status == 404
        assert (await client.patch(f"/api/elders/{elder_id}", json={}, headers=headers)).status == 422
        assert (await client.patch(f"/api/elders/{elder_id}", json={"name": "x"}, headers=basic("aud"))).status == 403
        assert ("op", "update", elder_id) in await access(engine)

    run(db_url, test)


# -- records, work orders, history -----------------------------------------------------------------------


def test_a_record_from_a_call_lands_in_the_elders_history(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        elder_id = await new_elder(client)
        call = make_call("c1", caller="01066001234", emergency=True)
        call.elder_id = elder_id
        engine.ua.calls["c1"] = call
        created = await json_of(await client.post("/api/records", json={
            "call_id": "c1", "disposition": "紧急救助已派120", "notes": "老人摔倒，已派120"}, headers=basic("op")), 201)
        by_number = await json_of(await client.post("/api/records", json={
            "number": "010-66001234", "disposition": "需回访"}, headers=basic("sup")), 201)
        cdr = CdrWriter(engine.db, party_key=national)  # the call itself, as the engine's CDR writer stores it
        await cdr.start()
        cdr.submit(CallRecordData(call_id="c1", direction="inbound", started_at=dt.datetime.now(dt.UTC),
                                  from_number="+86 10 6600 1234", to_number="12349"))
        await cdr.close()
        history = await json_of(await client.get(f"/api/elders/{elder_id}/history", headers=basic("aud")), 200)
        records = {item["id"]: item for item in history["history"] if item["kind"] == "record"}
        assert set(records) == {created["id"], by_number["id"]}
        assert records[created["id"]]["call_id"] == "c1" and records[created["id"]]["operator"] == "op"
        calls = [item for item in history["history"] if item["kind"] == "call"]
        assert [(c["call_id"], c["number"], c["elder_name"]) for c in calls] == [("c1", "01066001234", "王秀英")]
        assert history["callbacks"] == [] and ("aud", "view", elder_id) in await access(engine)

    run(db_url, test)


def test_record_input_errors_name_the_field(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        op = basic("op")

        async def field_of(body: dict[str, Any]) -> str:
            return str((await json_of(await client.post("/api/records", json=body, headers=op), 422))["field"])

        assert await field_of({"elder_id": 1, "disposition": "吃饭了"}) == "disposition"
        assert await field_of({"elder_id": 1}) == "disposition"
        assert await field_of({"disposition": "误按"}) == "elder_id"
        assert await field_of({"elder_id": 99, "disposition": "误按"}) == "elder_id"
        assert await field_of({"elder_id": "x", "disposition": "误按"}) == "elder_id"
        assert await field_of({"number": "abc", "disposition": "误按"}) == "number"
        assert await field_of({"number": "13800138001", "disposition": "误按", "notes": "x" * 2001}) == "notes"
        assert await field_of({"number": "13800138001", "disposition": "误按", "mood": "ok"}) == "mood"
        assert (await client.post("/api/records", json={"number": "13800138001", "disposition": "误按"},
                                  headers=basic("aud"))).status == 403

    run(db_url, test)


def test_work_orders_from_creation_to_done(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        elder_id = await new_elder(client)
        op = basic("op")
        due = (dt.datetime.now(ZONE) + dt.timedelta(hours=4)).replace(microsecond=0, tzinfo=None).isoformat()
        created = await json_of(await client.post("/api/work-orders", json={
            "elder_id": elder_id, "call_id": "c1", "type": "上门探视", "assignee": "白纸坊养老驿站", "due_at": due,
            "notes": "独居老人摔倒后回访"}, headers=op), 201)
        listed = await json_of(await client.get(f"/api/work-orders?elder_id={elder_id}&status=open", headers=op), 200)
        (order,) = listed["work_orders"]
        assert order["id"] == created["id"] and order["assignee"] == "白纸坊养老驿站" and order["status"] == "open"
        assert dt.datetime.fromisoformat(order["due_at"]) == dt.datetime.fromisoformat(due).replace(tzinfo=ZONE)
        path = f"/api/work-orders/{created['id']}"
        moved = await json_of(await client.patch(path, json={"status": "in_progress"}, headers=op), 200)
        assert moved["status"] == "in_progress"
        done = await json_of(await client.patch(path, json={"status": "done", "feedback": "已上门，老人无恙"},
                                                headers=op), 200)
        assert done["status"] == "done" and done["feedback"] == "已上门，老人无恙"
        back = await json_of(await client.patch(path, json={"status": "open"}, headers=op), 422)
        assert back["field"] == "status"
        assert (await client.patch("/api/work-orders/999", json={"status": "done"}, headers=op)).status == 404
        assert (await json_of(await client.get("/api/work-orders?status=done", headers=op), 200))["work_orders"]
        assert (await client.get("/api/work-orders", headers=basic("aud"))).status == 403

    run(db_url, test)


def test_work_order_input_errors_name_the_field(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        elder_id = await new_elder(client)
        op = basic("op")
        good = {"elder_id": elder_id, "type": "维修", "assignee": "物业", "due_at": "2030-01-01T09:00"}

        async def field_of(body: dict[str, Any], method: str = "POST", path: str = "/api/work-orders") -> str:
            response = await client.request(method, path, json=body, headers=op)
            return str((await json_of(response, 422))["field"])

        assert await field_of({**good, "type": "打扫"}) == "type"
        assert await field_of({**good, "assignee": ""}) == "assignee"
        assert await field_of({**good, "due_at": "tomorrow"}) == "due_at"
        assert await field_of({k: v for k, v in good.items() if k != "due_at"}) == "due_at"
        assert await field_of({**good, "elder_id": 999}) == "elder_id"
        assert await field_of({**good, "elder_id": None}) == "elder_id"
        assert await field_of({**good, "priority": 1}) == "priority"
        order = await json_of(await client.post("/api/work-orders", json=good, headers=op), 201)
        path = f"/api/work-orders/{order['id']}"
        assert await field_of({}, "PATCH", path) == "status"
        assert await field_of({"status": "finished"}, "PATCH", path) == "status"
        assert await field_of({"feedback": 5}, "PATCH", path) == "feedback"
        assert (await json_of(await client.get("/api/work-orders?status=x", headers=op), 422))["field"] == "status"
        assert (await json_of(await client.get("/api/work-orders?elder_id=x", headers=op), 422))["field"] \
            == "elder_id"

    run(db_url, test)


def test_history_search_by_words_and_dates(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        elder_id = await new_elder(client)
        await json_of(await client.post("/api/records", json={"elder_id": elder_id, "disposition": "咨询已解答",
                                                              "notes": "询问助餐服务"}, headers=basic("op")), 201)
        today = dt.datetime.now(ZONE).date()
        found = await json_of(await client.get(f"/api/history?q=助餐&since={today}&until={today}",
                                               headers=basic("aud")), 200)
        assert [i["notes"] for i in found["history"]] == ["询问助餐服务"]
        assert found["history"][0]["elder_name"] == "王秀英"
        tomorrow = today + dt.timedelta(days=1)
        assert (await json_of(await client.get(f"/api/history?since={tomorrow}", headers=basic("op")),
                              200))["history"] == []
        assert (await json_of(await client.get("/api/history?since=01/03/2025", headers=basic("op")), 422))["field"] \
            == "since"
        assert (await json_of(await client.get(f"/api/history?since={today}&until={today - dt.timedelta(days=2)}",
                                               headers=basic("op")), 422))["field"] == "until"
        assert ("aud", "search", None) in await access(engine)

    run(db_url, test)


# -- the screen pop as the desktop builds it ---------------------------------------------------------------


class BrokenDirectory:
    async def pop_parts(self, **kwargs: Any) -> Any:
        raise OSError("database is gone")


def test_the_desktop_pop_joins_the_directory_and_the_open_callbacks(db_url: str):
    async def test(client: TestClient, engine: DirectoryEngine) -> None:
        elder_id = await new_elder(client)
        await json_of(await client.post("/api/records", json={"elder_id": elder_id, "disposition": "误按"},
                                        headers=basic("op")), 201)
        tasks = CallbackTasks(engine.db)
        task_id = await tasks.create(number="01066001234", call_id="c0", elder_id=None, reason="hung up",
                                     source="abandoned", due_at=dt.datetime.now(dt.UTC), queue="emergency")
        call = make_call("c1", caller="01066001234", emergency=True)
        call.button = "emergency"
        engine.ua.calls["c1"] = call
        build = directory_builder(engine)
        pop = await build(call_facts(engine, "c1", queue="emergency", priority="emergency"))
        assert pop["unknown"] is False and pop["elder"]["id"] == elder_id and pop["elder"]["name"] == "王秀英"
        assert pop["call"]["button_label"] == "紧急呼叫" and pop["call"]["did"] == "12349"
        assert [r["disposition"] for r in pop["records"]] == ["误按"]
        assert [(c["id"], c["reason"]) for c in pop["callbacks"]] == [(task_id, "hung up")]
        history = await json_of(await client.get(f"/api/elders/{elder_id}/history", headers=basic("op")), 200)
        assert [c["id"] for c in history["callbacks"]] == [task_id]
        assert [(i["kind"], i["id"], i["state"]) for i in history["history"] if i["kind"] == "callback"] == [
            ("callback", task_id, "open")]
        unknown = await build(call_facts(engine, "c2", number="13900139000"))
        assert unknown["unknown"] is True and unknown["elder"] is None and unknown["callbacks"] == []
        engine.directory = BrokenDirectory()  # the offer still goes out: unknown caller, and why
        broken = await build(call_facts(engine, "c1"))
        assert broken["unknown"] is True and "directory" in broken["error"] and len(broken["callbacks"]) == 1

    run(db_url, test)
