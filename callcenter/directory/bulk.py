"""Writing many elders at once: the importer, the YAML seed and the generator.

Everything happens in one transaction that takes the write lock at its start (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL ``LOCK TABLE elders``), so new elders get consecutive ids from ``max(id) + 1`` without a round trip
per row, and their phones, contacts and terminals go in with plain ``executemany`` inserts in chunks
(100,000 elders in seconds). On PostgreSQL the id sequence is moved past the ids given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.directory.models import (
    SEARCHED,
    Contact,
    Elder,
    ElderPhone,
    ServiceRecord,
    Terminal,
    WorkOrder,
    search_text,
    search_text_sql,
)
from callcenter.directory.validation import DirectoryInputError, ElderInput

if TYPE_CHECKING:
    from callcenter.directory.store import DirectoryStore

log = structlog.get_logger("callcenter.directory")

E, P, T, C = Elder.__table__, ElderPhone.__table__, Terminal.__table__, Contact.__table__
R, W = ServiceRecord.__table__, WorkOrder.__table__
SCALARS = ("name", "title", "sex", "birth_date", "id_number", "district", "street", "community", "address", "lat",
           "lon", "language", "living_alone", "health_notes", "care_level")
CHUNK = 500  # ids per IN (...) query
ROWS = 5000  # rows per executemany


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class WriteResult:
    created: int = 0
    updated: int = 0
    ids: list[int] = field(default_factory=list)


@dataclass
class BulkState:
    """What is taken already when the generator makes rows: numbers, ID numbers, terminal serials."""

    numbers: set[str] = field(default_factory=set)
    id_numbers: set[str] = field(default_factory=set)
    serials: set[str] = field(default_factory=set)


def scalars(inp: ElderInput, names: Iterable[str]) -> dict[str, Any]:
    return with_tail({name: getattr(inp, name) for name in names})


def with_tail(values: Mapping[str, Any]) -> dict[str, Any]:
    """The elder's columns with the ones derived from them: ``id_tail``, and ``search_text`` when every part of it
    is given (a partial update refreshes it in SQL: :func:`refresh_search_text`)."""
    out = dict(values)
    if "id_number" in out:
        out["id_tail"] = out["id_number"][-4:] if out["id_number"] else None
    if all(name in out for name in SEARCHED):
        out["search_text"] = search_text(out)
    return out


async def refresh_search_text(conn: AsyncConnection, elder_ids: Sequence[int]) -> None:
    """``search_text`` of these elders from their columns as they are now."""
    for chunk in chunks(elder_ids):
        await conn.execute(update(E).where(E.c.id.in_(chunk)).values(search_text=search_text_sql()))


def conflict(exc: IntegrityError) -> DirectoryInputError:
    """What a refused write means for the person who wrote it."""
    message = str(exc.orig)
    if "id_number" in message:
        return DirectoryInputError("id_number", "another elder has this ID number", "已有老人使用这个身份证号")
    if "serial" in message:
        return DirectoryInputError("terminal", "another elder has a terminal with this serial",
                                   "这个终端序列号已属于另一位老人")
    return DirectoryInputError("body", f"the directory refused the change: {message}", "目录拒绝了这个修改")


@asynccontextmanager
async def locked(db: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that holds the write lock from its start, so ids taken from max(id) stay free."""
    async with db.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            await conn.exec_driver_sql("LOCK TABLE elders IN SHARE ROW EXCLUSIVE MODE")
        try:
            yield conn
            if conn.dialect.name == "postgresql":
                await conn.exec_driver_sql(
                    "SELECT setval(pg_get_serial_sequence('elders', 'id'), (SELECT max(id) FROM elders))")
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise


async def write_children(conn: AsyncConnection, elder_id: int, inp: ElderInput, given: set[str], *,
                         buttons: Mapping[str, str], replace: bool = False, merge_phones: bool = False) -> None:
    """The elder's phones (replaced, or with ``merge_phones`` the new ones added), contacts (replaced) and
    terminal (the one with the same serial, else the elder's first, updated; else added) — those ``given``."""
    if "phones" in given:
        if replace and not merge_phones:
            await conn.execute(delete(P).where(P.c.elder_id == elder_id))
        have = set() if not merge_phones else set((await conn.execute(
            select(P.c.number).where(P.c.elder_id == elder_id))).scalars())
        rows = [dict(p, elder_id=elder_id) for p in inp.phones if p["number"] not in have]
        if rows:
            await conn.execute(insert(P), rows)
    if "contacts" in given:
        if replace:
            await conn.execute(delete(C).where(C.c.elder_id == elder_id))
        if inp.contacts:
            await conn.execute(insert(C), [dict(c, elder_id=elder_id) for c in inp.contacts])
    if "terminal" in given and inp.terminal is not None:
        values = dict(inp.terminal, elder_id=elder_id, buttons=inp.terminal.get("buttons") or dict(buttons))
        existing = None
        if values.get("serial"):
            existing = (await conn.execute(select(T.c.id).where(T.c.serial == values["serial"]))).scalar()
        if existing is None:
            existing = (await conn.execute(select(T.c.id).where(T.c.elder_id == elder_id)
                                           .order_by(T.c.id).limit(1))).scalar()
        if existing is None:
            await conn.execute(insert(T).values(**values))
        else:
            await conn.execute(update(T).where(T.c.id == existing).values(**values))


