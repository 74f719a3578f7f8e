"""The directory in the database: who is calling, their profile, their service history, who looked at it.

:class:`DirectoryStore` is the one way in. Everything is async (the engine's loop never waits on the
database): the IVR's ``lookup`` (the :class:`callcenter.directory.lookup.Directory` protocol), the desktop's
profile, search, records and work orders (the shapes of docs/desktop.md), the access log, and the bulk writes
of the importer, the seed and the generator (one transaction, a write lock, ids given in order).

Dates and times in the returned dicts are ISO-8601 strings, times in UTC with "+00:00". ID numbers are
masked unless ``unmask=True``; phone numbers are directory keys (:mod:`callcenter.directory.numbers`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import and_, func, insert, select, true, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.directory.access import AccessLogWriter
from callcenter.directory.bulk import (
    SCALARS,
    BulkState,
    WriteResult,
    bulk,
    conflict,
    scalars,
    write_children,
    write_inputs,
)
from callcenter.directory.history import KIND_ORDER, aware, history, iso, record_item, work_order_item
from callcenter.directory.models import (
    ACCESS_ACTIONS,
    DIRECTIONS,
    SEARCHED,
    Contact,
    Elder,
    ElderPhone,
    ProfileAccess,
    ServiceRecord,
    Terminal,
    WorkOrder,
    search_text,
)
from callcenter.directory.numbers import display, national
from callcenter.directory.validation import (
    WORK_ORDER_MOVES,
    DirectoryInputError,
    ElderInput,
    age_on,
    mask_id,
    plain,
    surname,
    validate_elder,
)
from callcenter.ivr.context import CallerProfile

__all__ = ["KIND_ORDER", "DirectoryInputError", "DirectoryStore", "WriteResult"]

log = structlog.get_logger("callcenter.directory")

E, P, T, C = Elder.__table__, ElderPhone.__table__, Terminal.__table__, Contact.__table__
R, W, A = ServiceRecord.__table__, WorkOrder.__table__, ProfileAccess.__table__
RECENT_PROFILES = 10_000
ACCESS_FLUSH_TIMEOUT = 10.0  # seconds an access-log read waits for queued rows (a database that fails: an error)
TOP = "\U0010ffff"  # sorts after every character: name >= q AND name < q + TOP is "starts with q" on an index


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DirectoryStore:
    """The directory over the engine's database (``db``: the async engine of :mod:`callcenter.store.db`).

    ``region``/``area_code`` say how numbers are read (:func:`callcenter.directory.numbers.normalise`),
    ``zone`` is the center's time zone (a due time written without an offset is local), ``buttons`` the
    button map a terminal gets when none is given (DID → button, from the routing configuration)."""

    def __init__(self, db: AsyncEngine, *, region: str = "CN", area_code: str | None = None,
                 zone: dt.tzinfo = dt.UTC, buttons: Mapping[str, str] | None = None,
                 now: Callable[[], dt.datetime] = _utcnow, lookup_timeout: float = 2.0) -> None:
        self.db = db
        self.lookup_timeout = lookup_timeout
        self.region, self.area_code, self.zone = region, area_code, zone
        self.buttons = dict(buttons or {})
        self.now = now
        self._recent: OrderedDict[str, CallerProfile] = OrderedDict()
        self.access: AccessLogWriter | None = None  # the access log's writer, from start() to close()

    async def start(self) -> None:
        """Write the access log in the background from now on (:mod:`callcenter.directory.access`); without it
        (tools, the command line) every :meth:`log_access` commits its own row."""
        if self.access is None:
            self.access = AccessLogWriter(self.db)
            await self.access.start()

    async def close(self, timeout: float | None = 10.0) -> None:
        """Write the queued access-log rows and stop the writer (rows not written by ``timeout`` are logged one
        by one as ``directory.access_log.lost``)."""
        if self.access is not None:
            await self.access.close(timeout)

    # -- numbers ------------------------------------------------------------------------------------------
    def key(self, number: str) -> str:
        """The directory key of a number as a caller or a person wrote it ("" for none)."""
        return national(number, self.region, self.area_code) if number else ""

    def today(self) -> dt.date:
        return self.now().astimezone(self.zone).date()

    # -- the IVR ----------------------------------------------------------------------------------------------
    async def lookup(self, number: str) -> CallerProfile:
        """The caller's profile by calling number; an unknown number gives ``CallerProfile()`` (so does a
        database that cannot be read, or does not answer within ``lookup_timeout``: logged, and the call — maybe
        an emergency — goes on)."""
        key = self.key(number)
        if not key:
            return CallerProfile()
        try:
            profile = await asyncio.wait_for(self._lookup(key), self.lookup_timeout)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:  # the call goes on as an unknown caller's
            log.error("directory.lookup.failed", number=key, error=repr(exc) or "timeout")
            return CallerProfile()
        self._remember(key, profile)
        return profile

    async def _lookup(self, key: str) -> CallerProfile:
        async with self.db.connect() as conn:
            row = (await conn.execute(
                select(E.c.id, E.c.name, E.c.title, E.c.language, E.c.living_alone)
                .join(P, P.c.elder_id == E.c.id).where(P.c.number == key)
                .order_by(KIND_ORDER, E.c.id).limit(1))).first()
            if row is None:
                profile = CallerProfile()
            else:
                family = (await conn.execute(select(C.c.number).where(C.c.elder_id == row.id)
                                             .order_by(C.c.order, C.c.id))).scalars().all()
                profile = CallerProfile(known=True, elder_id=row.id, name=row.name, surname=surname(row.name),
                                        title=row.title or row.name, language=row.language,
                                        living_alone=bool(row.living_alone), family_numbers=tuple(family))
        return profile

    def _remember(self, key: str, profile: CallerProfile) -> None:
        self._recent[key] = profile
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_PROFILES:
            self._recent.popitem(last=False)

    def recent(self, number: str) -> CallerProfile | None:
        """The profile the last :meth:`lookup` of this number found (None: not looked up lately). Synchronous,
        for code that may not wait (the ACD's announcements in the caller's language)."""
        return self._recent.get(self.key(number))

    async def has_elder(self, elder_id: int) -> bool:
        """Whether there is an elder with this id (one indexed read, for checks before a write)."""
        async with self.db.connect() as conn:
            return (await conn.execute(select(E.c.id).where(E.c.id == elder_id))).first() is not None

    async def elder_id_for(self, number: str) -> int | None:
        key = self.key(number)
        if not key:
            return None
        async with self.db.connect() as conn:
            return await self._elder_id(conn, key)

    async def _elder_id(self, conn: AsyncConnection, key: str) -> int | None:
        return (await conn.execute(select(P.c.elder_id).where(P.c.number == key)
                                   .order_by(KIND_ORDER, P.c.elder_id).limit(1))).scalar()

    # -- profiles ---------------------------------------------------------------------------------------------
    async def elder(self, elder_id: int, *, unmask: bool = False) -> dict[str, Any] | None:
        """The elder as docs/desktop.md's POP shows it (phones, terminals, contacts); None if there is none."""
        async with self.db.connect() as conn:
            return await self._elder(conn, elder_id, unmask=unmask)

    async def _elder(self, conn: AsyncConnection, elder_id: int, *, unmask: bool = False) -> dict[str, Any] | None:
        row = (await conn.execute(select(E).where(E.c.id == elder_id))).first()
        if row is None:
            return None
        elder = self._summary(row, [], unmask=unmask)
        elder["phones"] = [self._phone(p) for p in await conn.execute(
            select(P.c.number, P.c.kind).where(P.c.elder_id == elder_id).order_by(KIND_ORDER, P.c.id))]
        elder["terminals"] = [{
            "id": t.id, "type": t.type, "serial": t.serial, "installed": iso(t.installed),
            "buttons": dict(t.buttons or {}), "last_heartbeat": iso(aware(t.last_heartbeat)), "battery": t.battery,
            "power": t.power} for t in await conn.execute(select(T).where(T.c.elder_id == elder_id).order_by(T.c.id))]
        elder["contacts"] = [{
            "id": c.id, "name": c.name, "relation": c.relation, "number": c.number, "display": display(c.number),
            "order": c.order} for c in await conn.execute(
                select(C).where(C.c.elder_id == elder_id).order_by(C.c.order, C.c.id))]
        return elder

    def _phone(self, row: Any) -> dict[str, str]:
        return {"number": row.number, "kind": row.kind, "display": display(row.number, self.region)}

    def _summary(self, row: Any, phones: list[Any], *, unmask: bool = False) -> dict[str, Any]:
        parts = (row.district, row.street, row.community, row.address)
        return {
            "id": row.id, "name": row.name, "title": row.title, "sex": row.sex,
            "age": age_on(row.birth_date, self.today()), "birth_date": iso(row.birth_date),
            "id_number": row.id_number if unmask else mask_id(row.id_number), "language": row.language,
            "living_alone": bool(row.living_alone), "health_notes": row.health_notes, "care_level": row.care_level,
            "address": {"district": row.district, "street": row.street, "community": row.community,
                        "detail": row.address, "text": "".join(p for p in parts if p)},
            "location": {"lat": row.lat, "lon": row.lon} if row.lat is not None and row.lon is not None else None,
            "phones": [self._phone(p) for p in phones],
            "created_at": iso(aware(row.created_at)), "updated_at": iso(aware(row.updated_at)),
        }

    async def search(self, q: str, limit: int = 20) -> list[dict[str, Any]]:
        """Elders by name (prefix first, then anywhere), phone number (whole, or the start of it from 7 digits),
        the tail of the ID number (last 4–6 characters) or a whole ID number, and address words. Summaries:
        the profile without terminals and contacts; ID numbers masked."""
        q = q.strip()[:64]
        limit = max(1, min(int(limit), 100))
        if not q:
            return []
        found: dict[int, None] = {}

        async def add(query: Any) -> None:
            if len(found) < limit:
                for elder_id in (await conn.execute(query.limit(limit - len(found)))).scalars():
                    found.setdefault(elder_id, None)

        compact = re.sub(r"[\s\-()（）]", "", q)
        async with self.db.connect() as conn:
            if re.fullmatch(r"\+?[0-9]{3,}[xX]?", compact):
                digits = compact.upper()
                if digits[-1] != "X":
                    key = self.key(compact)
                    await add(select(P.c.elder_id).where(P.c.number == key).order_by(P.c.elder_id))
                    if len(key) >= 7:
                        await add(select(P.c.elder_id).distinct().where(P.c.number > key, P.c.number < key + ":")
                                  .order_by(P.c.elder_id))
                if 4 <= len(digits) <= 6:
                    await add(select(E.c.id).where(E.c.id_tail == digits[-4:], E.c.id_number.endswith(digits))
                              .order_by(E.c.id))
                elif len(digits) == 18:
                    await add(select(E.c.id).where(E.c.id_number == digits))
            else:
                await add(select(E.c.id).where(E.c.name >= q, E.c.name < q + TOP,
                                               E.c.name.startswith(q, autoescape=True)).order_by(E.c.name, E.c.id))
                words = q.split()  # anywhere in the name or the address: a scan of search_text's index
                await add(select(E.c.id).where(*(E.c.search_text.contains(w, autoescape=True) for w in words))
                          .order_by(E.c.search_text, E.c.id))
            ids = list(found)
            if not ids:
                return []
            rows = {r.id: r for r in await conn.execute(select(E).where(E.c.id.in_(ids)))}
            phones: dict[int, list[Any]] = {}
            for p in await conn.execute(select(P.c.elder_id, P.c.number, P.c.kind).where(P.c.elder_id.in_(ids))
                                        .order_by(KIND_ORDER, P.c.id)):
                phones.setdefault(p.elder_id, []).append(p)
        return [self._summary(rows[i], phones.get(i, [])) for i in ids if i in rows]

    async def count(self) -> int:
        async with self.db.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(E))).scalar() or 0)

    # -- writing elders ---------------------------------------------------------------------------------------
    async def create_elder(self, data: Mapping[str, Any]) -> int:
        """A new elder from API-style data (``number`` is short for one phone); :class:`DirectoryInputError`
        names the first bad field, or ``id_number``/``terminal`` when another elder has them already."""
        inp = validate_elder(_with_number(data), region=self.region, area_code=self.area_code, today=self.today())
        now = self.now()
        try:
            async with self.db.begin() as conn:
                values = scalars(inp, SCALARS) | {"created_at": now, "updated_at": now}
                elder_id = int((await conn.execute(insert(E).values(**values))).inserted_primary_key[0])
                await write_children(conn, elder_id, inp, set(inp.model_fields_set), buttons=self.buttons)
        except IntegrityError as exc:
            raise conflict(exc) from None
        log.info("directory.elder.created", elder_id=elder_id)
        return elder_id

    async def update_elder(self, elder_id: int, data: Mapping[str, Any]) -> None:
        """Change the given fields (``phones``/``contacts`` replace the lists, ``terminal`` updates or adds one);
        KeyError when there is no such elder, :class:`DirectoryInputError` for bad data."""
        patch = _with_number(data)
        now = self.now()
        try:
            async with self.db.begin() as conn:
                row = (await conn.execute(select(E).where(E.c.id == elder_id))).first()
                if row is None:
                    raise KeyError(elder_id)
                given = set(patch)
                current = {name: getattr(row, name) for name in SCALARS}
                if "id_number" in given:  # a new ID number brings its own birth date and sex unless they are given
                    for derived in ("birth_date", "sex"):
                        if derived not in given:
                            current.pop(derived)
                inp = validate_elder({**current, **patch}, region=self.region, area_code=self.area_code,
                                     today=self.today())
                changed = scalars(inp, [n for n in SCALARS if n in given or n in ("birth_date", "sex", "title")])
                changed["search_text"] = search_text({name: getattr(inp, name) for name in SEARCHED})
                await conn.execute(update(E).where(E.c.id == elder_id).values(**changed, updated_at=now))
                await write_children(conn, elder_id, inp, given, buttons=self.buttons, replace=True)
        except IntegrityError as exc:
            raise conflict(exc) from None
        log.info("directory.elder.updated", elder_id=elder_id, fields=sorted(given))

    async def write_inputs(self, inputs: Sequence[ElderInput], *, ids: Sequence[int | None] | None = None,
                           match: bool = True) -> WriteResult:
        """Many elders in one transaction (:func:`callcenter.directory.bulk.write_inputs`)."""
        return await write_inputs(self, inputs, ids=ids, match=match)

    async def bulk(self, make: Callable[[int, BulkState], Mapping[str, list[dict[str, Any]]]]) -> int:
        """Generated rows in one transaction (:func:`callcenter.directory.bulk.bulk`)."""
        return await bulk(self, make)

    # -- service records and work orders ----------------------------------------------------------------------
    async def add_record(self, *, elder_id: int | None, number: str | None, call_id: str | None, operator: str,
                         disposition: str, notes: str, direction: str = "inbound") -> int:
        """A service record; an unknown elder_id is found from the number when the number is known."""
        if not plain(disposition):
            raise DirectoryInputError("disposition", "required", "必须选择处理结果")
        if direction not in DIRECTIONS:
            raise DirectoryInputError("direction", f"expected one of {', '.join(DIRECTIONS)}")
        key = self.key(number or "")
        async with self.db.begin() as conn:
            if elder_id is None and key:
                elder_id = await self._elder_id(conn, key)
            record_id = int((await conn.execute(insert(R).values(
                at=self.now(), elder_id=elder_id, number=key or None, call_id=call_id, operator=operator or "",
                disposition=plain(disposition)[:64], notes=notes or "", direction=direction)))
                .inserted_primary_key[0])
        log.info("directory.record.added", call_id=call_id, record_id=record_id, elder_id=elder_id)
        return record_id

    async def records(self, elder_id: int, limit: int = 10) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            return await self._records(conn, R.c.elder_id == elder_id, limit)

    async def _records(self, conn: AsyncConnection, where: Any, limit: int) -> list[dict[str, Any]]:
        return [record_item(r) for r in await conn.execute(select(R).where(where).order_by(R.c.at.desc(), R.c.id.desc())
                                                        .limit(limit))]

    async def create_work_order(self, *, elder_id: int | None, call_id: str | None, type: str, assignee: str,
                                due_at: dt.datetime | str | None, notes: str, created_by: str) -> int:
        if not plain(type):
            raise DirectoryInputError("type", "required", "必须填写工单类型")
        due = self._when(due_at, "due_at")
        async with self.db.begin() as conn:
            order_id = int((await conn.execute(insert(W).values(
                created_at=self.now(), elder_id=elder_id, call_id=call_id, type=plain(type)[:32],
                assignee=plain(assignee)[:128], due_at=due, status="open", notes=notes or "",
                created_by=created_by or ""))).inserted_primary_key[0])
        log.info("directory.work_order.created", call_id=call_id, work_order_id=order_id, elder_id=elder_id)
        return order_id

    async def work_orders(self, *, elder_id: int | None = None, status: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        where = and_(W.c.elder_id == elder_id if elder_id is not None else true(),
                     W.c.status == status if status is not None else true())
        async with self.db.connect() as conn:
            return await self._work_orders(conn, where, limit)

    async def _work_orders(self, conn: AsyncConnection, where: Any, limit: int) -> list[dict[str, Any]]:
        return [work_order_item(r) for r in await conn.execute(
            select(W).where(where).order_by(W.c.created_at.desc(), W.c.id.desc()).limit(limit))]

    async def update_work_order(self, id: int, *, status: str | None = None,
                                feedback: str | None = None) -> dict[str, Any]:
        """Move a work order on (open → in_progress → done | cancelled) and/or add feedback; KeyError if none."""
        async with self.db.begin() as conn:
            row = (await conn.execute(select(W).where(W.c.id == id))).first()
            if row is None:
                raise KeyError(id)
            values: dict[str, Any] = {}
            if status is not None and status != row.status:
                if status not in WORK_ORDER_MOVES.get(row.status, ()):
                    raise DirectoryInputError("status", f"a work order that is {row.status} cannot become {status}",
                                              f"工单状态不能从 {row.status} 变为 {status}")
                values["status"] = status
                if status in ("done", "cancelled"):
                    values["closed_at"] = self.now()
            if feedback is not None:
                values["feedback"] = feedback
            if values:
                await conn.execute(update(W).where(W.c.id == id).values(**values))
            order = work_order_item((await conn.execute(select(W).where(W.c.id == id))).one())
        log.info("directory.work_order.updated", call_id=row.call_id, work_order_id=id, status=order["status"])
        return order

    async def history(self, *, elder_id: int | None = None, q: str | None = None,
                      since: dt.datetime | str | None = None, until: dt.datetime | str | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
        """Calls, service records, work orders and callbacks, newest first, each with ``kind`` ("call" | "record"
        | "work_order" | "callback"), ``at`` and the elder's name (:mod:`callcenter.directory.history`): of one
        elder, and/or matching ``q`` (a number, else words in the notes, disposition, type, assignee, operator or
        the elder's name), between ``since`` and ``until``. Calls and callbacks are listed for an elder or a
        number, not for words or dates alone."""
        return await history(self, elder_id=elder_id, q=q, since=since, until=until, limit=limit)

    def _when(self, value: dt.datetime | str | None, name: str) -> dt.datetime | None:
        """An aware UTC time from a datetime or an ISO string (no offset: the center's local time)."""
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise DirectoryInputError(name, "expected an ISO-8601 time like 2025-03-01T14:30",
                                          "时间格式不对（例如 2025-03-01T14:30）") from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        return value.astimezone(dt.UTC)

    # -- the access log ---------------------------------------------------------------------------------------
    async def log_access(self, *, username: str, role: str, action: str, elder_id: int | None = None,
                         detail: str = "") -> None:
        """One row of the personal-data access log (who, role, what, which elder, when). After :meth:`start` the
        row is queued and written in the background (in the table within ``AccessLogWriter.interval``, 0.2 s,
        and before any :meth:`access_log` read that starts later); before it, committed here."""
        if action not in ACCESS_ACTIONS:
            raise DirectoryInputError("action", f"expected one of {', '.join(ACCESS_ACTIONS)}")
        row = {"at": self.now(), "username": username[:128], "role": role[:32], "elder_id": elder_id,
               "action": action, "detail": (detail or "")[:512]}
        if self.access is not None and self.access.running:
            self.access.record(row)
        else:
            async with self.db.begin() as conn:
                await conn.execute(insert(A).values(**row))
        log.info("directory.access", username=username, role=role, action=action, elder_id=elder_id)

    async def access_log(self, *, elder_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest access-log rows, newest first; every row logged before this call is among them (queued
        rows are written first)."""
        if self.access is not None and self.access.pending:
            await asyncio.wait_for(self.access.flush(), ACCESS_FLUSH_TIMEOUT)
        where = A.c.elder_id == elder_id if elder_id is not None else true()
        async with self.db.connect() as conn:
            return [{"id": r.id, "at": iso(aware(r.at)), "username": r.username, "role": r.role,
                     "elder_id": r.elder_id, "action": r.action, "detail": r.detail}
                    for r in await conn.execute(select(A).where(where).order_by(A.c.id.desc()).limit(limit))]

    # -- the screen pop ---------------------------------------------------------------------------------------
    async def pop_parts(self, *, number: str, elder_id: int | None = None,
                        records: int = 10) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
        """(elder, last records, open work orders) for a pop, on one connection. An unknown number gives
        (None, the records written about that number, [])."""
        key = self.key(number)
        async with self.db.connect() as conn:
            elder = await self._elder(conn, elder_id) if elder_id is not None else None
            if elder is None and key:
                elder_id = await self._elder_id(conn, key)
                elder = await self._elder(conn, elder_id) if elder_id is not None else None
            if elder is None:
                found = await self._records(conn, R.c.number == key, records) if key else []
                return None, found, []
            found = await self._records(conn, R.c.elder_id == elder_id, records)
            orders = await self._work_orders(
                conn, and_(W.c.elder_id == elder_id, W.c.status.in_(("open", "in_progress"))), 50)
        return elder, found, orders


def _flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """API shapes to input fields: ``address``/``location`` objects as in the profile become the flat fields."""
    out = {k: v for k, v in data.items() if k not in ("address", "location")}
    address, location = data.get("address"), data.get("location")
    if isinstance(address, Mapping):
        out.update({k: address[k] for k in ("district", "street", "community") if k in address})
        if "detail" in address:
            out["address"] = address["detail"]
    elif "address" in data:
        out["address"] = address
    if isinstance(location, Mapping):
        out.update({k: location[k] for k in ("lat", "lon") if k in location})
    elif "location" in data and location is None:
        out.update({"lat": None, "lon": None})
    return out


def _with_number(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"number": …}`` (the desktop's quick create) is one phone."""
    out = _flat(data)
    number = out.pop("number", None)
    if number not in (None, ""):
        phones = out.get("phones") or []
        out["phones"] = [number, *(phones if isinstance(phones, list) else [phones])]
    return out
