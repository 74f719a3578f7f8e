"""Elders to a spreadsheet (CSV or XLSX) with the importer's columns, so an export imports again unchanged.

ID numbers are masked unless ``unmasked`` (only an unmasked export can be imported again). CSV is written in
UTF-8 with a BOM (Excel in China opens it as Chinese). A cell that would start a spreadsheet formula
(= + - @) is written with a leading ' (the importer removes it). Elders are read in pages of 2,000 by id, so
100,000 elders need little memory."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from callcenter.directory.importer import COLUMNS, FORMULA_START
from callcenter.directory.models import Contact, Elder, ElderPhone, Terminal
from callcenter.directory.store import KIND_ORDER, DirectoryStore
from callcenter.directory.validation import mask_id

E, P, T, C = Elder.__table__, ElderPhone.__table__, Terminal.__table__, Contact.__table__
PAGE = 2000
SEX_TEXT = {"F": "女", "M": "男"}


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value and value[0] in FORMULA_START:
        return "'" + value
    return value


def _row(elder: Any, phones: list[Any], terminals: list[Any], contacts: list[Any], unmasked: bool) -> list[Any]:
    terminal = terminals[0] if terminals else None
    values = {
        "name": elder.name, "title": elder.title, "sex": SEX_TEXT.get(elder.sex or "", ""),
        "birth_date": elder.birth_date.isoformat() if elder.birth_date else "",
        "id_number": (elder.id_number if unmasked else mask_id(elder.id_number)) or "",
        "district": elder.district, "street": elder.street, "community": elder.community, "address": elder.address,
        "phones": "; ".join(f"{p.kind}:{p.number}" for p in phones),
        "terminal": ":".join([terminal.type, terminal.serial or "",
                              terminal.installed.isoformat() if terminal.installed else ""]).rstrip(":")
        if terminal is not None else "",
        "buttons": "; ".join(f"{did}={button}" for did, button in (terminal.buttons or {}).items())
        if terminal is not None else "",
        "contacts": "; ".join(f"{c.name}:{c.relation}:{c.number}" for c in contacts),
        "language": elder.language, "living_alone": "是" if elder.living_alone else "否",
        "health_notes": elder.health_notes, "care_level": elder.care_level,
        "lat": elder.lat if elder.lat is not None else "", "lon": elder.lon if elder.lon is not None else "",
    }
    return [_safe(values[name]) for name, _ in COLUMNS]


async def _rows(store: DirectoryStore, unmasked: bool) -> Any:
    last = 0
    async with store.db.connect() as conn:
        while True:
            elders = list(await conn.execute(select(E).where(E.c.id > last).order_by(E.c.id).limit(PAGE)))
            if not elders:
                return
            ids = [e.id for e in elders]
            phones: dict[int, list[Any]] = {}
            terminals: dict[int, list[Any]] = {}
            contacts: dict[int, list[Any]] = {}
            for p in await conn.execute(select(P).where(P.c.elder_id.in_(ids)).order_by(KIND_ORDER, P.c.id)):
                phones.setdefault(p.elder_id, []).append(p)
            for t in await conn.execute(select(T).where(T.c.elder_id.in_(ids)).order_by(T.c.id)):
                terminals.setdefault(t.elder_id, []).append(t)
            for c in await conn.execute(select(C).where(C.c.elder_id.in_(ids)).order_by(C.c.order, C.c.id)):
                contacts.setdefault(c.elder_id, []).append(c)
            for e in elders:
                yield _row(e, phones.get(e.id, []), terminals.get(e.id, []), contacts.get(e.id, []), unmasked)
            last = ids[-1]


def header() -> list[str]:
    return [chinese for _, chinese in COLUMNS]


async def export_file(store: DirectoryStore, path: Path, *, unmasked: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> int:
    """Write every elder to ``path`` (.csv or .xlsx); gives the number of elders written."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise ValueError(f"{path}: expected a .csv or .xlsx file")
    total = await store.count()
    count = 0
    if suffix == ".csv":
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header())
            async for row in _rows(store, unmasked):
                writer.writerow(row)
                count += 1
                if progress is not None and count % 1000 == 0:
                    progress(count, total)
    else:
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet("elders")
        sheet.append(header())
        async for row in _rows(store, unmasked):
            sheet.append(row)
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(count, total)
        book.save(path)
    if progress is not None:
        progress(count, total)
    return count

