"""The desktop's call control API: what an operator does with the current call (``engine.control``,
:mod:`callcenter.acd.control`). Every route: operator, supervisor, admin; JSON in and out; a session needs the
CSRF token.

The operator acted for is the logged-in user's (``operators[].user``). A supervisor or admin acts for an operator
by naming them, ``?operator=NAME`` or ``"operator": NAME`` in the body (not on ``/transfer``, where ``operator``
is the colleague the call goes to: use the query there); an operator never acts for another.

- ``POST /api/desk/device`` ``{device: "browser"|"phone"}`` — where this operator's calls ring
- ``POST /api/desk/webrtc`` ``{type: "offer", sdp}`` → ``{type: "answer", sdp}`` — the browser softphone's leg
- ``POST /api/desk/answer`` ``{offer_id}`` — answer in the browser (desk phone: lift the handset)
- ``POST /api/desk/hangup`` — end the current call, or refuse the ringing offer
- ``POST /api/desk/hold`` ``{held}``, ``POST /api/desk/mute`` ``{muted}``, ``POST /api/desk/dtmf`` ``{digits}``
- ``POST /api/desk/transfer`` ``{number}`` | ``{queue}`` | ``{operator}`` — blind transfer
- ``POST /api/desk/conference`` ``{number}`` | ``{service}`` → 201 ``{party, call}``;
  ``DELETE /api/desk/conference/{party_call_id}`` drops a party
- ``POST /api/desk/dial`` ``{number, elder_id?}`` → 202 ``{call, dialling}`` — an outbound call placed for the
  operator (``engine.dialler``, :mod:`callcenter.acd.dialler`): the desk phone rings first, then the elder; on the
  browser softphone the elder is called at once

Answers are ``{"operator": NAME, "call": CALL|null}`` (the CALL shape of docs/desktop.md, without the pop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from agents.acd_api import _engine_part
from agents.api import ApiError, _json_body
from agents.desk import DESK, identity_of
from agents.roles import STAFF, allow
from callcenter.acd.control import ControlError
from callcenter.acd.dialler import DialError
from callcenter.directory.numbers import InvalidNumber, normalise

log = structlog.get_logger("agents.web")
T = TypeVar("T")

MAX_SDP = 16 * 1024  # a browser's audio offer with its candidates is a few kB

_OPERATOR = {"type": "string", "description": "supervisors and admins: the operator acted for"}
REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "api_desk_device": {"type": "object", "required": ["device"], "additionalProperties": False,
                        "properties": {"device": {"enum": ["browser", "phone"]}, "operator": _OPERATOR}},
    "api_desk_webrtc": {"type": "object", "required": ["type", "sdp"], "additionalProperties": False,
                        "properties": {"type": {"const": "offer"}, "sdp": {"type": "string", "maxLength": MAX_SDP},
                                       "operator": _OPERATOR}},
    "api_desk_answer": {"type": "object", "required": ["offer_id"], "additionalProperties": False,
                        "properties": {"offer_id": {"type": "integer", "minimum": 1}, "operator": _OPERATOR}},
    "api_desk_hangup": {"type": "object", "additionalProperties": False, "properties": {"operator": _OPERATOR}},
    "api_desk_hold": {"type": "object", "required": ["held"], "additionalProperties": False,
                      "properties": {"held": {"type": "boolean"}, "operator": _OPERATOR}},
    "api_desk_mute": {"type": "object", "required": ["muted"], "additionalProperties": False,
                      "properties": {"muted": {"type": "boolean"}, "operator": _OPERATOR}},
    "api_desk_dtmf": {"type": "object", "required": ["digits"], "additionalProperties": False,
                      "properties": {"digits": {"type": "string", "pattern": "^[0-9*#A-D]{1,32}$"},
                                     "operator": _OPERATOR}},
    "api_desk_transfer": {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                          "properties": {"number": {"type": "string", "pattern": "^\\+?[0-9]{2,32}$"},
                                         "queue": {"type": "string"},
                                         "operator": {"type": "string", "description": "the colleague"}}},
    "api_desk_conference": {"type": "object", "additionalProperties": False,
                            "properties": {"number": {"type": "string", "pattern": "^\\+?[0-9]{2,32}$"},
                                           "service": {"type": "string", "examples": ["120", "110"]},
                                           "operator": _OPERATOR}},
    "api_desk_drop_party": {"type": "object", "additionalProperties": False, "properties": {"operator": _OPERATOR}},
    "api_desk_dial": {"type": "object", "required": ["number"], "additionalProperties": False,
                      "properties": {"number": {"type": "string", "maxLength": 32,
                                                "description": "as people write it: 138 0013 8001, 010-6234 5678, "
                                                               "+86 …; normalised as the directory keys numbers"},
                                     "elder_id": {"type": "integer", "minimum": 1,
                                                  "description": "the elder the call is about (the pop)"},
                                     "operator": _OPERATOR}},
}


# -- who and what ---------------------------------------------------------------------------------------------
async def _body(request: web.Request, fields: tuple[str, ...]) -> dict[str, Any]:
    """The JSON body (an empty one is ``{}``), refusing fields the route does not know."""
    body = await _json_body(request) if request.can_read_body else {}
    for key in body:
        if key not in fields:
            raise ApiError(422, f"unknown field; expected {', '.join(fields) or 'none'}", field=key)
    return body


def _acting_for(request: web.Request, named: Any = None) -> tuple[Any, str]:
    """(engine.control, the operator acted for)."""
    control = _engine_part(request, "control")
    acd = _engine_part(request, "acd")
    identity = identity_of(request)
    asked = request.query.get("operator", named)
    username = identity.user.username.casefold()
    own = next((o.name for o in acd.operators.values() if o.user is not None and o.user.casefold() == username), None)
    if asked is None:
        if own is None:
            if identity.user.role in ("supervisor", "admin"):
                raise ApiError(422, "name the operator you act for", field="operator")
            raise ApiError(403, "you are not an operator (no operators[].user is you)")
        return control, str(own)
    if not isinstance(asked, str) or asked not in acd.operators:
        raise ApiError(422, "no operator with this name", field="operator")
    if asked != own and identity.user.role not in ("supervisor", "admin"):
        raise ApiError(403, "an operator acts only for themselves", field="operator")
    return control, asked


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise ApiError(422, "expected true or false", field=name)
    return value


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, "expected a string", field=name)
    return value


def _answer(name: str, call: Any, status: int = 200, **extra: Any) -> web.Response:
    return web.json_response({"operator": name, "call": call, **extra}, status=status)


def _refused_as_api(action: Callable[[], T]) -> T:
    """Run a call-control action; its refusal (ControlError) becomes the JSON error naming the field."""
    try:
        return action()
    except ControlError as exc:
        raise ApiError(exc.status, exc.message, field=exc.field) from None


def _done(request: web.Request, action: str, name: str, **fields: Any) -> None:
    log.info("api.desk." + action, operator=name, username=identity_of(request).user.username, **fields)


# -- handlers -------------------------------------------------------------------------------------------------
@allow(*STAFF)
async def api_desk_device(request: web.Request) -> web.StreamResponse:
    """Choose where this operator's calls ring: the desk phone or the browser softphone."""
    body = await _body(request, ("device", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    device = body.get("device")
    if device not in ("browser", "phone"):
        raise ApiError(422, "expected browser or phone", field="device")
    _refused_as_api(lambda: control.set_device(name, device))
    _done(request, "device", name, device=device, call_id=None)
    return web.json_response({"operator": name, "device": device})


@allow(*STAFF)
async def api_desk_webrtc(request: web.Request) -> web.StreamResponse:
    """The browser softphone's media leg: the page's SDP offer (ICE gathered, no trickle) in, the answer out. A new
    leg replaces the old one (after a reload) and takes over a running call."""
    body = await _body(request, ("type", "sdp", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    if body.get("type") != "offer":
        raise ApiError(422, 'expected "offer"', field="type")
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_SDP:
        raise ApiError(422, f"expected an SDP offer (starting v=0, at most {MAX_SDP} characters)", field="sdp")
    try:
        answer = await control.connect_browser(name, sdp)
    except ControlError as exc:
        raise ApiError(exc.status, exc.message, field=exc.field) from None
    _done(request, "webrtc", name, call_id=None)
    return web.json_response({"type": "answer", "sdp": answer})


@allow(*STAFF)
async def api_desk_answer(request: web.Request) -> web.StreamResponse:
    """Answer the ringing offer in the browser (with a desk phone, lift the handset instead: 409)."""
    body = await _body(request, ("offer_id", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    offer_id = body.get("offer_id")
    if isinstance(offer_id, bool) or not isinstance(offer_id, int) or offer_id < 1:
        raise ApiError(422, "expected the offer's id (a positive integer)", field="offer_id")
    call = _refused_as_api(lambda: control.answer(name, offer_id))
    _done(request, "answer", name, call_id=call["call_id"] if call else None, offer_id=offer_id)
    return _answer(name, call)


@allow(*STAFF)
async def api_desk_hangup(request: web.Request) -> web.StreamResponse:
    """End the operator's current call (the caller gets a BYE unless a third party stays), or refuse the ringing
    offer (a missed offer: the call rings elsewhere)."""
    body = await _body(request, ("operator",))
    control, name = _acting_for(request, body.get("operator"))
    call = _refused_as_api(lambda: control.hangup(name))
    _done(request, "hangup", name, call_id=call["call_id"] if call else None)
    return _answer(name, call)


@allow(*STAFF)
async def api_desk_hold(request: web.Request) -> web.StreamResponse:
    """Hold (the caller hears music, the operator silence) or take off hold."""
    body = await _body(request, ("held", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    held = _flag(body, "held")
    call = _refused_as_api(lambda: control.hold(name, held))
    _done(request, "hold", name, call_id=call["call_id"] if call else None, held=held)
    return _answer(name, call)


@allow(*STAFF)
async def api_desk_mute(request: web.Request) -> web.StreamResponse:
    """Mute (the caller and parties stop hearing the operator) or unmute."""
    body = await _body(request, ("muted", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    muted = _flag(body, "muted")
    call = _refused_as_api(lambda: control.mute(name, muted))
    _done(request, "mute", name, call_id=call["call_id"] if call else None, muted=muted)
    return _answer(name, call)


@allow(*STAFF)
async def api_desk_dtmf(request: web.Request) -> web.StreamResponse:
    """Send digits (0-9 * # A-D, up to 32) as RFC 4733 events on the caller's leg."""
    body = await _body(request, ("digits", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    call = _refused_as_api(lambda: control.dtmf(name, body.get("digits")))
    _done(request, "dtmf", name, call_id=call["call_id"] if call else None)
    return _answer(name, call)


@allow(*STAFF)
async def api_desk_transfer(request: web.Request) -> web.StreamResponse:
    """Blind transfer to a number (through a trunk), a queue (the priority class is kept) or a colleague (only
    them, until they miss it); the operator is released at once."""
    body = await _body(request, ("number", "queue", "operator"))
    control, name = _acting_for(request)
    targets = {key: _text(body, key) for key in ("number", "queue", "operator") if key in body}
    if len(targets) != 1:
        raise ApiError(422, "give exactly one of number, queue, operator", field=next(iter(targets), "number"))
    result = _refused_as_api(lambda: control.transfer(name, **targets))
    _done(request, "transfer", name, call_id=result["call_id"], target=result["target"])
    return _answer(name, control.current(name), transferred=result)


@allow(*STAFF)
async def api_desk_conference(request: web.Request) -> web.StreamResponse:
    """Three-way call: bring in a service (120, 110: configured numbers) or any number, e.g. a family contact from
    the pop. Answers 201 with the party."""
    body = await _body(request, ("number", "service", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    number, service = _text(body, "number"), _text(body, "service")
    party = _refused_as_api(lambda: control.conference(name, number=number, service=service))
    _done(request, "conference", name, call_id=None, party_call_id=party["call_id"], label=party["label"])
    return _answer(name, control.current(name), status=201, party=party)


@allow(*STAFF)
async def api_desk_drop_party(request: web.Request) -> web.StreamResponse:
    """Hang up one party of the three-way call; with the last one gone the caller and the operator are bridged
    again."""
    body = await _body(request, ("operator",))
    control, name = _acting_for(request, body.get("operator"))
    party_call_id = request.match_info["party_call_id"]
    call = _refused_as_api(lambda: control.drop_party(name, party_call_id))
    _done(request, "drop_party", name, call_id=call["call_id"] if call else None, party_call_id=party_call_id)
    return _answer(name, call)


@allow(*STAFF)
async def api_desk_dial(request: web.Request) -> web.StreamResponse:
    """Place an outbound call for the operator (an elder from the profile, the search, the history or a contact; a
    care call): the number is normalised as the directory keys numbers; the desk phone rings first, then the elder
    (through a trunk, never on the emergency reserve); on the browser softphone the elder is called at once. The
    desktop pops the call (direction "outbound"). Answers 202 with the call (ringing) and what is dialled; 409
    when the operator is logged out, ringing or on a call, the softphone is not connected, or no trunk line is
    free."""
    body = await _body(request, ("number", "elder_id", "operator"))
    control, name = _acting_for(request, body.get("operator"))
    dialler = _engine_part(request, "dialler")
    raw = body.get("number")
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 32:
        raise ApiError(422, "expected a phone number (at most 32 characters)", field="number")
    directory = request.app[DESK].config.directory
    try:
        number = normalise(raw, directory.region, directory.area_code)
    except InvalidNumber as exc:
        raise ApiError(422, exc.en, field="number") from None
    elder_id = body.get("elder_id")
    if elder_id is not None:
        if isinstance(elder_id, bool) or not isinstance(elder_id, int) or elder_id < 1:
            raise ApiError(422, "expected the elder's id (a positive integer)", field="elder_id")
        store = getattr(request.app[DESK].engine, "directory", None)
        if store is not None and not await store.has_elder(elder_id):
            raise ApiError(422, "no elder with this id", field="elder_id")
    try:
        placed = dialler.call(name, number, elder_id=elder_id)
    except DialError as exc:
        raise ApiError(exc.status, str(exc), field=exc.field) from None
    _done(request, "dial", name, call_id=placed.key, number=number, elder_id=elder_id)
    return _answer(name, control.current(name), status=202,
                   dialling={"call_id": placed.key, "number": number, "elder_id": elder_id,
                             "device": "browser" if placed.browser else "phone"})


def register(app: web.Application) -> None:
    add = app.router.add_post
    add("/api/desk/device", api_desk_device)
    add("/api/desk/webrtc", api_desk_webrtc)
    add("/api/desk/answer", api_desk_answer)
    add("/api/desk/hangup", api_desk_hangup)
    add("/api/desk/hold", api_desk_hold)
    add("/api/desk/mute", api_desk_mute)
    add("/api/desk/dtmf", api_desk_dtmf)
    add("/api/desk/transfer", api_desk_transfer)
    add("/api/desk/conference", api_desk_conference)
    app.router.add_delete("/api/desk/conference/{party_call_id}", api_desk_drop_party)
    add("/api/desk/dial", api_desk_dial)
