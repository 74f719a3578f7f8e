"""The directory's part of the JSON API (docs/desktop.md): elders, service records, work orders, history.

Reads of personal data are audit-logged in the directory's access log (who, when, which elder, what): a profile
view (``view``), its history (``view``, detail "history"), a search (``search``), a quick create (``create``), an
update (``update``). Operators, supervisors and admins read and write; auditors read elders and history only.
Bad input is answered 400/415/422 with the field named; a missing elder or work order 404.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.api import ApiError, _json_body
from agents.desk import DESK, identity_of
from agents.roles import STAFF, allow
from agents.screenpop import open_callbacks
from callcenter.directory.numbers import InvalidNumber
from callcenter.directory.store import DirectoryInputError
from callcenter.store.models import CallRecord

log = structlog.get_logger("agents.web")

READERS: Final = (*STAFF, "auditor")
WORK_ORDER_STATES: Final = ("open", "in_progress", "done", "cancelled")
MAX_TEXT: Final = 2000
_NUMBER = re.compile(r"^\+?[0-9][0-9 ()\-]{0,31}$")  # as written by a person or a carrier; the store normalises

_STRING = {"type": "string"}
_ID = {"type": "integer", "minimum": 1}
REQUEST_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "api_elder_create": {"type": "object", "required": ["name"], "properties": {
        "name": _STRING, "number": _STRING, "sex": {"enum": ["F", "M"]}, "birth_date": {"format": "date", **_STRING},
        "district": _STRING, "street": _STRING, "community": _STRING, "address": _STRING,
        "language": {"enum": ["cmn", "yue"]}, "living_alone": {"type": "boolean"}, "health_notes": _STRING}},
    "api_elder_update": {"type": "object", "description": "any elder fields to change", "minProperties": 1},
    "api_record_create": {"type": "object", "required": ["disposition"], "properties": {
        "call_id": _STRING, "elder_id": _ID, "number": _STRING, "disposition": _STRING,
        "notes": {"maxLength": MAX_TEXT, **_STRING}}},
    "api_work_order_create": {"type": "object", "required": ["elder_id", "type", "assignee", "due_at"],
                              "properties": {"elder_id": _ID, "call_id": _STRING, "type": _STRING,
                                             "assignee": {"maxLength": 64, **_STRING},
                                             "due_at": {"format": "date-time", **_STRING},
                                             "notes": {"maxLength": MAX_TEXT, **_STRING}}},
    "api_work_order_update": {"type": "object", "minProperties": 1, "properties": {
        "status": {"enum": list(WORK_ORDER_STATES)}, "feedback": {"maxLength": MAX_TEXT, **_STRING}}},
}


# -- input ------------------------------------------------------------------------------------------------


def _store(request: web.Request) -> Any:
    store = getattr(request.app[DESK].engine, "directory", None)
    if store is None:
        raise ApiError(503, "the engine has no directory (starting or stopping)")
    return store


def _positive_int(value: Any, field: str, *, status: int = 422) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(status, "expected a positive whole number", field=field)
    return value


def _path_id(request: web.Request, name: str, what: str) -> int:
    text = request.match_info[name]
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise ApiError(404, f"no {what} with this id")
    return int(text)


def _text(body: dict[str, Any], field: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise ApiError(422, "required", field=field)
        return None
    if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
        raise ApiError(422, f"expected text of at most {limit} characters" + (", not empty" if required else ""),
                       field=field)
    return value.strip()


def _known_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise ApiError(422, f"unknown field; expected {', '.join(allowed)}", field=key)


def _query_text(request: web.Request, field: str, limit: int = 64) -> str | None:
    value = request.query.get(field)
    if value is None or not value.strip():
        return None
    if len(value) > limit:
        raise ApiError(422, f"at most {limit} characters", field=field)
    return value.strip()


def _limit(request: web.Request, default: int, top: int) -> int:
    text = request.query.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= top:
        raise ApiError(422, f"expected a whole number from 1 to {top}", field="limit")
    return int(text)


def _when(value: Any, field: str, zone: ZoneInfo, *, end_of_day: bool = False) -> dt.datetime:
    """An ISO-8601 date or date-time; without an offset it is the center's local time."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise ApiError(422, "expected an ISO-8601 date or date-time, e.g. 2025-03-01T14:30", field=field)
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            when = dt.datetime.combine(day + dt.timedelta(days=1 if end_of_day else 0), dt.time())
        else:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "expected an ISO-8601 date or date-time, e.g. 2025-03-01T14:30", field=field) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(dt.UTC)


