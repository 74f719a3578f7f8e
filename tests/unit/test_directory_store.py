"""The directory in the database: the IVR's lookup, profiles and masking, writes and their validation, search,
service records, work orders, history, the access log, the seed at first start."""

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcenter.directory.lookup import SeedError, prepare, read_seed
from callcenter.directory.store import DirectoryInputError, DirectoryStore
from callcenter.directory.validation import id_check_digit
from callcenter.ivr.context import CallerProfile
from callcenter.store.db import create_engine_for, run_migrations

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)  # 10:00 in Beijing
BUTTONS = {"12349": "emergency", "12340": "family"}
PROFILE_KEYS = {"id", "name", "title", "sex", "age", "birth_date", "id_number", "language", "living_alone",
                "health_notes", "care_level", "address", "location", "phones", "terminals", "contacts", "created_at",
                "updated_at"}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def id_number(first17: str) -> str:
    return first17 + id_check_digit(first17)


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}"
    run_migrations(url)
    return url


def make_store(url: str, **options) -> DirectoryStore:  # type: ignore[no-untyped-def]
    options.setdefault("zone", ZoneInfo("Asia/Shanghai"))
    return DirectoryStore(create_engine_for(url), buttons=BUTTONS, now=lambda: NOW, **options)


@pytest.fixture
def seeded(url: str) -> Iterator[str]:
    async def fill() -> None:
        store = make_store(url)
        assert await prepare(store, seed=REPO / "config" / "demo_elders.yaml") == 6
        assert await prepare(store, seed=REPO / "config" / "demo_elders.yaml", generate=10) == 0  # not empty
        await store.db.dispose()

    run(fill())
    yield url


def test_lookup_gives_the_ivr_its_caller(seeded: str) -> None:
    async def main() -> None:
        store = make_store(seeded)
        for written in ("13800138001", "+86 138 0013 8001", "0086-138-0013-8001", "010-62345678", "+861062345678"):
            profile = await store.lookup(written)
            assert profile == CallerProfile(known=True, elder_id=1, name="王秀英", surname="王", title="王奶奶",
                                            language="cmn", living_alone=True, family_numbers=("13900139001",))
        chen = await store.lookup("13800138002")
        assert (chen.elder_id, chen.language, chen.title) == (2, "yue", "陈伯")
        assert chen.family_numbers == ("13900139002", "13900139012")  # contacts, in order
        assert (await store.lookup("1001")).elder_id == 3  # an extension kept as digits
        assert await store.lookup("62345678") == CallerProfile()  # no area code configured
        assert await store.lookup("17700000000") == CallerProfile()
        assert await store.lookup("") == CallerProfile() and await store.lookup("anonymous") == CallerProfile()
        assert store.recent("+86 138 0013 8001").elder_id == 1 and store.recent("13800138009") is None
        assert await store.elder_id_for("138-0013-8005") == 5 and await store.elder_id_for("13900139001") is None
        await store.db.dispose()
        local = make_store(seeded, area_code="010")
        assert (await local.lookup("62345678")).elder_id == 1
        await local.db.dispose()

    run(main())


def test_the_profile_has_the_pop_shape_and_masks_the_id_number(seeded: str) -> None:
    async def main() -> None:
        store = make_store(seeded)
        elder = await store.elder(1)
        assert elder is not None and set(elder) == PROFILE_KEYS
        assert elder["id_number"] == "110102********1248" and elder["age"] == 82
        assert (await store.elder(1, unmask=True))["id_number"] == "110102194305011248"
        assert elder["address"] == {"district": "西城区", "street": "德胜街道", "community": "新康社区",
                                    "detail": "新康3号楼2单元502室",
                                    "text": "西城区德胜街道新康社区新康3号楼2单元502室"}
        assert elder["location"] == {"lat": 39.9496, "lon": 116.3745}
        assert elder["phones"] == [{"number": "13800138001", "kind": "terminal", "display": "138 0013 8001"},
                                   {"number": "01062345678", "kind": "home", "display": "010 6234 5678"}]
        (terminal,) = elder["terminals"]
        assert terminal["buttons"] == BUTTONS  # none in the seed: the center's button numbers
        assert (terminal["type"], terminal["installed"], terminal["battery"]) == ("一键呼座机", "2024-03-01", "ok")
        assert [c["name"] for c in (await store.elder(5))["contacts"]] == ["刘建国", "王海燕", "刘洋"]
        assert [c["order"] for c in (await store.elder(5))["contacts"]] == [1, 2, 3]
        assert (await store.elder(2))["terminals"][0]["battery"] == "low"
        assert await store.elder(999) is None
        assert await store.count() == 6
        await store.db.dispose()

    run(main())


