"""The desktop's JSON API: status, and placing, reading and ending calls, with input validation. Errors are
JSON ``{"error": ...}`` (plus ``"field"`` when one input field is wrong)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import hdrs, web

from agents.auth import ROLES
from agents.desk import DESK, identity_of
from agents.roles import STAFF, allow
from agents.status import call_json, status_snapshot
from callcenter.calls.model import EndReason
from callcenter.calls.outbound import OutboundError

log = structlog.get_logger("agents.web")  # one logger name for the whole desktop


def is_api(request: web.Request) -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class ApiError(Exception):
    """An API request that cannot be served: answered ``{"error": message}`` (and ``"field"`` when the
    problem is one input field) with ``status``."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        extra = {"field": self.field} if self.field is not None else {}
        response = json_error(self.status, self.message, **extra)
        response.headers.update(self.headers)
        return response


# -- input ------------------------------------------------------------------------------------------------

_DIALLABLE = re.compile(r"^\+?[0-9]+$")
_ORIGINATE_FIELDS = frozenset({"number", "trunk", "max_duration"})


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "send a JSON object with Content-Type: application/json")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _originate_args(body: dict[str, Any], engine: Any) -> tuple[str, str | None, float | None]:
    for name in body:
        if name not in _ORIGINATE_FIELDS:
            raise ApiError(422, f"unknown field; expected {', '.join(sorted(_ORIGINATE_FIELDS))}", field=name)
    number = body.get("number")
    if not isinstance(number, str) or not 1 <= len(number) <= 32 or not _DIALLABLE.match(number):
        raise ApiError(422, 'expected a string of 1-32 digits with an optional leading "+"', field="number")
    trunk = body.get("trunk")
    if trunk is not None:
        known = engine.ua.trunks.trunks
        if not isinstance(trunk, str) or trunk not in known:
            raise ApiError(422, f"unknown trunk; known: {', '.join(sorted(known)) or 'none'}", field="trunk")
        if not known[trunk].outbound:
            raise ApiError(422, f"trunk {trunk} does not place outgoing calls", field="trunk")
    max_duration = body.get("max_duration")
    limit = engine.config.engine.max_call_duration
    if max_duration is not None:
        if isinstance(max_duration, bool) or not isinstance(max_duration, int | float) \
                or not math.isfinite(max_duration) or max_duration <= 0:
            raise ApiError(422, "expected a number of seconds greater than 0", field="max_duration")
        if max_duration > limit:
            raise ApiError(422, f"at most engine.max_call_duration ({limit:g} seconds)", field="max_duration")
        max_duration = float(max_duration)
    return number, trunk, max_duration


# -- handlers ---------------------------------------------------------------------------------------------


@allow(*ROLES)
async def api_status(request: web.Request) -> web.StreamResponse:
    return web.json_response(status_snapshot(request.app[DESK].engine))


@allow(*ROLES)
async def api_calls(request: web.Request) -> web.StreamResponse:
    return web.json_response({"calls": status_snapshot(request.app[DESK].engine)["calls"]})


@allow(*ROLES)
async def api_call(request: web.Request) -> web.StreamResponse:
    ua = request.app[DESK].engine.ua
    call = ua.calls.get(request.match_info["call_id"])
    if call is None:
        return json_error(404, "no active call with this call_id")
    return web.json_response(call_json(call, ua.clock.seconds()))


@allow(*STAFF)
async def api_originate(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    identity = identity_of(request)
    number, trunk, max_duration = _originate_args(await _json_body(request), desk.engine)
    try:
        call = desk.engine.ua.outbound.originate(number, trunk_name=trunk, max_duration=max_duration)
    except OutboundError as exc:
        log.info("api.call.refused", number=number, trunk=trunk, username=identity.user.username, error=str(exc))
        return json_error(409, str(exc))
    log.info("api.call.originate", call_id=call.call_id, number=number, trunk=call.trunk,
             username=identity.user.username)
    response = web.json_response({"call_id": call.call_id, "state": call.state.value}, status=201)
    response.headers[hdrs.LOCATION] = f"/api/calls/{quote(call.call_id, safe='')}"
    return response


@allow(*STAFF)
async def api_hangup(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    identity = identity_of(request)
    ua = desk.engine.ua
    call = ua.calls.get(request.match_info["call_id"])
    if call is None:
        return json_error(404, "no active call with this call_id")
    handler = ua.inbound if call.direction == "inbound" else ua.outbound
    handler.hangup(call, EndReason.LOCAL_BYE)
    log.info("api.call.hangup", call_id=call.call_id, username=identity.user.username)
    return web.json_response({"call_id": call.call_id, "state": call.state.value}, status=202)


@allow(*STAFF)
async def api_add_party(request: web.Request) -> web.StreamResponse:
    """Three-way call: bring 120, 110 or a family number into a call that is connected to an operator."""
    desk = request.app[DESK]
    identity = identity_of(request)
    ua = desk.engine.ua
    call = ua.calls.get(request.match_info["call_id"])
    if call is None or call.direction != "inbound":
        return json_error(404, "no active inbound call with this call_id")
    body = await _json_body(request)
    if "max_duration" in body:
        raise ApiError(422, "a party stays as long as the call", field="max_duration")
    number, trunk, _ = _originate_args(body, desk.engine)
    try:
        party = ua.inbound.add_party(call, number, trunk_name=trunk)
    except OutboundError as exc:
        log.info("api.party.refused", call_id=call.call_id, number=number, username=identity.user.username,
                 error=str(exc))
        return json_error(409, str(exc))
    log.info("api.party.add", call_id=call.call_id, party_call_id=party.call_id, number=number,
             username=identity.user.username)
    response = web.json_response({"call_id": party.call_id, "state": party.state.value}, status=201)
    response.headers[hdrs.LOCATION] = f"/api/calls/{quote(party.call_id, safe='')}"
    return response
