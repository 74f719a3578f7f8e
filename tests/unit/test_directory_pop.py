"""The screen pop: the POP shape of docs/desktop.md for a known elder and for an unknown caller."""

import asyncio
import datetime as dt
from pathlib import Path

from callcenter.directory.lookup import prepare
from callcenter.directory.pop import build_pop, button_label
from callcenter.directory.store import DirectoryStore
from callcenter.store.db import create_engine_for, run_migrations

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
CALL_KEYS = {"call_id", "direction", "caller_number", "did", "button", "button_label", "ivr_path", "digits", "queue",
             "priority", "emergency", "offered_at"}
OFFER = {"call_id": "c-1", "direction": "inbound", "caller_number": "+86 138 0013 8001", "did": "12349",
         "button": "emergency", "ivr_path": ["terminal:start", "terminal:emergency"], "digits": "",
         "queue": "emergency", "priority": "emergency", "emergency": True, "offered_at": NOW.timestamp()}


def pops(tmp_path: Path) -> tuple[dict, dict, dict]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}"
    run_migrations(url)

    async def main() -> tuple[dict, dict, dict]:
        store = DirectoryStore(create_engine_for(url), now=lambda: NOW)
        await prepare(store, seed=REPO / "config" / "demo_elders.yaml")
        for n in range(12):
            await store.add_record(elder_id=1, number=None, call_id=f"r{n}", operator="op1", disposition="咨询",
                                   notes=f"#{n}")
        await store.add_record(elder_id=None, number="17700000000", call_id="u1", operator="op1",
                               disposition="误按", notes="")
        orders = [await store.create_work_order(elder_id=1, call_id=None, type=t, assignee="德胜养老驿站",
                                                due_at=NOW, notes="", created_by="op1")
                  for t in ("助餐", "探访", "维修")]
        await store.update_work_order(orders[1], status="in_progress")
        await store.update_work_order(orders[2], status="cancelled")
        known = await build_pop(store, call=OFFER, callbacks=[{"id": 4, "reason": "missed", "due_at": None,
                                                               "attempts": 0}])
        unknown = await build_pop(store, call={"call_id": "c-2", "caller_number": "177-0000-0000",
                                               "direction": "callback", "button": "taxi"})
        by_id = await build_pop(store, call={"call_id": "c-3", "caller_number": "", "elder_id": 2,
                                             "direction": "outbound"})
        await store.db.dispose()
        return known, unknown, by_id

    return asyncio.run(main())


def test_pop_of_a_known_elder_and_of_an_unknown_caller(tmp_path: Path) -> None:
    known, unknown, by_id = pops(tmp_path)
    assert set(known) == {"call", "unknown", "elder", "records", "work_orders", "callbacks"}
    assert set(known["call"]) == CALL_KEYS
    assert known["call"] | {"offered_at": None} == {**OFFER, "button_label": "紧急呼叫", "offered_at": None}
    assert known["call"]["offered_at"] == "2026-03-01T02:00:00+00:00"
    assert known["unknown"] is False and known["elder"]["id"] == 1 and known["elder"]["name"] == "王秀英"
    assert known["elder"]["id_number"] == "110102********1248"
    assert known["elder"]["contacts"][0]["number"] == "13900139001"
    assert [r["call_id"] for r in known["records"]] == [f"r{n}" for n in range(11, 1, -1)]  # the last 10, newest first
    assert set(known["records"][0]) >= {"id", "at", "operator", "disposition", "notes", "call_id"}
    assert [(o["type"], o["status"]) for o in known["work_orders"]] == [("探访", "in_progress"), ("助餐", "open")]
    assert set(known["work_orders"][0]) >= {"id", "type", "assignee", "due_at", "status", "notes"}
    assert known["callbacks"] == [{"id": 4, "reason": "missed", "due_at": None, "attempts": 0}]

    assert unknown["unknown"] is True and unknown["elder"] is None and unknown["work_orders"] == []
    assert [r["call_id"] for r in unknown["records"]] == ["u1"]  # what was written about this number
    assert unknown["call"]["direction"] == "callback" and unknown["call"]["button_label"] == "一键叫车"
    assert unknown["call"]["emergency"] is False and unknown["call"]["priority"] == "normal"
    assert unknown["call"]["ivr_path"] == [] and unknown["call"]["did"] is None
    assert by_id["elder"]["name"] == "陈志强" and by_id["call"]["direction"] == "outbound"


def test_button_labels() -> None:
    assert [button_label(b) for b in ("emergency", "family", "care_center", "care_station", "committee", "property",
                                      "complaint", "taxi", "broadcast")] == [
        "紧急呼叫", "亲情电话", "养老服务", "养老驿站", "居委会", "物业", "咨询投诉", "一键叫车", "广播"]
    assert button_label(None) == "" and button_label("custom") == "custom"
