"""The desktop's two working pages: ``GET /desk`` (the operator desktop) and ``GET /wallboard`` (the supervisors'
wallboard). Both are server-rendered shells (Jinja2) that plain JavaScript modules in ``agents/static`` fill from
the JSON API and the push stream (docs/desktop.md). Nothing runs inline (CSP ``default-src 'self'``): what the
scripts need from the server travels in ``<script type="application/json">`` blocks, which browsers never run:
the words of the page's language (:data:`agents.i18n.STRINGS`, the desk's own included) and a small page
configuration (who is logged in, the operator they are, queues and operators to transfer to, ICE servers for the
softphone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from aiohttp import web

from agents.desk import DESK, Identity, identity_of
from agents.i18n import STRINGS, choose_lang
from agents.roles import allow
from callcenter.config import Config

DESK_ROLES: Final = ("operator", "supervisor", "admin")
WALLBOARD_ROLES: Final = ("supervisor", "admin")
# Pause reasons offered in the state selector (the ACD accepts any short reason; these are the usual ones).
PAUSE_REASONS: Final = ("break", "meal", "training", "after_call_work")
DESK_SCRIPTS: Final = ("desk.js",)
WALLBOARD_SCRIPTS: Final = ("wallboard.js",)


def own_operator(config: Config, username: str) -> Any | None:
    """The configured operator whose desktop login is ``username`` (``operators[].user``), if any."""
    wanted = username.casefold()
    for operator in config.operators:
        if operator.user is not None and operator.user.casefold() == wanted:
            return operator
    return None


def _ice_servers(config: Config) -> list[dict[str, Any]]:
    """The softphone's ICE servers from the ``webrtc`` section, as RTCPeerConnection wants them; none by default
    (a closed network: host candidates only)."""
    section = getattr(config, "webrtc", None)
    servers: Iterable[Any] = getattr(section, "ice_servers", None) or ()
    result: list[dict[str, Any]] = []
    for server in servers:
        if isinstance(server, str):
            result.append({"urls": server})
            continue
        data = server.model_dump(exclude_none=True) if hasattr(server, "model_dump") else dict(server)
        urls = data.get("urls") or data.get("url")
        if not urls:
            continue
        entry: dict[str, Any] = {"urls": urls}
        for key in ("username", "credential"):
            if data.get(key):
                entry[key] = str(data[key])
        result.append(entry)
    return result


def page_config(config: Config, identity: Identity, lang: str, *, softphone: bool) -> dict[str, Any]:
    """What the page's scripts need to know from the server (JSON-ready). The ICE servers (a TURN credential is
    the browser's to use) only for a page with a softphone."""
    user = identity.user
    operator = own_operator(config, user.username)
    return {
        "user": user.username,
        "user_label": user.label,
        "role": user.role,
        "lang": lang,
        "operator": operator.name if operator is not None else None,
        "operator_label": (operator.display_name or operator.name) if operator is not None else None,
        "pause_reasons": list(PAUSE_REASONS),
        "queues": [{"name": q.name, "label": q.display_name or q.name} for q in config.queues],
        "operators": [{"name": o.name, "label": o.display_name or o.name} for o in config.operators],
        "ice_servers": _ice_servers(config) if softphone else [],
    }


def render(request: web.Request, template: str, context: Mapping[str, Any], *, softphone: bool = False) -> web.Response:
    """A page of the desktop for the logged-in user, in the request's language, with the scripts' words and
    configuration as JSON blocks (``js_strings``, ``page_config``)."""
    desk = request.app[DESK]
    identity = identity_of(request)
    session = identity.session
    lang = choose_lang(request, session)
    strings = STRINGS[lang]
    static = request.app.router["static"]
    values: dict[str, Any] = {
        "t": strings,
        "lang": lang,
        "other_lang": "en" if lang == "zh" else "zh",
        "user": identity.user,
        "role_label": strings[f"role_{identity.user.role}"],
        "csrf_token": session.csrf_token if session else "",
        "static": lambda name: str(static.url_for(filename=name)),
        "refresh": None,
        "js_strings": strings,
        "page_config": page_config(desk.config, identity, lang, softphone=softphone),
    }
    values.update(context)
    html = desk.templates.get_template(template).render(values)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


@allow(*DESK_ROLES)
async def desk_page(request: web.Request) -> web.StreamResponse:
    """The operator desktop: state, softphone, screen pop, call controls, service records, callbacks, history."""
    return render(request, "desk.html", {"scripts": DESK_SCRIPTS}, softphone=True)


@allow(*WALLBOARD_ROLES)
async def wallboard_page(request: web.Request) -> web.StreamResponse:
    """The supervisors' wallboard: queues, operators, today's KPIs."""
    return render(request, "wallboard.html", {"scripts": WALLBOARD_SCRIPTS})


def register(app: web.Application) -> None:
    app.router.add_get("/desk", desk_page)
    app.router.add_get("/wallboard", wallboard_page)