async def write_inputs(store: DirectoryStore, inputs: Sequence[ElderInput], *,
                       ids: Sequence[int | None] | None = None, match: bool = True) -> WriteResult:
    """Many elders in one transaction. An input with an id in ``ids`` is that elder (created with that id
    when missing); with ``match``, an input is the elder with the same ID number, else the same name and one
    of the same numbers (then updated: the fields given, new numbers added, contacts replaced when given,
    the terminal updated); the others are created with new ids, in order."""
    result = WriteResult()
    wanted = list(ids) if ids is not None else [None] * len(inputs)
    now = store.now()
    try:
        async with locked(store.db) as conn:
            if match:
                found = await _matches(conn, inputs)
                wanted = [w if w is not None else f for w, f in zip(wanted, found, strict=True)]
            existing: set[int] = set()
            for chunk in chunks([w for w in wanted if w is not None]):
                existing.update((await conn.execute(select(E.c.id).where(E.c.id.in_(chunk)))).scalars())
            next_id = int((await conn.execute(select(func.coalesce(func.max(E.c.id), 0)))).scalar() or 0) + 1
            next_id = max([next_id, *[w + 1 for w in wanted if w is not None]])
            new: dict[str, list[dict[str, Any]]] = {"elders": [], "phones": [], "contacts": [], "terminals": []}
            changed: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            updates: list[tuple[int, ElderInput]] = []
            for position, inp in enumerate(inputs):
                elder_id = wanted[position]
                if elder_id is not None and elder_id in existing:
                    given = set(inp.model_fields_set)
                    values = scalars(inp, [n for n in SCALARS if n in given]) | {"updated_at": now}
                    changed.setdefault(tuple(sorted(values)), []).append(
                        {f"v_{name}": value for name, value in values.items()} | {"b_id": elder_id})
                    updates.append((elder_id, inp))
                    result.updated += 1
                else:
                    if elder_id is None:
                        elder_id, next_id = next_id, next_id + 1
                    existing.add(elder_id)
                    new["elders"].append(scalars(inp, SCALARS) | {"id": elder_id, "created_at": now,
                                                                  "updated_at": now})
                    new["phones"] += [dict(p, elder_id=elder_id) for p in inp.phones]
                    new["contacts"] += [dict(c, elder_id=elder_id) for c in inp.contacts]
                    if inp.terminal is not None:
                        new["terminals"].append(dict(inp.terminal, elder_id=elder_id,
                                                     buttons=inp.terminal.get("buttons") or dict(store.buttons)))
                    result.created += 1
                result.ids.append(elder_id)
            for columns, rows in changed.items():  # one executemany per set of changed columns
                statement = update(E).where(E.c.id == bindparam("b_id")).values(
                    {name: bindparam(f"v_{name}") for name in columns})
                for chunk in chunks(rows, ROWS):
                    await conn.execute(statement, list(chunk))
                if "search_text" not in columns and set(columns) & set(SEARCHED):
                    await refresh_search_text(conn, [row["b_id"] for row in rows])
            await _update_children(conn, updates, store.buttons, new)
            await insert_rows(conn, **new)
    except IntegrityError as exc:
        raise conflict(exc) from None
    log.info("directory.elders.written", created=result.created, updated=result.updated)
    return result