def _zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(request.app[DESK].config.flows.timezone)


def _input_error(exc: DirectoryInputError, *, number: bool = False) -> ApiError:
    """The directory's refusal as 422 naming the field (``number`` for the first phone of a quick create)."""
    field = str(exc.field)
    if number and field in ("phones", "phones[0]", "phones.0"):
        field = "number"
    return ApiError(422, exc.message, field=field)


async def _audit(request: web.Request, action: str, elder_id: int | None, detail: str = "") -> None:
    user = identity_of(request).user
    await _store(request).log_access(username=user.username, role=user.role, action=action, elder_id=elder_id,
                                     detail=detail)


def _own_operator(request: web.Request) -> str:
    """The operator name the user works as (operators[].user), else the username."""
    username = identity_of(request).user.username
    for operator in request.app[DESK].config.operators:
        if operator.user is not None and operator.user.casefold() == username.casefold():
            return operator.name
    return username


# -- elders -----------------------------------------------------------------------------------------------


@allow(*READERS)
async def api_elders(request: web.Request) -> web.StreamResponse:
    """Search elders by name, phone number, the tail of the ID number or address (``q``, ``limit`` ≤ 100)."""
    q = _query_text(request, "q")
    if q is None:
        raise ApiError(422, "say what to search for (name, number, ID-number tail, address)", field="q")
    limit = _limit(request, 20, 100)
    store = _store(request)
    elders = await store.search(q, limit=limit)
    await _audit(request, "search", None, f"q={q} found={len(elders)}")
    return web.json_response({"elders": elders})


@allow(*STAFF)
async def api_elder_create(request: web.Request) -> web.StreamResponse:
    """Quick create (an unknown caller): ``{name, number, …}`` → ``{id}``."""
    body = await _json_body(request)
    _text(body, "name", required=True, limit=64)
    _text(body, "number", limit=32)
    store = _store(request)
    try:
        elder_id = await store.create_elder(body)
    except DirectoryInputError as exc:
        raise _input_error(exc, number="number" in body) from None
    await _audit(request, "create", elder_id, "quick create from the desktop")
    log.info("api.elder.created", elder_id=elder_id, username=identity_of(request).user.username)
    return web.json_response({"id": elder_id}, status=201, headers={"Location": f"/api/elders/{elder_id}"})


@allow(*READERS)
async def api_elder(request: web.Request) -> web.StreamResponse:
    """An elder's profile (the ID number masked; ``?unmask=1`` for admins), audit-logged."""
    elder_id = _path_id(request, "elder_id", "elder")
    unmask = request.query.get("unmask") in ("1", "true")
    if unmask and identity_of(request).user.role != "admin":
        raise ApiError(403, "only admins may see whole ID numbers", field="unmask")
    elder = await _store(request).elder(elder_id, unmask=unmask)
    if elder is None:
        raise ApiError(404, "no elder with this id")
    await _audit(request, "view", elder_id, "unmasked" if unmask else "")
    return web.json_response(elder)


@allow(*STAFF)
async def api_elder_update(request: web.Request) -> web.StreamResponse:
    """Change an elder's fields (audit-logged with the names of the changed fields)."""
    elder_id = _path_id(request, "elder_id", "elder")
    body = await _json_body(request)
    if not body:
        raise ApiError(422, "name at least one field to change")
    store = _store(request)
    try:
        await store.update_elder(elder_id, body)
    except KeyError:
        raise ApiError(404, "no elder with this id") from None
    except DirectoryInputError as exc:
        raise _input_error(exc) from None
    await _audit(request, "update", elder_id, ",".join(sorted(body))[:200])
    return web.json_response({"id": elder_id, "updated": sorted(body)})


@allow(*READERS)
async def api_elder_history(request: web.Request) -> web.StreamResponse:
    """An elder's calls, service records and work orders (newest first) and callback tasks."""
    elder_id = _path_id(request, "elder_id", "elder")
    store = _store(request)
    elder = await store.elder(elder_id)
    if elder is None:
        raise ApiError(404, "no elder with this id")
    limit = _limit(request, 100, 500)
    history = await store.history(elder_id=elder_id, limit=limit)
    callbacks: list[dict[str, Any]] = []
    db = getattr(request.app[DESK].engine, "db", None)
    for phone in elder.get("phones") or []:
        callbacks += await open_callbacks(db, phone["number"])
    await _audit(request, "view", elder_id, "history")
    return web.json_response({"elder_id": elder_id, "history": history,
                              "callbacks": sorted({c["id"]: c for c in callbacks}.values(),
                                                  key=lambda c: c["due_at"] or "")})