def test_create_and_update_validate_every_field(url: str) -> None:
    async def main() -> None:
        store = make_store(url)
        elder_id = await store.create_elder({"name": "周玉兰", "number": "+86 139 1234 5678", "sex": "女",
                                             "address": {"district": "东城区", "detail": "东四十条3号"}})
        elder = await store.elder(elder_id)
        assert elder is not None and elder["title"] == "周奶奶" and elder["address"]["district"] == "东城区"
        assert elder["phones"] == [{"number": "13912345678", "kind": "mobile", "display": "139 1234 5678"}]
        bad = [({"name": ""}, "name"), ({"name": "x", "number": "12-34-5a"}, "phones"),
               ({"name": "x", "id_number": "110102194305011249"}, "id_number"),
               ({"name": "x", "birth_date": "1943-02-30"}, "birth_date"),
               ({"name": "x", "language": "klingon"}, "language"), ({"name": "x", "sex": "?"}, "sex"),
               ({"name": "x", "lat": 39.9}, "lon"), ({"name": "x", "foo": 1}, "foo"),
               ({"name": "x", "contacts": "张三:儿子"}, "contacts"),
               ({"name": "x", "id_number": id_number("11010219430501124"), "birth_date": "1950-01-01"}, "birth_date"),
               ({"name": "x", "id_number": id_number("11010219430501124"), "sex": "M"}, "sex"),
               ({"name": "x", "terminal": {"battery": "empty"}}, "terminal"),
               ({"name": "x", "birth_date": "2030-01-01"}, "birth_date")]
        for data, field in bad:
            with pytest.raises(DirectoryInputError) as caught:
                await store.create_elder(data)
            assert caught.value.field == field, (data, caught.value)
            assert caught.value.zh and caught.value.message
        first = await store.create_elder({"name": "甲", "id_number": id_number("11010119400101002")})
        with pytest.raises(DirectoryInputError) as caught:
            await store.create_elder({"name": "乙", "id_number": id_number("11010119400101002")})
        assert caught.value.field == "id_number"
        await store.update_elder(first, {"id_number": id_number("11010119450303003"), "phones": ["010-64012345"],
                                         "contacts": [{"name": "甲子", "relation": "儿子", "number": "13912340000"}],
                                         "living_alone": "是", "terminal": "智能手表:SN1:2025-01-02"})
        changed = await store.elder(first, unmask=True)
        assert changed is not None
        assert (changed["birth_date"], changed["sex"], changed["living_alone"]) == ("1945-03-03", "M", True)
        assert [p["number"] for p in changed["phones"]] == ["01064012345"]
        assert [(c["name"], c["number"]) for c in changed["contacts"]] == [("甲子", "13912340000")]
        assert [(t["type"], t["serial"], t["buttons"]) for t in changed["terminals"]] == [("智能手表", "SN1", BUTTONS)]
        await store.update_elder(first, {"phones": []})
        assert (await store.elder(first))["phones"] == []
        with pytest.raises(KeyError):
            await store.update_elder(999, {"name": "nobody"})
        with pytest.raises(DirectoryInputError):
            await store.update_elder(first, {"birth_date": "1950-01-01"})  # disagrees with the ID number
        await store.db.dispose()

    run(main())