async def _update_children(conn: AsyncConnection, updates: Sequence[tuple[int, ElderInput]],
                           buttons: Mapping[str, str], new: dict[str, list[dict[str, Any]]]) -> None:
    """The children of updated elders, set-wise (a query per 500 elders, not per elder): new numbers are added
    to ``new``, given contacts replace the old ones, a given terminal updates the one with its serial (else the
    elder's first) or is added."""
    with_phones = [(i, inp) for i, inp in updates if "phones" in inp.model_fields_set and inp.phones]
    have: set[tuple[int, str]] = set()
    for chunk in chunks([i for i, _ in with_phones]):
        have.update((r.elder_id, r.number) for r in await conn.execute(
            select(P.c.elder_id, P.c.number).where(P.c.elder_id.in_(chunk))))
    for elder_id, inp in with_phones:
        new["phones"] += [dict(p, elder_id=elder_id) for p in inp.phones if (elder_id, p["number"]) not in have]
    with_contacts = [(i, inp) for i, inp in updates if "contacts" in inp.model_fields_set]
    for chunk in chunks([i for i, _ in with_contacts]):
        await conn.execute(delete(C).where(C.c.elder_id.in_(chunk)))
    for elder_id, inp in with_contacts:
        new["contacts"] += [dict(c, elder_id=elder_id) for c in inp.contacts]
    with_terminal = [(i, inp.terminal) for i, inp in updates if inp.terminal is not None]
    by_serial: dict[str, int] = {}
    first: dict[int, int] = {}
    for chunk in chunks([t["serial"] for _, t in with_terminal if t.get("serial")]):
        by_serial.update({r.serial: r.id for r in await conn.execute(
            select(T.c.id, T.c.serial).where(T.c.serial.in_(chunk)))})
    for chunk in chunks([i for i, _ in with_terminal]):
        for r in await conn.execute(select(T.c.id, T.c.elder_id).where(T.c.elder_id.in_(chunk)).order_by(T.c.id)):
            first.setdefault(r.elder_id, r.id)
    changed: list[dict[str, Any]] = []
    for elder_id, terminal in with_terminal:
        values = dict(terminal, elder_id=elder_id, buttons=terminal.get("buttons") or dict(buttons))
        existing = by_serial.get(values.get("serial") or "") or first.get(elder_id)
        if existing is None:
            new["terminals"].append(values)
        else:
            changed.append({f"v_{k}": v for k, v in values.items()} | {"b_id": existing})
    if changed:
        statement = update(T).where(T.c.id == bindparam("b_id")).values(
            {k.removeprefix("v_"): bindparam(k) for k in changed[0] if k != "b_id"})
        for chunk in chunks(changed, ROWS):
            await conn.execute(statement, list(chunk))


async def _matches(conn: AsyncConnection, inputs: Sequence[ElderInput]) -> list[int | None]:
    by_id_number: dict[str, int] = {}
    for chunk in chunks(sorted({inp.id_number for inp in inputs if inp.id_number})):
        by_id_number.update({r.id_number: r.id for r in await conn.execute(
            select(E.c.id, E.c.id_number).where(E.c.id_number.in_(chunk)))})
    by_name: dict[tuple[str, str], int] = {}
    for chunk in chunks(sorted({p["number"] for inp in inputs for p in inp.phones})):
        for r in await conn.execute(select(E.c.id, E.c.name, P.c.number).join(P, P.c.elder_id == E.c.id)
                                    .where(P.c.number.in_(chunk)).order_by(E.c.id.desc())):
            by_name[(r.name, r.number)] = r.id
    found: list[int | None] = []
    for inp in inputs:
        match = by_id_number.get(inp.id_number or "")
        if match is None:
            match = next((by_name[(inp.name, p["number"])] for p in inp.phones if (inp.name, p["number"]) in by_name),
                         None)
        found.append(match)
    return found


async def bulk(store: DirectoryStore, make: Callable[[int, BulkState], Mapping[str, list[dict[str, Any]]]]) -> int:
    """Rows made by ``make(first_free_id, state)`` inserted in one locked transaction (the generator);
    ``state`` has the numbers, ID numbers and terminal serials already taken. Gives the elders added."""
    async with locked(store.db) as conn:
        first = int((await conn.execute(select(func.coalesce(func.max(E.c.id), 0)))).scalar() or 0) + 1
        state = BulkState(
            numbers=set((await conn.execute(select(P.c.number))).scalars())
            | set((await conn.execute(select(C.c.number))).scalars()),
            id_numbers=set((await conn.execute(select(E.c.id_number).where(E.c.id_number.is_not(None)))).scalars()),
            serials=set((await conn.execute(select(T.c.serial).where(T.c.serial.is_not(None)))).scalars()))
        rows = make(first, state)
        await insert_rows(conn, **rows)
    return len(rows.get("elders", []))


async def insert_rows(conn: AsyncConnection, *, elders: Sequence[Mapping[str, Any]] = (),
                      phones: Sequence[Mapping[str, Any]] = (), contacts: Sequence[Mapping[str, Any]] = (),
                      terminals: Sequence[Mapping[str, Any]] = (), records: Sequence[Mapping[str, Any]] = (),
                      work_orders: Sequence[Mapping[str, Any]] = ()) -> None:
    """Plain inserts in chunks (executemany); elders carry their ids."""
    elder_rows = [with_tail(r) | {"search_text": search_text(r)} for r in elders]
    for table, rows in ((E, elder_rows), (P, phones), (C, contacts), (T, terminals), (R, records),
                        (W, work_orders)):
        for chunk in chunks(list(rows), ROWS):
            await conn.execute(insert(table), list(chunk))
