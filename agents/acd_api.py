"""The ACD's part of the JSON API: operators and their states, queues, callback tasks, the day's KPIs.

- ``GET /api/operators``, ``GET /api/queues``: everybody logged in (the wallboard, the desktop).
- ``POST /api/operators/{name}/state`` ``{"state": "available"|"paused"|"logged_out", "reason": "..."}``: an
  operator changes their own state only (the operator whose ``user`` is the login); supervisors and admins
  anyone's. During a call the change waits until the call ends (the answer says ``pending``).
- ``GET /api/callbacks?state=open``: the callback tasks (open and dialling by default).
- ``POST /api/callbacks/{id}/dial`` ``{"operator": "op1"}``: ring the operator's desk phone, then the elder.
  An operator dials as themselves; supervisors name the operator.
- ``POST /api/callbacks/{id}/close`` ``{"result": "completed"|"closed", "outcome": "..."}``: the only way a
  task ends, with its outcome.
- ``GET /api/stats?day=YYYY-MM-DD``: the day's KPIs from the queue event log (supervisors, auditors, admins).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from agents.api import ApiError, _json_body
from agents.auth import ROLES
from agents.desk import DESK, identity_of
from agents.roles import STAFF, allow
from callcenter.acd.dialler import DialError
from callcenter.acd.eventlog import events_between
from callcenter.stats.kpi import compute

log = structlog.get_logger("agents.web")

_STATES = ("available", "paused", "logged_out")
_TASK_STATES = ("open", "dialling", "completed", "closed")
_REASON = re.compile(r"[\w\- .:/()\u4e00-\u9fff]{1,64}")


def _engine_part(request: web.Request, name: str) -> Any:
    part = getattr(request.app[DESK].engine, name, None)
    if part is None:
        raise ApiError(503, f"the engine has no {name} (starting or stopping)")
    return part


def _own_operator(request: web.Request) -> str | None:
    """The operator the logged-in user is (by ``operators[].user``), if any."""
    acd = _engine_part(request, "acd")
    username = identity_of(request).user.username.casefold()
    for operator in acd.operators.values():
        if operator.user is not None and operator.user.casefold() == username:
            return str(operator.name)
    return None


def _may_act_for(request: web.Request, name: str) -> None:
    role = identity_of(request).user.role
    if role in ("supervisor", "admin"):
        return
    if _own_operator(request) != name:
        raise ApiError(403, "an operator may only change their own state or dial as themselves")


def _task_json(task: Any) -> dict[str, Any]:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {"id": task.id, "number": task.number, "elder_id": task.elder_id, "call_id": task.call_id,
            "reason": task.reason, "source": task.source, "state": task.state, "due_at": iso(task.due_at),
            "attempts": task.attempts, "created_at": iso(task.created_at), "closed_at": iso(task.closed_at),
            "outcome": task.outcome, "queue": task.queue, "operator": task.operator,
            "last_attempt_at": iso(task.last_attempt_at)}


def _task_id(request: web.Request) -> int:
    text = request.match_info["task_id"]
    if not text.isdigit() or len(text) > 18:
        raise ApiError(404, "no callback task with this id")
    return int(text)


@allow(*ROLES)
async def api_operators(request: web.Request) -> web.StreamResponse:
    acd = _engine_part(request, "acd")
    return web.json_response({"operators": acd.operators_view(), "counts": acd.live()["operators"]})


@allow(*STAFF)
async def api_operator_state(request: web.Request) -> web.StreamResponse:
    acd = _engine_part(request, "acd")
    name = request.match_info["name"]
    if name not in acd.operators:
        raise ApiError(404, "no operator with this name")
    _may_act_for(request, name)
    body = await _json_body(request)
    for key in body:
        if key not in ("state", "reason"):
            raise ApiError(422, "unknown field; expected state, reason", field=key)
    state = body.get("state")
    if state not in _STATES:
        raise ApiError(422, f"expected one of {', '.join(_STATES)}", field="state")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or not _REASON.fullmatch(reason)):
        raise ApiError(422, "expected 1-64 letters, digits, spaces or .-:/()", field="reason")
    if state == "paused" and reason is None:
        reason = "break"
    operator = acd.set_state(name, state, reason if state == "paused" else None)
    log.info("api.operator.state", operator=name, state=state, reason=reason,
             username=identity_of(request).user.username, now=operator.state.value)
    return web.json_response({"operator": name, "state": operator.state.value,
                              "pending": operator.pending[0].value if operator.pending else None})


@allow(*ROLES)
async def api_queues(request: web.Request) -> web.StreamResponse:
    acd = _engine_part(request, "acd")
    live = acd.live()
    return web.json_response({"queues": {name: {**live["queues"][name], "calls": calls}
                                         for name, calls in acd.snapshot().items()}})


@allow(*ROLES)
async def api_callbacks(request: web.Request) -> web.StreamResponse:
    tasks = _engine_part(request, "callbacks")
    wanted = request.query.get("state")
    if wanted is not None and wanted not in _TASK_STATES:
        raise ApiError(422, f"expected one of {', '.join(_TASK_STATES)}", field="state")
    rows = await tasks.tasks(states=(wanted,) if wanted else ("open", "dialling"))
    return web.json_response({"callbacks": [_task_json(t) for t in rows]})


@allow(*STAFF)
async def api_callback_dial(request: web.Request) -> web.StreamResponse:
    dialler = _engine_part(request, "dialler")
    task_id = _task_id(request)
    body = await _json_body(request) if request.can_read_body else {}
    for key in body:
        if key != "operator":
            raise ApiError(422, "unknown field; expected operator", field=key)
    name = body.get("operator") or _own_operator(request)
    if not isinstance(name, str) or name not in dialler.acd.operators:
        raise ApiError(422, "name the operator who dials (you are not an operator)", field="operator")
    _may_act_for(request, name)
    try:
        attempt = await dialler.dial(task_id, name)
    except DialError as exc:
        raise ApiError(exc.status, str(exc)) from None
    log.info("api.callback.dial", task_id=task_id, operator=name, username=identity_of(request).user.username)
    leg = attempt.phone or getattr(attempt, "elder", None)  # browser softphone: no desk phone call
    return web.json_response({"task_id": task_id, "operator": name,
                              "call_id": leg.call_id if leg is not None else None}, status=202)


@allow(*STAFF)
async def api_callback_close(request: web.Request) -> web.StreamResponse:
    tasks = _engine_part(request, "callbacks")
    task_id = _task_id(request)
    body = await _json_body(request)
    for key in body:
        if key not in ("result", "outcome"):
            raise ApiError(422, "unknown field; expected result, outcome", field=key)
    result = body.get("result")
    if result not in ("completed", "closed"):
        raise ApiError(422, "expected completed or closed", field="result")
    outcome = body.get("outcome")
    if not isinstance(outcome, str) or not 1 <= len(outcome.strip()) <= 200:
        raise ApiError(422, "say what happened (1-200 characters)", field="outcome")
    username = identity_of(request).user.username
    task = await tasks.finish(task_id, state=result, outcome=outcome.strip(), by=username)
    if task is None:
        if await tasks.get(task_id) is None:
            raise ApiError(404, "no callback task with this id")
        raise ApiError(409, "the task is not open (being dialled, or already ended)")
    return web.json_response(_task_json(task))


@allow("supervisor", "auditor", "admin")
async def api_stats(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    config = desk.config
    zone = ZoneInfo(config.flows.timezone)
    text = request.query.get("day")
    if text is None:
        day = dt.datetime.now(zone).date()
    else:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ApiError(422, "expected YYYY-MM-DD", field="day")
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise ApiError(422, "expected YYYY-MM-DD", field="day") from None
    start = dt.datetime.combine(day, dt.time(), zone)
    db = _engine_part(request, "db")
    events = await events_between(db, start, start + dt.timedelta(days=1))
    report = compute(events, service_levels={q.name: q.service_level for q in config.queues},
                     queues=[q.name for q in config.queues])
    return web.json_response({"day": day.isoformat(), "events": len(events), **report.as_dict()})


def register(app: web.Application) -> None:
    app.router.add_get("/api/operators", api_operators)
    app.router.add_post("/api/operators/{name}/state", api_operator_state)
    app.router.add_get("/api/queues", api_queues)
    app.router.add_get("/api/callbacks", api_callbacks)
    app.router.add_post("/api/callbacks/{task_id}/dial", api_callback_dial)
    app.router.add_post("/api/callbacks/{task_id}/close", api_callback_close)
    app.router.add_get("/api/stats", api_stats)
