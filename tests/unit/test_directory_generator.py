"""The demo-data generator: reproducible, valid (ID check digits, numbers), no collisions, realistic shares."""

import asyncio
import datetime as dt
import re
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from callcenter.directory.generator import DISTRICTS, generate
from callcenter.directory.lookup import prepare
from callcenter.directory.models import Contact, Elder, ElderPhone, ServiceRecord, Terminal, WorkOrder
from callcenter.directory.numbers import normalise
from callcenter.directory.store import DirectoryStore
from callcenter.directory.validation import age_on, id_birth_date, id_check_digit, id_sex
from callcenter.store.db import create_engine_for, run_migrations

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
BUTTONS = {"12349": "emergency", "12341": "care_center"}
DEMO = {"13800138001", "01062345678", "13800138002", "13800138003", "1001", "13900139001", "13900139002",
        "13900139012"}


def dump(tmp_path: Path, name: str, count: int, seed: int, *, with_demo: bool = False) -> dict[str, list[tuple]]:
    url = f"sqlite+aiosqlite:///{tmp_path / name}"
    run_migrations(url)

    async def main() -> dict[str, list[tuple]]:
        store = DirectoryStore(create_engine_for(url), now=lambda: NOW, buttons=BUTTONS)
        if with_demo:
            await prepare(store, seed=REPO / "config" / "demo_elders.yaml")
        assert await generate(store, count, seed=seed) == count
        tables = {}
        async with store.db.connect() as conn:
            for model in (Elder, ElderPhone, Contact, Terminal, ServiceRecord, WorkOrder):
                table = model.__table__
                rows = await conn.execute(select(table).order_by(table.c.id))
                tables[table.name] = [tuple(r) for r in rows]
        await store.db.dispose()
        return tables

    return asyncio.run(main())


def test_the_same_seed_gives_the_same_elders(tmp_path: Path) -> None:
    first, again = dump(tmp_path, "a.db", 300, seed=5), dump(tmp_path, "b.db", 300, seed=5)
    assert first == again
    other = dump(tmp_path, "c.db", 300, seed=6)
    assert other["elders"] != first["elders"]


def test_generated_elders_are_valid_and_realistic(tmp_path: Path) -> None:
    tables = dump(tmp_path, "cc.db", 2000, seed=1, with_demo=True)
    elders = [dict(zip(Elder.__table__.columns.keys(), row, strict=True)) for row in tables["elders"]]
    generated = [e for e in elders if e["id"] > 6]
    assert len(generated) == 2000 and generated[0]["id"] == 7  # after the demo elders
    codes = {code for _, code, _, _, _ in DISTRICTS}
    today = NOW.date()
    for elder in generated:
        number = elder["id_number"]
        assert re.fullmatch(r"\d{17}[\dX]", number) and number[17] == id_check_digit(number[:17])
        assert number[:6] in codes and id_birth_date(number) == elder["birth_date"] and id_sex(number) == elder["sex"]
        assert 60 <= age_on(elder["birth_date"], today) <= 100
        assert elder["id_tail"] == number[-4:]
        assert elder["title"].startswith(elder["name"][0]) and elder["community"].endswith("社区")
    assert len({e["id_number"] for e in elders}) == len(elders)
    alone = sum(e["living_alone"] for e in generated) / len(generated)
    assert 0.25 < alone < 0.35
    assert 0 < sum(e["language"] == "yue" for e in generated) < 150
    assert Counter(e["sex"] for e in generated)["F"] > 1000

    phones = [row[2] for row in tables["elder_phones"]]
    contacts = [row[4] for row in tables["contacts"]]
    numbers = phones + contacts
    assert len(set(numbers)) == len(numbers)  # no number twice, elders' or contacts'
    assert DEMO <= set(numbers)  # the demo elders are there, and nothing generated collides with them
    made = [row[2] for row in tables["elder_phones"] if row[1] > 6]
    made += [row[4] for row in tables["contacts"] if row[1] > 6]
    assert not any(n.startswith(("138", "139")) for n in made)  # the ranges of the demo data and the tests
    assert all(normalise(n) == n for n in numbers)  # valid numbers, already in key form
    owners = Counter(row[1] for row in tables["elder_phones"])
    assert all(owners[e["id"]] >= 1 for e in generated)
    per_elder = Counter(row[1] for row in tables["contacts"])
    assert max(per_elder.values()) <= 3 and len(per_elder) < len(elders)  # 0–3 contacts

    terminals = [dict(zip(Terminal.__table__.columns.keys(), row, strict=True)) for row in tables["terminals"]]
    generated_terminals = [t for t in terminals if t["elder_id"] > 6]
    assert 0.85 < len(generated_terminals) / 2000 < 0.95
    assert all(t["buttons"] == BUTTONS for t in generated_terminals)
    assert 0 < sum(t["battery"] == "low" for t in generated_terminals) < 250
    assert {t["power"] for t in generated_terminals} == {"ac", "battery", "lost"}
    assert len({t["serial"] for t in terminals}) == len(terminals)
    assert tables["service_records"] and tables["work_orders"]
