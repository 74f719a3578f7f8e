"""The operator desktop's HTTP server (aiohttp on the engine's one asyncio loop): login, sessions, CSRF,
role checks, the status page and the JSON API.

Every route declares who may use it with :func:`allow` (roles) or :func:`public`; a route that declares
nothing is refused to everybody (default deny). Browsers log in with a form and get a session cookie; state
changes from a session need its CSRF token. Scripts may use HTTP Basic on ``/api/*`` (no cookie, no CSRF).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import jinja2
import structlog
from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import StaticResource

from agents.auth import ROLES, LoginLimiter, Session, SessionStore, User, UserDirectory, same_token
from callcenter.calls.model import EndReason
from callcenter.calls.outbound import OutboundError
from callcenter.config import Config

log = structlog.get_logger("agents.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC: Final[frozenset[str]] = frozenset({"<public>"})
STAFF: Final[tuple[str, ...]] = ("operator", "supervisor", "admin")  # may place and end calls
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
LANGS: Final = ("zh", "en")
REFRESH_SECONDS: Final = 5
_ROLES_ATTR: Final = "callcenter_roles"

# -- roles on routes ----------------------------------------------------------------------------------


def allow(*roles: str) -> Callable[[Handler], Handler]:
    """Declare which roles may use a route handler."""
    unknown = set(roles) - ROLES
    if not roles or unknown:
        raise ValueError(f"allow() needs roles out of {sorted(ROLES)}, got {sorted(roles)}")

    def mark(handler: Handler) -> Handler:
        setattr(handler, _ROLES_ATTR, frozenset(roles))
        return handler

    return mark


def public(handler: Handler) -> Handler:
    """Declare a route that needs no login (only the login form)."""
    setattr(handler, _ROLES_ATTR, PUBLIC)
    return handler


def route_roles(route: web.AbstractRoute) -> frozenset[str] | None:
    """The roles a route allows, :data:`PUBLIC`, or None when it declares nothing (nobody may use it)."""
    if isinstance(route.resource, StaticResource):
        return PUBLIC
    roles = getattr(route.handler, _ROLES_ATTR, None)
    return roles if isinstance(roles, frozenset) else None


# -- strings --------------------------------------------------------------------------------------------

STRINGS: Final[dict[str, dict[str, str]]] = {
    "zh": {
        "app_title": "平安通呼叫中心", "status_title": "运行状态", "login_title": "坐席登录",
        "login_subtitle": "请使用您的坐席账号登录", "username": "用户名", "password": "密码",
        "login": "登录", "logout": "退出", "other_lang": "English",
        "login_failed": "用户名或密码不正确。",
        "login_locked": "登录失败次数过多，请 {minutes} 分钟后再试。",
        "login_expired": "登录页面已过期，请重新输入。",
        "node": "节点", "sip_listen": "SIP 监听", "updated": "更新于", "refresh_note": "每 5 秒自动刷新",
        "active_calls": "当前通话", "emergency_calls": "紧急通话", "registrations": "注册设备",
        "trunks": "中继线", "counters": "计数器", "channels_in_use": "中继占用",
        "call_id": "呼叫 ID", "direction": "方向", "caller": "主叫", "dialled": "被叫", "state": "状态",
        "route": "路由", "trunk": "中继", "emergency": "紧急", "duration": "时长",
        "no_calls": "当前没有通话", "no_registrations": "没有已注册的设备", "no_trunks": "未配置中继线",
        "aor": "账号 (AOR)", "contact": "联系地址", "expires": "剩余 (秒)",
        "trunk_name": "名称", "channels": "占用 / 通道", "reserve": "紧急预留", "registered": "注册",
        "yes": "是", "no": "否", "not_registering": "—",
        "transport": "传输层", "transactions": "事务层", "inbound": "呼入", "outbound": "呼出", "auth": "认证",
        "forbidden": "您的角色无权访问此页面。", "back": "返回首页",
        "role_operator": "话务员", "role_supervisor": "班长", "role_auditor": "审计员", "role_admin": "管理员",
        "dir_inbound": "呼入", "dir_outbound": "呼出",
        "state_offered": "呼叫中", "state_ringing": "振铃", "state_answered": "已应答",
        "state_confirmed": "通话中", "state_ending": "挂断中", "state_ended": "已结束",
    },
    "en": {
        "app_title": "Elder-care Call Center", "status_title": "Status", "login_title": "Operator login",
        "login_subtitle": "Log in with your desk account", "username": "Username", "password": "Password",
        "login": "Log in", "logout": "Log out", "other_lang": "中文",
        "login_failed": "The username or password is not correct.",
        "login_locked": "Too many failed logins. Try again in {minutes} minutes.",
        "login_expired": "The login page had expired; please enter your details again.",
        "node": "Node", "sip_listen": "SIP listen", "updated": "Updated", "refresh_note": "refreshes every 5 s",
        "active_calls": "Active calls", "emergency_calls": "Emergency calls", "registrations": "Registered devices",
        "trunks": "Trunks", "counters": "Counters", "channels_in_use": "Trunk channels in use",
        "call_id": "Call ID", "direction": "Direction", "caller": "Caller", "dialled": "Dialled", "state": "State",
        "route": "Route", "trunk": "Trunk", "emergency": "Emergency", "duration": "Duration",
        "no_calls": "No active calls", "no_registrations": "No registered devices", "no_trunks": "No trunks",
        "aor": "Account (AOR)", "contact": "Contact", "expires": "Expires (s)",
        "trunk_name": "Name", "channels": "Used / total", "reserve": "Reserve", "registered": "Registered",
        "yes": "yes", "no": "no", "not_registering": "—",
        "transport": "Transport", "transactions": "Transactions", "inbound": "Inbound", "outbound": "Outbound",
        "auth": "Authentication",
        "forbidden": "Your role may not open this page.", "back": "Back to the status page",
        "role_operator": "Operator", "role_supervisor": "Supervisor", "role_auditor": "Auditor",
        "role_admin": "Administrator",
        "dir_inbound": "in", "dir_outbound": "out",
        "state_offered": "offered", "state_ringing": "ringing", "state_answered": "answered",
        "state_confirmed": "talking", "state_ending": "ending", "state_ended": "ended",
    },
}

# -- application state ----------------------------------------------------------------------------------


@dataclass
class Desk:
    """What the handlers share; one per application."""

    engine: Any
    config: Config
    users: UserDirectory
    sessions: SessionStore
    limiter: LoginLimiter
    ip_limiter: LoginLimiter
    templates: jinja2.Environment
    session_cookie: str
    login_cookie: str

    def cookie_options(self) -> dict[str, Any]:
        return {"httponly": True, "samesite": "Strict", "secure": self.config.http.secure_cookies, "path": "/"}

    def clear_cookie(self, response: web.StreamResponse, name: str) -> None:
        """Expire a cookie with the attributes it was set with (a __Host- cookie without Secure is ignored)."""
        response.set_cookie(name, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", **self.cookie_options())


@dataclass(frozen=True, slots=True)
class Identity:
    user: User
    session: Session | None  # None when the request authenticated with HTTP Basic


DESK: Final = web.AppKey("desk", Desk)
# Where the middleware leaves the caller's identity for the handler (web.RequestKey from aiohttp 3.13 on).
_IDENTITY: Final[Any] = web.RequestKey("identity", Identity) if hasattr(web, "RequestKey") else "callcenter.identity"


def identity_of(request: web.Request) -> Identity:
    """Who is asking; set for every route that is not public."""
    identity: Identity = request[_IDENTITY]
    return identity


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
    templates.filters["duration"] = _format_duration
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


def _is_api(request: web.Request) -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
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
        response = _json_error(self.status, self.message, **extra)
        response.headers.update(self.headers)
        return response


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
        if not _is_api(request) or exc.status < 400 or exc.content_type == "application/json":
            raise
        response = _json_error(exc.status, exc.reason)
        if hdrs.ALLOW in exc.headers:
            response.headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
        return response
    except Exception:
        log.exception("http.error", method=request.method, path=request.path)
        if _is_api(request):
            return _json_error(500, "internal error; see the engine log")
        raise web.HTTPInternalServerError(text="500: internal error; see the engine log") from None


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    desk = request.app[DESK]
    match = request.match_info
    roles = route_roles(match.route)
    if roles is PUBLIC:
        return await handler(request)
    identity = await _identify(request, desk)
    if identity is None:
        return _deny_anonymous(request)
    if match.http_exception is not None:  # 404/405 for a logged-in user
        raise match.http_exception
    user = identity.user
    if roles is None or user.role not in roles:
        _log_denied(request, "role" if roles else "undeclared_route", user)
        if _is_api(request):
            return _json_error(403, f"the {user.role} role may not do this")
        return _page(request, "error.html", {"message_key": "forbidden"}, identity=identity, status=403)
    if request.method not in SAFE_METHODS and identity.session is not None:
        given = request.headers.get("X-CSRF-Token")
        if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            given = str((await request.post()).get("csrf_token", "")) or None
        if not same_token(identity.session.csrf_token, given):
            _log_denied(request, "csrf", user)
            if _is_api(request):
                return _json_error(403, "missing or wrong CSRF token (X-CSRF-Token header)")
            raise web.HTTPForbidden(text="403: missing or wrong CSRF token; reload the page and try again")
    if identity.session is not None and request.method == "GET" and request.query.get("lang") in LANGS:
        identity.session.lang = request.query["lang"]
    request[_IDENTITY] = identity
    return await handler(request)


async def _identify(request: web.Request, desk: Desk) -> Identity | None:
    if _is_api(request) and request.headers.get(hdrs.AUTHORIZATION, "").lower().startswith("basic "):
        return await _basic_identity(request, desk)
    session = desk.sessions.get(request.cookies.get(desk.session_cookie))
    return Identity(session.user, session) if session is not None else None


async def _basic_identity(request: web.Request, desk: Desk) -> Identity:
    """HTTP Basic on the API. We never answer with a Basic challenge, so browsers never prompt for (and never
    remember and replay) Basic credentials; only scripts send them, which is why they need no CSRF token."""
    ip = request.remote or "-"
    credentials = _decode_basic(request.headers[hdrs.AUTHORIZATION])
    if credentials is None:
        _log_denied(request, "malformed_basic", None)
        raise ApiError(401, "malformed Authorization header")
    login, password = credentials
    username = login[:64]
    keys = (f"{username.casefold()}|{ip}", f"*|{ip}")
    wait = max(desk.limiter.locked_for(keys[0]), desk.ip_limiter.locked_for(keys[1]))
    if wait > 0:
        log.warning("http.login.failed", username=username, ip=ip, reason="locked", via="basic")
        raise ApiError(429, "too many failed logins; try again later", headers={"Retry-After": str(math.ceil(wait))})
    user = await desk.users.verify(login, password, cached=True)
    if user is None:
        desk.limiter.failed(keys[0])
        desk.ip_limiter.failed(keys[1])
        log.warning("http.login.failed", username=username, ip=ip, reason="bad_credentials", via="basic")
        raise ApiError(401, "wrong username or password")
    desk.limiter.succeeded(keys[0])
    return Identity(user, None)


def _decode_basic(header: str) -> tuple[str, str] | None:
    scheme, _, data = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(data.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    login, sep, password = text.partition(":")
    return (login, password) if sep else None


def _deny_anonymous(request: web.Request) -> web.StreamResponse:
    _log_denied(request, "anonymous", None)
    if _is_api(request):
        return _json_error(401, "log in first (session cookie or HTTP Basic)")
    target = "/login"
    if request.method == "GET" and request.path != "/":
        target += "?next=" + quote(request.path_qs, safe="")
    return _redirect(target)


def _log_denied(request: web.Request, reason: str, user: User | None) -> None:
    log.info(
        "http.request.denied",
        method=request.method,
        path=request.path,
        ip=request.remote,
        username=user.username if user else None,
        role=user.role if user else None,
        reason=reason,
    )


# -- pages ------------------------------------------------------------------------------------------------


def _lang(request: web.Request, session: Session | None = None) -> str:
    asked = request.query.get("lang")
    if asked in LANGS:
        return asked
    return session.lang if session is not None else "zh"


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
    lang = lang or _lang(request, session)
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
    return _login_form(request, lang=_lang(request), next_page=_safe_next(request.query.get("next")))


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
    lang = str(form.get("lang", "zh"))
    lang = lang if lang in LANGS else "zh"
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


# -- status ----------------------------------------------------------------------------------------------


def _counters(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if callable(value):
        value = value()
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    return {str(k): v for k, v in dict(value).items()}


def call_json(call: Any, now: float) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "direction": call.direction,
        "caller": call.caller_number,
        "caller_display": call.caller_display,
        "dialled": call.dialled,
        "state": call.state.value,
        "route": call.route_name,
        "trunk": call.trunk,
        "emergency": call.emergency,
        "duration": round(max(0.0, now - call.started_at), 1),
        "answered": call.answered_at is not None,
    }


def status_snapshot(engine: Any) -> dict[str, Any]:
    """What the status page and ``GET /api/status`` show; JSON-ready."""
    ua = engine.ua
    transport = engine.transport
    now = ua.clock.seconds() if ua is not None else time.time()
    addresses = transport.addresses if transport is not None else {}
    status: dict[str, Any] = {
        "node": engine.config.engine.node_name,
        "sip": [{"transport": t.lower(), "host": h, "port": p} for t, (h, p) in sorted(addresses.items())],
        "accepting": bool(ua.accepting) if ua is not None else False,
        "calls": [],
        "registrations": [],
        "trunks": [],
        "counters": {"transport": _counters(getattr(transport, "stats", None))},
    }
    if ua is None:
        return status
    calls = sorted(ua.calls.values(), key=lambda c: (not c.emergency, c.started_at))
    status["calls"] = [call_json(c, now) for c in calls]
    for username in sorted(ua.accounts):
        aor = f"sip:{username}@{ua.domain}"
        for b in ua.bindings.lookup(aor, now):
            status["registrations"].append({
                "aor": aor,
                "contact": b.contact,
                "expires": b.remaining(now),
                "source": f"{b.source[0].lower()}:{b.source[1]}:{b.source[2]}",
                "user_agent": b.user_agent,
            })
    for trunk in ua.trunks.trunks.values():
        status["trunks"].append({
            "name": trunk.name,
            "channels_used": len(trunk.active_calls),
            "channels": trunk.channels,
            "emergency_reserve": trunk.emergency_reserve,
            "register": trunk.register,
            "registered": trunk.registered,
            "outbound": trunk.outbound,
        })
    counters = status["counters"]
    counters["transactions"] = _counters(getattr(getattr(ua, "txl", None), "stats", None))
    counters["inbound"] = _counters(getattr(ua.inbound, "counters", None))
    counters["outbound"] = _counters(getattr(ua.outbound, "counters", None))
    counters["auth"] = _counters(ua.counters)
    return status


def _format_duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# -- API ----------------------------------------------------------------------------------------------------

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
        return _json_error(404, "no active call with this call_id")
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
        return _json_error(409, str(exc))
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
        return _json_error(404, "no active call with this call_id")
    handler = ua.inbound if call.direction == "inbound" else ua.outbound
    handler.hangup(call, EndReason.LOCAL_BYE)
    log.info("api.call.hangup", call_id=call.call_id, username=identity.user.username)
    return web.json_response({"call_id": call.call_id, "state": call.state.value}, status=202)