def test_search_by_name_number_id_tail_and_address(seeded: str) -> None:
    async def main() -> None:
        store = make_store(seeded)

        async def ids(q: str, limit: int = 20) -> list[int]:
            return [e["id"] for e in await store.search(q, limit)]

        assert await ids("王") == [1] and await ids("王秀英") == [1]
        assert set(await ids("刘")) == {5}  # 王海燕 is a contact, not an elder
        assert await ids("秀英") == [1]  # anywhere in the name
        assert await ids("+86 138-0013-8004") == [4] and await ids("010-8234 5678") == [4]
        assert await ids("1380013800") == [1, 2, 3, 4, 5, 6]  # the start of numbers, from 7 digits
        assert await ids("1380013800", limit=2) == [1, 2]
        assert await ids("1248") == [1] and await ids("011248") == [1] and await ids("042X") == [5]
        assert await ids("110102194305011248") == [1]
        assert await ids("朝阳区 金台") == [2] and await ids("菊儿胡同") == [5]
        assert await ids("nobody") == [] and await ids("   ") == [] and await ids("%") == []
        summary = (await store.search("王秀英"))[0]
        assert summary["id_number"] == "110102********1248" and summary["phones"][0]["number"] == "13800138001"
        assert "terminals" not in summary and "contacts" not in summary
        await store.db.dispose()

    run(main())


def test_records_work_orders_and_history(seeded: str) -> None:
    async def main() -> None:
        store = make_store(seeded)
        first = await store.add_record(elder_id=None, number="+86 13800138001", call_id="c1", operator="op1",
                                       disposition="咨询", notes="问助餐")
        await store.add_record(elder_id=None, number="17700000000", call_id="c2", operator="op2",
                               disposition="误按", notes="unknown caller", direction="callback")
        records = await store.records(1)
        assert [r["id"] for r in records] == [first] and records[0]["elder_id"] == 1
        assert records[0]["at"] == "2026-03-01T02:00:00+00:00" and records[0]["number"] == "13800138001"
        with pytest.raises(DirectoryInputError) as caught:
            await store.add_record(elder_id=1, number=None, call_id=None, operator="op1", disposition="", notes="")
        assert caught.value.field == "disposition"
        order = await store.create_work_order(elder_id=1, call_id="c1", type="助餐", assignee="德胜养老驿站",
                                              due_at="2026-03-02T12:00", notes="午餐", created_by="op1")
        assert (await store.work_orders(elder_id=1))[0]["due_at"] == "2026-03-02T04:00:00+00:00"  # Beijing time
        assert await store.work_orders(status="done") == []
        moved = await store.update_work_order(order, status="in_progress")
        assert moved["status"] == "in_progress" and moved["closed_at"] is None
        done = await store.update_work_order(order, status="done", feedback="已送达")
        assert (done["status"], done["feedback"], done["closed_at"]) == ("done", "已送达", "2026-03-01T02:00:00+00:00")
        with pytest.raises(DirectoryInputError) as caught:
            await store.update_work_order(order, status="open")
        assert caught.value.field == "status"
        with pytest.raises(KeyError):
            await store.update_work_order(999, status="done")
        with pytest.raises(DirectoryInputError):
            await store.create_work_order(elder_id=1, call_id=None, type="x", assignee="", due_at="tomorrow",
                                          notes="", created_by="op1")
        history = await store.history(elder_id=1)
        assert [(h["kind"], h["elder_name"]) for h in history] == [("record", "王秀英"), ("work_order", "王秀英")]
        assert [h["kind"] for h in await store.history(q="助餐")] == ["record", "work_order"]
        assert [h["call_id"] for h in await store.history(q="王秀英")] == ["c1", "c1"]
        assert [h["call_id"] for h in await store.history(q="17700000000")] == ["c2"]
        assert [h["call_id"] for h in await store.history(q="010-62345678")] == ["c1", "c1"]
        assert await store.history(since="2026-03-02T00:00:00+00:00") == []
        assert len(await store.history(until=NOW + dt.timedelta(seconds=1))) == 3
        await store.db.dispose()

    run(main())