# -- service records and work orders ----------------------------------------------------------------------


@allow(*STAFF)
async def api_record_create(request: web.Request) -> web.StreamResponse:
    """A service record for a call or an elder: ``{call_id?, elder_id?, number?, disposition, notes}`` →
    ``{id}``."""
    desk = request.app[DESK]
    body = await _json_body(request)
    _known_fields(body, ("call_id", "elder_id", "number", "disposition", "notes"))
    disposition = _text(body, "disposition", required=True, limit=64)
    if disposition not in desk.config.desk.dispositions:
        raise ApiError(422, "not one of the configured dispositions (GET /api/dispositions)", field="disposition")
    notes = _text(body, "notes") or ""
    call_id = _text(body, "call_id", limit=255)
    elder_id = _positive_int(body["elder_id"], "elder_id") if body.get("elder_id") is not None else None
    number = _text(body, "number", limit=32)
    if number and not _NUMBER.match(number):
        raise ApiError(422, "expected a phone number (digits, optional leading +)", field="number")
    direction, about = await _call_about(desk.engine, call_id)
    number = number or about.get("number")
    elder_id = elder_id or about.get("elder_id")
    if elder_id is None and not number and not call_id:
        raise ApiError(422, "say whom the record is about: elder_id, number or call_id", field="elder_id")
    store = _store(request)
    if elder_id is not None and not await store.has_elder(elder_id):
        raise ApiError(422, "no elder with this id", field="elder_id")
    try:
        record_id = await store.add_record(elder_id=elder_id, number=number, call_id=call_id,
                                           operator=_own_operator(request), disposition=disposition, notes=notes,
                                           direction=direction)
    except DirectoryInputError as exc:
        raise _input_error(exc) from None
    except InvalidNumber as exc:
        raise ApiError(422, exc.en, field="number") from None
    log.info("api.record.created", record_id=record_id, call_id=call_id, elder_id=elder_id,
             username=identity_of(request).user.username)
    return web.json_response({"id": record_id}, status=201)


async def _call_about(engine: Any, call_id: str | None) -> tuple[str, dict[str, Any]]:
    """The direction of the call a record is about and whom it was with: from the live call, else from its call
    detail record (flushed first: a record is often saved right after the hang-up)."""
    if not call_id:
        return "inbound", {}
    if call_id.startswith("callback-"):
        return "callback", {}
    ua = getattr(engine, "ua", None)
    call = ua.calls.get(call_id) if ua is not None else None
    if call is not None:
        number = call.dialled if call.direction == "outbound" else call.caller_number
        return call.direction, {"number": number, "elder_id": call.elder_id}
    cdr = getattr(engine, "cdr", None)
    db = getattr(engine, "db", None)
    if cdr is None or db is None:
        return "inbound", {}
    await cdr.flush()
    async with AsyncSession(db) as session:
        row = (await session.execute(select(CallRecord.direction, CallRecord.party_number)
                                     .where(CallRecord.call_id == call_id))).first()
    if row is None:
        return "inbound", {}
    return str(row.direction), {"number": row.party_number}


@allow(*STAFF)
async def api_work_orders(request: web.Request) -> web.StreamResponse:
    """Work orders, optionally of one elder and/or in one status."""
    status = request.query.get("status")
    if status is not None and status not in WORK_ORDER_STATES:
        raise ApiError(422, f"expected one of {', '.join(WORK_ORDER_STATES)}", field="status")
    elder_id = _positive_int(request.query["elder_id"], "elder_id") if "elder_id" in request.query else None
    limit = _limit(request, 100, 500)
    orders = await _store(request).work_orders(elder_id=elder_id, status=status, limit=limit)
    return web.json_response({"work_orders": orders})


