"""The desktop's read side outside the directory: what an operator's desk shows right now, the supervisors'
wallboard, and the form choices.

- ``GET /api/desk/current`` (operator, supervisor, admin): the operator's state and device, the ringing offer with
  its pop, the current call with its pop. A page calls it after (re)connecting to ``/api/desk/events``, so a
  reload loses nothing. Supervisors and admins may ask for any operator with ``?operator=NAME``.
- ``GET /api/wallboard`` (supervisor, admin): queues (waiting, longest wait, emergencies waiting, today's
  answered/abandoned/service level), operators (state, reason, device, time in state, calls today) and today's
  KPIs with hourly offered/answered, all from the same figures as the ``queue`` push event.
- ``GET /api/dispositions`` (everybody logged in): disposition codes, work order types and assignees
  (configuration section ``desk``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agents.acd_api import _engine_part
from agents.api import ApiError
from agents.auth import ROLES
from agents.desk import DESK, identity_of
from agents.push import HUB, DeskHub
from agents.roles import STAFF, allow
from agents.screenpop import call_facts
from agents.today import operator_rows, queue_rows, summary


def _operator_name(request: web.Request, hub: DeskHub) -> str | None:
    """The operator whose desk is asked for: the user's own; supervisors and admins may name one."""
    identity = identity_of(request)
    asked = request.query.get("operator")
    acd = _engine_part(request, "acd")
    if asked is not None:
        if identity.user.role not in ("supervisor", "admin"):
            own = hub.operator_of.get(identity.user.username.casefold())
            if asked != own:
                raise ApiError(403, "an operator may only see their own desk", field="operator")
        if asked not in acd.operators:
            raise ApiError(404, "no operator with this name", field="operator")
        return asked
    name = hub.operator_of.get(identity.user.username.casefold())
    return name if name in acd.operators else None


async def _pop(request: web.Request, hub: DeskHub, call_id: str, future: Any = None,
               **facts: Any) -> dict[str, Any] | None:
    engine = request.app[DESK].engine
    try:
        pop = await (future or hub.pops.get(call_id, lambda: call_facts(engine, call_id, **facts)))
    except Exception:
        return None
    hub.shown(identity_of(request).user.username, pop["call"]["call_id"] or call_id, pop)
    return pop


@allow(*STAFF)
async def api_desk_current(request: web.Request) -> web.StreamResponse:
    """The operator's desk right now: state and device, the ringing offer and the current call, each with its
    pop (restores the desktop after a reload)."""
    hub = request.app[HUB]
    engine = request.app[DESK].engine
    name = _operator_name(request, hub)
    if name is None:
        return web.json_response({"operator": None, "offer": None, "call": None})
    acd = engine.acd
    operator = acd.operators[name]
    body: dict[str, Any] = {
        "operator": {"name": name, "display_name": operator.display_name, "state": operator.state.value,
                     "reason": operator.pause_reason, "device": getattr(operator, "device", "phone"),
                     "call_id": operator.call_id},
        "offer": None, "call": None}
    ringing = next((o for o in list(acd.offers.values()) if o.operator.name == name), None)
    if ringing is not None:
        call_id = ringing.call.call_id
        body["offer"] = {"offer_id": ringing.id, "call_id": call_id,
                         "pop": await _pop(request, hub, call_id, queue=ringing.call.queue.name,
                                           priority=ringing.call.priority, offered_at=ringing.started_at)}
    elif (dialled := hub.dialling.get(name)) is not None and operator.state.value == "reserved":
        body["offer"] = {"offer_id": None, "call_id": dialled, "pop": hub.pops.ready(dialled)}
    control = getattr(engine, "control", None)
    current = control.current(name) if control is not None else None
    if current is not None:
        call = dict(current)
        future = hub.call_pop(name, call)
        call["pop"] = await _pop(request, hub, call["call_id"], future) if future is not None else None
        body["call"] = call
    return web.json_response(body)


@allow("supervisor", "admin")
async def api_wallboard(request: web.Request) -> web.StreamResponse:
    """Queues, operators and today's KPIs (with hourly offered/answered) for the supervisors' wallboard."""
    hub = request.app[HUB]
    acd = _engine_part(request, "acd")
    report = hub.today.report()
    return web.json_response({"day": hub.today.day.isoformat(), "queues": queue_rows(acd, report),
                              "operators": operator_rows(acd, report),
                              "kpi": summary(report, hub.today.hourly())})


@allow(*ROLES)
async def api_dispositions(request: web.Request) -> web.StreamResponse:
    """The choices of the desktop's forms: disposition codes, work order types, assignees."""
    desk = request.app[DESK].config.desk
    return web.json_response({"dispositions": list(desk.dispositions), "work_order_types": list(desk.work_order_types),
                              "assignees": list(desk.assignees)})


def register(app: web.Application) -> None:
    app.router.add_get("/api/desk/current", api_desk_current)
    app.router.add_get("/api/wallboard", api_wallboard)
    app.router.add_get("/api/dispositions", api_dispositions)
