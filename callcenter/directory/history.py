"""Service history: an elder's calls, service records, work orders and callbacks, newest first, as one list.

Every item has ``kind`` ("call" | "record" | "work_order" | "callback"), ``at`` (UTC ISO-8601), ``elder_id`` and
``elder_name``; the rest is the kind's own shape:

- ``call`` (a call detail record, ``call_records``): ``id, call_id, direction ("inbound" | "outbound"), number``
  (the other party as a directory key), ``from_number, to_number, answered, answered_at, ended_at, duration``
  (seconds from answer to end, null when not answered), ``end_reason``; ``at`` is when the call began. An elder's
  calls are the records whose ``party_number`` (indexed) is one of the elder's numbers.
- ``record``: the service record; ``work_order``: the work order, ``at`` its creation (docs/desktop.md).
- ``callback`` (``callback_tasks``): ``id, call_id, number, reason, source, state, due_at, attempts, outcome,
  closed_at, operator``; ``at`` is when the task was made. An elder's callbacks are the tasks with the elder's id
  or one of the elder's numbers.

Calls and callbacks belong to a number: they are listed for an elder or for a number (``q`` a phone number). A
search by words (notes, dispositions, names …) or by dates alone lists service records and work orders, the items
that carry words."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from callcenter.directory.models import Elder, ElderPhone, ServiceRecord, WorkOrder
from callcenter.store.models import CallbackTask, CallRecord

if TYPE_CHECKING:
    from callcenter.directory.store import DirectoryStore

E, P, R, W = Elder.__table__, ElderPhone.__table__, ServiceRecord.__table__, WorkOrder.__table__
CALLS, CALLBACKS = CallRecord.__table__, CallbackTask.__table__
KIND_ORDER = case((P.c.kind == "terminal", 0), (P.c.kind == "mobile", 1), else_=2)  # whose number it is first
KINDS = ("call", "record", "work_order", "callback")


def iso(value: dt.date | dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def record_item(r: Any) -> dict[str, Any]:
    return {"id": r.id, "at": iso(aware(r.at)), "elder_id": r.elder_id, "number": r.number, "call_id": r.call_id,
            "operator": r.operator, "disposition": r.disposition, "notes": r.notes, "direction": r.direction}


def work_order_item(r: Any) -> dict[str, Any]:
    return {"id": r.id, "created_at": iso(aware(r.created_at)), "elder_id": r.elder_id, "call_id": r.call_id,
            "type": r.type, "assignee": r.assignee, "due_at": iso(aware(r.due_at)), "status": r.status,
            "notes": r.notes, "feedback": r.feedback, "created_by": r.created_by,
            "closed_at": iso(aware(r.closed_at))}


def call_item(r: Any) -> dict[str, Any]:
    answered, ended = aware(r.answered_at), aware(r.ended_at)
    duration = round(max(0.0, (ended - answered).total_seconds()), 1) if answered and ended else None
    return {"kind": "call", "id": r.id, "at": iso(aware(r.started_at)), "call_id": r.call_id,
            "direction": r.direction, "number": r.party_number, "from_number": r.from_number,
            "to_number": r.to_number, "answered": answered is not None, "answered_at": iso(answered),
            "ended_at": iso(ended), "duration": duration, "end_reason": r.end_reason}


def callback_item(r: Any) -> dict[str, Any]:
    return {"kind": "callback", "id": r.id, "at": iso(aware(r.created_at)), "call_id": r.call_id,
            "number": r.number, "elder_id": r.elder_id, "reason": r.reason, "source": r.source, "state": r.state,
            "due_at": iso(aware(r.due_at)), "attempts": r.attempts, "outcome": r.outcome,
            "closed_at": iso(aware(r.closed_at)), "operator": r.operator}


async def history(store: DirectoryStore, *, elder_id: int | None = None, q: str | None = None,
                  since: dt.datetime | str | None = None, until: dt.datetime | str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    """See :meth:`callcenter.directory.store.DirectoryStore.history`."""
    start, end = store._when(since, "since"), store._when(until, "until")
    limit = max(1, min(int(limit), 1000))
    record_where: list[Any] = []
    order_where: list[Any] = []
    numbers: list[str] | None = None  # whose calls and callbacks are listed (None: none are)
    owners: list[tuple[int, str]] = []  # (elder id, name) those numbers belong to, the likeliest first
    if start is not None:
        record_where.append(R.c.at >= start)
        order_where.append(W.c.created_at >= start)
    if end is not None:
        record_where.append(R.c.at < end)
        order_where.append(W.c.created_at < end)
    words = (q or "").split()
    compact = re.sub(r"[\s\-()]", "", q or "")
    async with store.db.connect() as conn:
        if elder_id is not None:
            record_where.append(R.c.elder_id == elder_id)
            order_where.append(W.c.elder_id == elder_id)
            numbers = list((await conn.execute(select(P.c.number).where(P.c.elder_id == elder_id)
                                               .order_by(KIND_ORDER, P.c.id))).scalars())
            name = (await conn.execute(select(E.c.name).where(E.c.id == elder_id))).scalar()
            owners = [(elder_id, name or "")]
        if words and re.fullmatch(r"\+?[0-9]{3,}", compact):
            key = store.key(compact)
            found = [(r.elder_id, r.name) for r in await conn.execute(
                select(P.c.elder_id, E.c.name).join(E, E.c.id == P.c.elder_id).where(P.c.number == key)
                .order_by(KIND_ORDER, P.c.elder_id))]
            ids = [i for i, _ in found]
            record_where.append(or_(R.c.number == key, R.c.elder_id.in_(ids)))
            order_where.append(W.c.elder_id.in_(ids))
            if numbers is None:
                numbers, owners = [key], found
            else:  # one elder's history, of one of their numbers
                numbers = [key] if key in numbers else []
        elif words:
            for word in words:
                record_where.append(or_(*(col.contains(word, autoescape=True) for col in (
                    R.c.notes, R.c.disposition, R.c.operator, E.c.name))))
                order_where.append(or_(*(col.contains(word, autoescape=True) for col in (
                    W.c.notes, W.c.type, W.c.assignee, W.c.feedback, E.c.name))))
            numbers = None
        records = await conn.execute(
            select(R, E.c.name.label("elder_name")).outerjoin(E, E.c.id == R.c.elder_id)
            .where(and_(true(), *record_where)).order_by(R.c.at.desc(), R.c.id.desc()).limit(limit))
        items = [{"kind": "record", **record_item(r), "elder_name": r.elder_name} for r in records]
        orders = await conn.execute(
            select(W, E.c.name.label("elder_name")).outerjoin(E, E.c.id == W.c.elder_id)
            .where(and_(true(), *order_where)).order_by(W.c.created_at.desc(), W.c.id.desc()).limit(limit))
        items += [{"kind": "work_order", "at": iso(aware(r.created_at)), **work_order_item(r),
                   "elder_name": r.elder_name} for r in orders]
        if numbers is not None:
            items += await _calls_and_callbacks(conn, numbers, owners, start, end, limit)
    items.sort(key=lambda item: item["at"] or "", reverse=True)
    return items[:limit]


async def _calls_and_callbacks(conn: AsyncConnection, numbers: list[str], owners: list[tuple[int, str]],
                               start: dt.datetime | None, end: dt.datetime | None,
                               limit: int) -> list[dict[str, Any]]:
    names = dict(owners)
    owner_id, owner_name = owners[0] if owners else (None, None)
    items: list[dict[str, Any]] = []
    if numbers:
        where = [CALLS.c.party_number.in_(numbers)]
        if start is not None:
            where.append(CALLS.c.started_at >= start)
        if end is not None:
            where.append(CALLS.c.started_at < end)
        for r in await conn.execute(select(CALLS).where(*where).order_by(CALLS.c.started_at.desc(),
                                                                         CALLS.c.id.desc()).limit(limit)):
            items.append(call_item(r) | {"elder_id": owner_id, "elder_name": owner_name})
    whose = [CALLBACKS.c.number.in_(numbers)] if numbers else []
    if names:
        whose.append(CALLBACKS.c.elder_id.in_(list(names)))
    if not whose:
        return items
    where = [or_(*whose)]
    if start is not None:
        where.append(CALLBACKS.c.created_at >= start)
    if end is not None:
        where.append(CALLBACKS.c.created_at < end)
    for r in await conn.execute(select(CALLBACKS).where(*where).order_by(CALLBACKS.c.created_at.desc(),
                                                                         CALLBACKS.c.id.desc()).limit(limit)):
        elder = r.elder_id if r.elder_id in names else owner_id
        items.append(callback_item(r) | {"elder_id": elder, "elder_name": names.get(elder) if elder else None})
    return items
