"""Service history with every kind (callcenter.directory.history): calls found by the elder's numbers however the
carrier wrote them (the CDR writer's normalised ``party_number``), records, work orders, callbacks; migration
0005 filling ``party_number`` and ``search_text`` of rows already there; the "anywhere" search kept current."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from callcenter.directory.lookup import prepare
from callcenter.directory.numbers import national
from callcenter.directory.store import DirectoryStore
from callcenter.store.cdr import CallRecordData, CdrWriter
from callcenter.store.db import create_engine_for, run_migrations
from callcenter.store.models import CallbackTask

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return NOW + dt.timedelta(minutes=minutes)


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}"
    run_migrations(url)
    return url


def make_store(url: str, clock: list[dt.datetime]) -> DirectoryStore:
    return DirectoryStore(create_engine_for(url), zone=ZoneInfo("Asia/Shanghai"), now=lambda: clock[0])


def call(call_id: str, minutes: int, *, direction: str = "inbound", caller: str = "", dialled: str = "12349",
         talk: float | None = 42.0) -> CallRecordData:
    answered = at(minutes) + dt.timedelta(seconds=3) if talk is not None else None
    ended = (answered + dt.timedelta(seconds=talk)) if answered is not None and talk is not None else at(minutes + 1)
    return CallRecordData(call_id=call_id, direction=direction, started_at=at(minutes), from_number=caller,
                          to_number=dialled, answered_at=answered, ended_at=ended,
                          end_reason="caller_bye" if talk is not None else "cancelled")


async def fill(url: str, clock: list[dt.datetime]) -> DirectoryStore:
    store = make_store(url, clock)
    assert await prepare(store, seed=REPO / "config" / "demo_elders.yaml") == 6
    cdr = CdrWriter(store.db, party_key=functools.partial(national, region="CN", area_code="010"))
    await cdr.start()
    cdr.submit(call("in-terminal", 1, caller="+86 138 0013 8001"))  # 王秀英's terminal, as a carrier writes it
    cdr.submit(call("in-home-local", 3, caller="62345678", talk=None))  # her home line without the area code
    cdr.submit(call("out-home", 5, direction="outbound", caller="12349", dialled="010-6234 5678"))  # we call her
    cdr.submit(call("in-chen", 6, caller="13800138002"))  # another elder
    cdr.submit(call("in-stranger", 7, caller="17700000000"))
    await cdr.close()
    async with store.db.begin() as conn:
        await conn.execute(insert(CallbackTask), [
            {"call_id": "in-home-local", "number": "62345678", "elder_id": 1, "reason": "abandoned",
             "source": "abandoned", "state": "open", "due_at": at(4), "created_at": at(4), "closed_at": None,
             "outcome": None},
            {"call_id": None, "number": "13800138001", "elder_id": None, "reason": "requested", "source": "ivr",
             "state": "completed", "due_at": at(0), "created_at": at(0), "closed_at": at(2),
             "outcome": "reached"},
            {"call_id": "in-chen", "number": "13800138002", "elder_id": 2, "reason": "missed", "source": "missed",
             "state": "open", "due_at": at(7), "created_at": at(6) + dt.timedelta(seconds=50), "closed_at": None,
             "outcome": None}])
    clock[0] = at(2)
    await store.add_record(elder_id=None, number="13800138001", call_id="in-terminal", operator="op1",
                           disposition="咨询", notes="问助餐")
    clock[0] = at(8)
    await store.create_work_order(elder_id=1, call_id="in-terminal", type="助餐", assignee="德胜养老驿站",
                                  due_at=at(60), notes="午餐", created_by="u1")
    return store


def test_an_elders_history_has_every_kind_newest_first(url: str) -> None:
    async def main() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        store = await fill(url, [NOW])
        items = await store.history(elder_id=1)
        window = await store.history(elder_id=1, since=at(3), until=at(6))
        await store.db.dispose()
        return items, window

    items, window = asyncio.run(main())
    assert [(i["kind"], i.get("call_id")) for i in items] == [
        ("work_order", "in-terminal"), ("call", "out-home"), ("callback", "in-home-local"),
        ("call", "in-home-local"), ("record", "in-terminal"), ("call", "in-terminal"), ("callback", None)]
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    assert all(i["elder_id"] == 1 and i["elder_name"] == "王秀英" for i in items)
    first_call = items[-2]
    assert first_call == {
        "kind": "call", "id": first_call["id"], "at": "2026-03-01T02:01:00+00:00", "call_id": "in-terminal",
        "direction": "inbound", "number": "13800138001", "from_number": "+86 138 0013 8001", "to_number": "12349",
        "answered": True, "answered_at": "2026-03-01T02:01:03+00:00", "ended_at": "2026-03-01T02:01:45+00:00",
        "duration": 42.0, "end_reason": "caller_bye", "elder_id": 1, "elder_name": "王秀英"}
    missed = items[3]
    assert (missed["number"], missed["answered"], missed["duration"]) == ("01062345678", False, None)
    assert items[1]["number"] == "01062345678" and items[1]["direction"] == "outbound"
    callback = items[2]
    assert {k: callback[k] for k in ("number", "reason", "source", "state", "due_at", "attempts")} == {
        "number": "62345678", "reason": "abandoned", "source": "abandoned", "state": "open",
        "due_at": "2026-03-01T02:04:00+00:00", "attempts": 0}
    assert items[-1]["state"] == "completed" and items[-1]["outcome"] == "reached"  # found by its number
    assert [(i["kind"], i.get("call_id")) for i in window] == [
        ("call", "out-home"), ("callback", "in-home-local"), ("call", "in-home-local")]


def test_a_number_search_lists_its_calls_and_a_word_search_does_not(url: str) -> None:
    async def main() -> dict[str, list[dict[str, object]]]:
        store = await fill(url, [NOW])
        found = {q: await store.history(q=q) for q in ("138-0013-8002", "17700000000", "助餐", "")}
        found["limit"] = await store.history(elder_id=1, limit=2)
        await store.db.dispose()
        return found

    found = asyncio.run(main())
    chen = found["138-0013-8002"]
    assert [(i["kind"], i["call_id"], i["elder_name"]) for i in chen] == [
        ("callback", "in-chen", "陈志强"), ("call", "in-chen", "陈志强")]
    stranger = found["17700000000"]
    assert [(i["kind"], i["elder_id"], i["elder_name"]) for i in stranger] == [("call", None, None)]
    assert {i["kind"] for i in found["助餐"]} == {"record", "work_order"}
    assert {i["kind"] for i in found[""]} == {"record", "work_order"}  # dates or nothing: no call list
    assert [i["kind"] for i in found["limit"]] == ["work_order", "call"]


def test_migration_0005_fills_party_numbers_and_search_text_of_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    run_migrations(url, "0004")
    with sqlite3.connect(path) as conn:
        conn.executemany("insert into call_records (call_id, direction, from_number, to_number, started_at) "
                         "values (?, ?, ?, ?, '2025-03-01 08:00:00')", [
                             ("c1", "inbound", "+86 138 0013 8001", "12349"),
                             ("c2", "outbound", "12349", "010-6234 5678"),
                             ("c3", "inbound", None, "12349")])
        conn.execute("insert into elders (name, district, street, community, address, created_at, updated_at) "
                     "values ('王秀英', '西城区', '德胜街道', '新康社区', '3号楼', '2025-03-01', '2025-03-01')")
    run_migrations(url)
    with sqlite3.connect(path) as conn:
        assert conn.execute("select call_id, party_number from call_records order by id").fetchall() == [
            ("c1", "13800138001"), ("c2", "01062345678"), ("c3", None)]
        assert conn.execute("select search_text from elders").fetchall() == [("王秀英 西城区德胜街道新康社区3号楼",)]
        indexes = {row[1] for row in conn.execute("select * from sqlite_master where type = 'index'")}
    assert {"ix_call_records_party_number_started_at", "ix_callback_tasks_elder_id", "ix_elders_search_text"} <= indexes


def test_anywhere_search_follows_every_kind_of_write(url: str) -> None:
    async def main() -> dict[str, list[int]]:
        store = make_store(url, [NOW])
        await prepare(store, seed=REPO / "config" / "demo_elders.yaml")

        async def ids(q: str) -> list[int]:
            return [e["id"] for e in await store.search(q)]

        found = {"before": await ids("新康3号楼")}
        await store.update_elder(1, {"address": {"detail": "安德里9号楼"}})  # one field of the address
        found["moved"], found["old"] = await ids("安德里9号"), await ids("新康3号楼")
        new = await store.create_elder({"name": "赵桂兰", "number": "13700137000", "district": "东城区",
                                        "street": "交道口街道", "address": "菊儿胡同41号"})
        found["created"] = await ids("交道口 菊儿胡同41")
        inputs = [store_input(store, name="赵桂兰", phones=["13700137000"], community="南锣社区")]
        await store.write_inputs(inputs)  # the importer: matched by name and number, one field updated
        found["imported"] = await ids("南锣社区")
        found["new"] = [new]
        await store.db.dispose()
        return found

    found = asyncio.run(main())
    assert found["before"] == [1] and found["moved"] == [1] and found["old"] == []
    assert found["created"] == found["new"] and found["imported"] == found["new"]


def store_input(store: DirectoryStore, **data: object):  # type: ignore[no-untyped-def]
    from callcenter.directory.validation import validate_elder

    return validate_elder(data, region=store.region, area_code=store.area_code, today=store.today())