def test_access_log_rows(seeded: str) -> None:
    async def main() -> None:
        store = make_store(seeded)
        await store.log_access(username="op1", role="operator", action="view", elder_id=1)
        await store.log_access(username="admin", role="admin", action="export", detail="all.csv")
        with pytest.raises(DirectoryInputError):
            await store.log_access(username="op1", role="operator", action="peek")
        rows = await store.access_log()
        assert [(r["username"], r["action"], r["elder_id"], r["detail"]) for r in rows] == [
            ("admin", "export", None, "all.csv"), ("op1", "view", 1, "")]
        assert (await store.access_log(elder_id=1))[0]["at"] == "2026-03-01T02:00:00+00:00"
        await store.db.dispose()

    run(main())


def test_a_broken_or_slow_database_makes_every_caller_unknown(tmp_path: Path, seeded: str) -> None:
    async def main() -> None:
        store = make_store(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # never migrated: no tables
        assert await store.lookup("13800138001") == CallerProfile()
        await store.db.dispose()
        slow = make_store(seeded, lookup_timeout=0.05)
        assert (await slow.lookup("13800138001")).elder_id == 1

        async def stuck(key: str) -> CallerProfile:
            await asyncio.sleep(5)
            raise AssertionError("not reached")

        slow._lookup = stuck  # type: ignore[method-assign]
        started = asyncio.get_running_loop().time()
        assert await slow.lookup("13800138001") == CallerProfile()
        assert asyncio.get_running_loop().time() - started < 1
        await slow.db.dispose()

    run(main())


def test_seed_problems_are_listed_with_their_place(tmp_path: Path, url: str) -> None:
    seed = tmp_path / "elders.yaml"
    seed.write_text("elders:\n  - {id: 1, name: 甲, numbers: ['abc']}\n  - {id: x, name: 乙}\n"
                    "  - {name: '', family_numbers: ['13900139001']}\n", encoding="utf-8")
    store = make_store(url)
    with pytest.raises(SeedError) as caught:
        read_seed(seed, store)
    lines = str(caught.value).splitlines()
    assert f"{seed}: elders[0].phones: 'abc' is not a phone number (digits with an optional leading +)" in lines
    assert f"{seed}: elders[1].id: expected a whole number from 1" in lines
    assert f"{seed}: elders[2].name: a name is required" in lines and f"  {seed}: elders[2].name: 必须填写姓名" in lines
    seed.write_text("elders:\n  - {id: 7, name: 甲, numbers: ['13800138001'], family_numbers: ['13900139001']}\n",
                    encoding="utf-8")

    async def main() -> None:
        assert await prepare(store, seed=seed, generate=3) == 4
        assert (await store.lookup("13800138001")).family_numbers == ("13900139001",)
        assert [e["id"] for e in await store.search("甲")] == [7]
        assert await store.count() == 4  # generated ones follow with ids 8, 9, 10
        assert await store.elder(10) is not None
        await store.db.dispose()

    run(main())


def test_directory_configuration() -> None:
    from callcenter.config import ConfigError, DirectoryConfig, load_config
    from callcenter.directory.lookup import terminal_buttons

    config = load_config(REPO / "config" / "callcenter.yaml", env={})
    assert (config.directory.seed, config.directory.generate) == (Path("config/demo_elders.yaml"), 500)
    assert (config.directory.region, config.directory.area_code) == ("CN", "010")
    buttons = terminal_buttons(config)
    assert buttons["12349"] == "emergency" and buttons["12347"] == "taxi"
    assert "1000" not in buttons and "12345" not in buttons and "9196" not in buttons  # hotline, echo: no buttons
    assert DirectoryConfig.model_validate({"file": "x.yaml"}).seed == Path("x.yaml")  # the older key
    assert DirectoryConfig.model_validate({"file": None}).seed == Path("config/demo_elders.yaml")  # null: default
    with pytest.raises(ConfigError, match="older name"):
        load_config(REPO / "config" / "callcenter.yaml", env={}, overrides={"directory": {"file": "x.yaml"}})
    assert load_config(None, env={}, overrides={"directory": {"seed": ""}}).directory.seed is None
    for key, value in (("region", "XX"), ("area_code", "abc"), ("generate", -1)):
        with pytest.raises(ConfigError, match=f"directory.{key}"):
            load_config(None, env={}, overrides={"directory": {key: value}})
