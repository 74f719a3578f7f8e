"""The operator desktop's HTTP server (aiohttp on the engine's one asyncio loop): the application, its
middleware (who is asking, role checks, CSRF, security headers, errors), login/logout and the pages.

Every route declares who may use it with :func:`agents.roles.allow` (roles) or :func:`agents.roles.public`;
a route that declares nothing is refused to everybody (default deny). Browsers log in with a form and get a
session cookie; state changes from a session need its CSRF token. Scripts may use HTTP Basic on ``/api/*``
(no cookie, no CSRF). The JSON API is :mod:`agents.api`, the status data :mod:`agents.status`, the words
:mod:`agents.i18n`.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import jinja2
import structlog
from aiohttp import hdrs, web

from agents import acd_api, desk_api, desk_calls, directory_api, metrics_route, openapi, pages, push
from agents.api import (
    ApiError,
    api_add_party,
    api_call,
    api_calls,
    api_hangup,
    api_originate,
    api_status,
    is_api,
    json_error,
)
from agents.auth import ROLES, LoginLimiter, SessionStore, UserDirectory, same_token
from agents.credentials import identify, log_denied
from agents.desk import DESK, IDENTITY, Desk, Identity, identity_of
from agents.i18n import DEFAULT_LANG, LANGS, STRINGS, choose_lang
from agents.roles import PUBLIC, Handler, allow, public, route_roles
from agents.status import format_duration, status_snapshot
from callcenter.config import Config

log = structlog.get_logger("agents.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
REFRESH_SECONDS: Final = 5


def create_app(engine: Any, config: Config, *, now: Callable[[], float] = time.monotonic) -> web.Application:
    """The desktop application for ``engine``; ``now`` (seconds) drives session expiry and login lockouts."""
    secure = config.http.secure_cookies
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["duration"] = format_duration
    app = web.Application(middlewares=[_errors_middleware, _auth_middleware], client_max_size=64 * 1024)
    app[DESK] = Desk(
        engine=engine,
        config=config,
        users=UserDirectory(config.users, now=now),
        sessions=SessionStore(config.http.session_hours * 3600, now=now),
        limiter=LoginLimiter(limit=5, window=300, now=now),
        ip_limiter=LoginLimiter(limit=20, window=300, now=now),
        templates=templates,
        # __Host- cookies are only accepted over HTTPS, for path /, without a domain: no subdomain can set them.
        session_cookie="__Host-cc_session" if secure else "cc_session",
        login_cookie="__Host-cc_login" if secure else "cc_login",
    )
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", status_page)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/calls", api_calls)
    app.router.add_post("/api/calls", api_originate)
    app.router.add_get("/api/calls/{call_id}", api_call)
    app.router.add_delete("/api/calls/{call_id}", api_hangup)
    app.router.add_post("/api/calls/{call_id}/parties", api_add_party)
    acd_api.register(app)
    metrics_route.register(app)
    push.register(app)
    desk_api.register(app)
    desk_calls.register(app)
    directory_api.register(app)
    openapi.register(app)
    pages.register(app)
    app.router.add_static("/static", STATIC, name="static", append_version=True)
    return app


async def start_http(engine: Any, config: Config) -> web.AppRunner:
    """Serve the desktop on ``config.http.listen`` on the running loop; :func:`bound_address` tells where."""
    if not config.users:
        log.warning("http.no_users", hint="nobody can log in: add users (callcenter users hash-password)")
    runner = web.AppRunner(create_app(engine, config), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.http.listen.host, config.http.listen.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_address(runner: web.AppRunner) -> tuple[str, int]:
    host, port = runner.addresses[0][:2]
    return str(host), int(port)


async def stop_http(runner: web.AppRunner) -> None:
    await runner.cleanup()


# -- middleware -------------------------------------------------------------------------------------------

_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Content-Security-Policy", _CSP)
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), geolocation=(), microphone=(self)")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={hdrs.LOCATION: location})


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API errors are JSON ``{"error": ...}``, including aiohttp's own 404/405/413."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if not is_api(request) or exc.status < 400 or exc.content_type == "application/json":
            raise
        response = json_error(exc.status, exc.reason)
        if hdrs.ALLOW in exc.headers:
            response.headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
        return response
    except Exception:
        log.exception("http.error", method=request.method, path=request.path)
        if is_api(request):
            return json_error(500, "internal error; see the engine log")
        raise web.HTTPInternalServerError(text="500: internal error; see the engine log") from None


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    desk = request.app[DESK]
    match = request.match_info
    roles = route_roles(match.route)
    if roles is PUBLIC:
        return await handler(request)
    identity = await identify(request, desk)
    if identity is None:
        return _deny_anonymous(request)
    if match.http_exception is not None:  # 404/405 for a logged-in user
        raise match.http_exception
    user = identity.user
    if roles is None or user.role not in roles:
        log_denied(request, "role" if roles else "undeclared_route", user)
        if is_api(request):
            return json_error(403, f"the {user.role} role may not do this")
        return _page(request, "error.html", {"message_key": "forbidden"}, identity=identity, status=403)
    if request.method not in SAFE_METHODS and identity.session is not None:
        given = request.headers.get("X-CSRF-Token")
        if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            given = str((await request.post()).get("csrf_token", "")) or None
        if not same_token(identity.session.csrf_token, given):
            log_denied(request, "csrf", user)
            if is_api(request):
                return json_error(403, "missing or wrong CSRF token (X-CSRF-Token header)")
            raise web.HTTPForbidden(text="403: missing or wrong CSRF token; reload the page and try again")
    if identity.session is not None and request.method == "GET" and request.query.get("lang") in LANGS:
        identity.session.lang = request.query["lang"]
    request[IDENTITY] = identity
    return await handler(request)


def _deny_anonymous(request: web.Request) -> web.StreamResponse:
    log_denied(request, "anonymous", None)
    if is_api(request):
        return json_error(401, "log in first (session cookie or HTTP Basic)")
    target = "/login"
    if request.method == "GET" and request.path != "/":
        target += "?next=" + quote(request.path_qs, safe="")
    return _redirect(target)


# -- pages ------------------------------------------------------------------------------------------------


def _page(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    *,
    identity: Identity | None = None,
    lang: str | None = None,
    status: int = 200,
) -> web.Response:
    desk = request.app[DESK]
    session = identity.session if identity else None
    lang = lang or choose_lang(request, session)
    strings = STRINGS[lang]
    static = request.app.router["static"]
    values: dict[str, Any] = {
        "t": strings,
        "lang": lang,
        "other_lang": "en" if lang == "zh" else "zh",
        "user": identity.user if identity else None,
        "role_label": strings[f"role_{identity.user.role}"] if identity else "",
        "csrf_token": session.csrf_token if session else "",
        "static": lambda name: str(static.url_for(filename=name)),
        "refresh": None,
    }
    values.update(context)
    html = desk.templates.get_template(template).render(values)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


_LOCAL_PATH = re.compile(r"^/(?:[^/\\\x00-\x20\x7f][^\\\x00-\x20\x7f]*)?$")


def _safe_next(value: str | None) -> str:
    """Only local paths, so that a crafted login link cannot send the user to another site ("//host", "/\\host")
    or inject headers."""
    if not value or not _LOCAL_PATH.match(value) or value.startswith(("/login", "/logout")):
        return "/"
    return value


@public
async def login_page(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    session = desk.sessions.get(request.cookies.get(desk.session_cookie))
    if session is not None:
        return _redirect(_safe_next(request.query.get("next")))
    return _login_form(request, lang=choose_lang(request), next_page=_safe_next(request.query.get("next")))


def _login_form(request: web.Request, *, lang: str, next_page: str, error: str | None = None, username: str = "",
                status: int = 200) -> web.Response:
    """The login form, with a fresh login token: the form echoes it and POST /login compares it with the
    SameSite=Strict cookie, so another site cannot log a browser in to an account of its choosing."""
    desk = request.app[DESK]
    token = secrets.token_urlsafe(24)
    response = _page(
        request,
        "login.html",
        {"error": error, "username": username, "login_token": token, "next": next_page},
        lang=lang,
        status=status,
    )
    response.set_cookie(desk.login_cookie, token, **desk.cookie_options())
    return response


@public
async def login_submit(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    form = await request.post()
    lang = str(form.get("lang", DEFAULT_LANG))
    lang = lang if lang in LANGS else DEFAULT_LANG
    strings = STRINGS[lang]
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))
    ip = request.remote or "-"
    next_page = _safe_next(str(form.get("next", "")) or None)

    def again(error: str, status: int) -> web.Response:
        return _login_form(request, lang=lang, next_page=next_page, error=error, username=username, status=status)

    if not same_token(request.cookies.get(desk.login_cookie, ""), str(form.get("login_token", "")) or None):
        log.warning("http.login.failed", username=username, ip=ip, reason="login_token")
        return again(strings["login_expired"], 403)
    keys = (f"{username.casefold()}|{ip}", f"*|{ip}")

    def locked() -> float:
        return max(desk.limiter.locked_for(keys[0]), desk.ip_limiter.locked_for(keys[1]))

    if (wait := locked()) > 0:
        log.warning("http.login.failed", username=username, ip=ip, reason="locked")
        message = strings["login_locked"].format(minutes=max(1, math.ceil(wait / 60)))
        return again(message, 429)
    user = await desk.users.verify(username, password)
    if user is None:
        desk.limiter.failed(keys[0])
        desk.ip_limiter.failed(keys[1])
        log.warning("http.login.failed", username=username, ip=ip, reason="bad_credentials")
        if (wait := locked()) > 0:
            message = strings["login_locked"].format(minutes=max(1, math.ceil(wait / 60)))
            return again(message, 429)
        return again(strings["login_failed"], 401)
    desk.limiter.succeeded(keys[0])
    desk.sessions.delete(request.cookies.get(desk.session_cookie))  # never keep a session id from before login
    session = desk.sessions.create(user, lang=lang)
    log.info("http.login.ok", username=user.username, role=user.role, ip=ip)
    response = _redirect(next_page)
    response.set_cookie(desk.session_cookie, session.token, max_age=int(desk.sessions.lifetime),
                        **desk.cookie_options())
    desk.clear_cookie(response, desk.login_cookie)
    return response


@allow(*ROLES)
async def logout(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    identity = identity_of(request)
    desk.sessions.delete(request.cookies.get(desk.session_cookie))
    log.info("http.logout", username=identity.user.username, ip=request.remote)
    response = _redirect("/login")
    desk.clear_cookie(response, desk.session_cookie)
    return response


@allow(*ROLES)
async def status_page(request: web.Request) -> web.StreamResponse:
    identity = identity_of(request)
    status = status_snapshot(request.app[DESK].engine)
    return _page(request, "status.html", {"status": status, "refresh": REFRESH_SECONDS}, identity=identity)