@allow(*STAFF)
async def api_work_order_create(request: web.Request) -> web.StreamResponse:
    """A work order: ``{elder_id, call_id?, type, assignee, due_at, notes}`` → ``{id}``."""
    desk = request.app[DESK]
    body = await _json_body(request)
    _known_fields(body, ("elder_id", "call_id", "type", "assignee", "due_at", "notes"))
    if body.get("elder_id") is None:
        raise ApiError(422, "required", field="elder_id")
    elder_id = _positive_int(body["elder_id"], "elder_id")
    kind = _text(body, "type", required=True, limit=64)
    if kind not in desk.config.desk.work_order_types:
        raise ApiError(422, "not one of the configured work order types (GET /api/dispositions)", field="type")
    assignee = _text(body, "assignee", required=True, limit=64)
    if body.get("due_at") is None:
        raise ApiError(422, "required", field="due_at")
    due_at = _when(body["due_at"], "due_at", _zone(request))
    notes = _text(body, "notes") or ""
    call_id = _text(body, "call_id", limit=255)
    store = _store(request)
    if not await store.has_elder(elder_id):
        raise ApiError(422, "no elder with this id", field="elder_id")
    try:
        order_id = await store.create_work_order(elder_id=elder_id, call_id=call_id, type=kind, assignee=assignee,
                                                 due_at=due_at, notes=notes,
                                                 created_by=identity_of(request).user.username)
    except DirectoryInputError as exc:
        raise _input_error(exc) from None
    log.info("api.work_order.created", work_order_id=order_id, elder_id=elder_id, call_id=call_id,
             username=identity_of(request).user.username)
    return web.json_response({"id": order_id}, status=201)


@allow(*STAFF)
async def api_work_order_update(request: web.Request) -> web.StreamResponse:
    """Move a work order on: ``{status, feedback}`` (either or both)."""
    order_id = _path_id(request, "order_id", "work order")
    body = await _json_body(request)
    _known_fields(body, ("status", "feedback"))
    status = body.get("status")
    if status is not None and status not in WORK_ORDER_STATES:
        raise ApiError(422, f"expected one of {', '.join(WORK_ORDER_STATES)}", field="status")
    feedback = _text(body, "feedback")
    if status is None and feedback is None:
        raise ApiError(422, "give a status and/or feedback", field="status")
    try:
        order = await _store(request).update_work_order(order_id, status=status, feedback=feedback)
    except KeyError:
        raise ApiError(404, "no work order with this id") from None
    except DirectoryInputError as exc:
        raise _input_error(exc) from None
    log.info("api.work_order.updated", work_order_id=order_id, status=status,
             username=identity_of(request).user.username)
    return web.json_response(order)


@allow(*READERS)
async def api_history(request: web.Request) -> web.StreamResponse:
    """Search the service history (records and work orders): ``q`` (name, number, notes), ``since``, ``until``
    (ISO dates or date-times, the center's local time unless an offset is given)."""
    zone = _zone(request)
    q = _query_text(request, "q")
    since = _when(request.query["since"], "since", zone) if request.query.get("since") else None
    until = _when(request.query["until"], "until", zone, end_of_day=True) if request.query.get("until") else None
    if since is not None and until is not None and until <= since:
        raise ApiError(422, "must be after since", field="until")
    limit = _limit(request, 100, 500)
    items = await _store(request).history(q=q, since=since, until=until, limit=limit)
    await _audit(request, "search", None, f"history q={q or ''} since={request.query.get('since', '')} "
                                          f"until={request.query.get('until', '')}"[:200])
    return web.json_response({"history": items})


@allow("auditor", "admin")
async def api_access_log(request: web.Request) -> web.StreamResponse:
    """Who saw, changed, imported or exported personal data, newest first (the access log; optionally of one
    elder). Reading it is itself logged."""
    elder_id = _positive_int(request.query["elder_id"], "elder_id") if "elder_id" in request.query else None
    limit = _limit(request, 100, 1000)
    rows = await _store(request).access_log(elder_id=elder_id, limit=limit)
    await _audit(request, "search", elder_id, "access log")
    return web.json_response({"access_log": rows})


def register(app: web.Application) -> None:
    app.router.add_get("/api/access-log", api_access_log)
    app.router.add_get("/api/elders", api_elders)
    app.router.add_post("/api/elders", api_elder_create)
    app.router.add_get("/api/elders/{elder_id}", api_elder)
    app.router.add_patch("/api/elders/{elder_id}", api_elder_update)
    app.router.add_get("/api/elders/{elder_id}/history", api_elder_history)
    app.router.add_post("/api/records", api_record_create)
    app.router.add_get("/api/work-orders", api_work_orders)
    app.router.add_post("/api/work-orders", api_work_order_create)
    app.router.add_patch("/api/work-orders/{order_id}", api_work_order_update)
    app.router.add_get("/api/history", api_history)
