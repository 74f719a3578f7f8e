"""The desktop's HTTP server (agents.web) against a small fake engine shaped like callcenter.app.Engine.

aiohttp's TestServer/TestClient on 127.0.0.1, driven with asyncio.run (no pytest plugin)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, redirect_stdout
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from twisted.internet import task

from agents.auth import LoginLimiter, SessionStore, User
from agents.roles import PUBLIC, allow, route_roles
from agents.web import _safe_next, create_app
from callcenter.calls.model import Call, CallState, EndReason
from callcenter.calls.outbound import OutboundError
from callcenter.calls.trunks import TrunkSet
from callcenter.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from callcenter.net.transport import TransportStats
from callcenter.sip.registrar import Binding, BindingTable

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # test users: quick to verify
PASSWORDS = {"admin": "admin-pass", "sup": "sup-pass", "op": "op-pass", "aud": "aud-pass"}
ROLE_OF = {"admin": "admin", "sup": "supervisor", "op": "operator", "aud": "auditor"}


def make_config(**http: Any) -> Config:
    return Config.model_validate({
        "engine": {"node_name": "node-test", "max_call_duration": 3600},
        "http": {"listen": "127.0.0.1:0", **http},
        "accounts": [{"username": "1001", "password": "x"}],
        "trunks": [
            {"name": "carrier", "host": "127.0.0.2", "channels": 30, "emergency_reserve": 2, "dids": ["12349"]},
            {"name": "inbound-only", "host": "127.0.0.3", "outbound": False},
        ],
        "users": [
            {"username": u, "password_hash": FAST.hash(p), "role": ROLE_OF[u], "display_name": f"<b>{u}</b>"}
            for u, p in PASSWORDS.items()
        ],
    })


# -- a fake engine: the real call model, binding table and trunk set; no SIP --------------------------------


def make_call(call_id: str, *, direction: str = "inbound", emergency: bool = False, started_at: float = 100.0,
              caller: str = "01088886666", display: str | None = None, dialled: str = "12349") -> Call:
    return Call(
        call_id=call_id, direction=direction, from_uri=f"sip:{caller}@127.0.0.2", to_uri=f"sip:{dialled}@x",
        caller_number=caller, caller_display=display, dialled=dialled, source=("UDP", "127.0.0.2", 5080),
        started_at=started_at, trunk="carrier", route_name="Emergency button" if emergency else "Hotline",
        emergency=emergency, state=CallState.CONFIRMED,
    )


class FakeHandler:
    def __init__(self, ua: FakeUa) -> None:
        self.ua = ua
        self.counters = {"offered": 3, "answered": 2}
        self.hung_up: list[tuple[str, EndReason]] = []

    def hangup(self, call: Call, reason: EndReason) -> None:
        self.hung_up.append((call.call_id, reason))


class FakeOutbound(FakeHandler):
    def __init__(self, ua: FakeUa) -> None:
        super().__init__(ua)
        self.placed: list[dict[str, Any]] = []
        self.refuse: str | None = None

    def originate(self, number: str, *, trunk_name: str | None = None, caller_id: str = "callcenter",
                  max_duration: float | None = None, on_end: Any = None) -> Call:
        if self.refuse:
            raise OutboundError(self.refuse)
        call = make_call(f"out-{len(self.placed)}", direction="outbound", caller=caller_id, dialled=number,
                         started_at=self.ua.clock.seconds())
        call.state = CallState.OFFERED
        self.placed.append({"number": number, "trunk": trunk_name, "max_duration": max_duration})
        self.ua.calls[call.call_id] = call
        return call


class FakeTransactions:
    def stats(self) -> dict[str, int]:
        return {"server_created": 7, "client_created": 1}


class FakeUa:
    def __init__(self, config: Config) -> None:
        self.clock = task.Clock()
        self.clock.advance(160.0)
        self.domain = "callcenter.local"
        self.accounts = {a.username: a for a in config.accounts}
        self.trunks = TrunkSet.from_config(config.trunks)
        self.bindings = BindingTable()
        self.calls: dict[str, Call] = {}
        self.accepting = True
        self.counters = {"auth_challenges": 4, "auth_failures": 1}
        self.txl = FakeTransactions()
        self.inbound = FakeHandler(self)
        self.outbound = FakeOutbound(self)


class FakeTransport:
    def __init__(self) -> None:
        self.addresses = {"UDP": ("127.0.0.1", 5060), "TCP": ("127.0.0.1", 5060)}
        self.stats = TransportStats(received=10, sent=9)


class FakeEngine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ua = FakeUa(config)
        self.transport = FakeTransport()


class Now:
    """Injected clock (seconds) for sessions and lockouts."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- helpers -------------------------------------------------------------------------------------------------


@asynccontextmanager
async def desk(config: Config | None = None, now: Now | None = None,
               app: web.Application | None = None) -> AsyncIterator[tuple[TestClient, FakeEngine]]:
    config = config or make_config()
    engine = FakeEngine(config)
    async with TestClient(TestServer(app or create_app(engine, config, now=now or Now()))) as client:
        yield client, engine


def run(test: Callable[..., Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        async with desk(**kwargs) as (client, engine):
            await test(client, engine)

    asyncio.run(main())


def token_in(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" (?:value|content)="([^"]+)"', html)
    assert match, f"no {name} in page"
    return match.group(1)


async def login(client: TestClient, username: str, password: str, **extra: str) -> Any:
    page = await client.get("/login")
    data = {"username": username, "password": password, "login_token": token_in(await page.text(), "login_token")}
    return await client.post("/login", data={**data, **extra}, allow_redirects=False)


async def logged_in(client: TestClient, username: str) -> str:
    """Log in; return the session's CSRF token."""
    response = await login(client, username, PASSWORDS[username])
    assert response.status == 303, await response.text()
    page = await client.get("/")
    assert page.status == 200
    return token_in(await page.text(), "csrf-token")


def basic(username: str, password: str | None = None) -> dict[str, str]:
    """HTTP Basic credentials as request headers."""
    secret = PASSWORDS[username] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


# -- login ---------------------------------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_session_and_shows_the_status_page():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        response = await login(client, "OP", PASSWORDS["op"])  # usernames ignore case
        assert response.status == 303 and response.headers["Location"] == "/"
        cookies = [v for v in response.headers.getall("Set-Cookie") if v.startswith("cc_session=")]
        assert len(cookies) == 1
        attrs = cookies[0].lower()
        assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs and "secure" not in attrs
        assert len(cookies[0].split(";")[0].split("=", 1)[1]) >= 43  # 32 random bytes, base64url
        page = await client.get("/")
        html = await page.text()
        assert page.status == 200
        assert "node-test" in html and "话务员" in html and "退出" in html
        assert "&lt;b&gt;op&lt;/b&gt;" in html and "<b>op</b>" not in html  # autoescaped display name
        assert 'http-equiv="refresh" content="5"' in html

    run(test)


def test_secure_cookies_when_configured():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        page = await client.get("/login")
        (cookie,) = page.headers.getall("Set-Cookie")
        assert cookie.startswith("__Host-cc_login=") and "secure" in cookie.lower()
        token = token_in(await page.text(), "login_token")  # the jar keeps Secure cookies off plain HTTP: send it
        response = await client.post("/login", data={"username": "op", "password": PASSWORDS["op"],
                                                     "login_token": token},
                                     headers={"Cookie": f"__Host-cc_login={token}"}, allow_redirects=False)
        assert response.status == 303
        cookies = {c.split("=", 1)[0]: c.lower() for c in response.headers.getall("Set-Cookie")}
        assert "secure" in cookies["__Host-cc_session"] and "httponly" in cookies["__Host-cc_session"]
        assert "secure" in cookies["__Host-cc_login"] and "max-age=0" in cookies["__Host-cc_login"]

    run(test, config=make_config(secure_cookies=True))


def test_login_failure_is_generic():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        wrong_password = await login(client, "op", "nope-nope")
        unknown_user = await login(client, "nobody", PASSWORDS["op"])
        for response in (wrong_password, unknown_user):
            assert response.status == 401
            assert "cc_session" not in response.cookies
        error = re.compile(r'<p class="alert" role="alert">(.*?)</p>')
        assert error.findall(await wrong_password.text()) == error.findall(await unknown_user.text()) \
            == ["用户名或密码不正确。"]
        assert (await client.get("/", allow_redirects=False)).status == 303

    run(test)


def test_login_needs_the_token_of_the_login_form():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        response = await client.post("/login", data={"username": "op", "password": PASSWORDS["op"]},
                                     allow_redirects=False)
        assert response.status == 403
        assert "cc_session" not in response.cookies

    run(test)


def test_login_redirects_only_to_local_pages():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        response = await login(client, "op", PASSWORDS["op"], next="//evil.example/")
        assert response.headers["Location"] == "/"
        for bad in ("/\\evil.example", "https://evil.example/", "/x\r\nSet-Cookie: a=b", "/logout"):
            assert _safe_next(bad) == "/"
        await client.post("/logout", data={"csrf_token": token_in(await (await client.get("/")).text(),
                                                                    "csrf-token")})
        page = await client.get("/login?next=%2Fapi%2Fstatus")  # the target survives a failed attempt
        data = {"username": "op", "password": "wrong-password", "login_token": token_in(await page.text(),
                                                                                        "login_token")}
        data["next"] = token_in(await page.text(), "next")
        failed = await client.post("/login", data=data)
        assert failed.status == 401 and token_in(await failed.text(), "next") == "/api/status"
        response = await login(client, "op", PASSWORDS["op"], next=token_in(await failed.text(), "next"))
        assert response.headers["Location"] == "/api/status"

    run(test)


def test_failed_logins_lock_the_username_for_five_minutes():
    now = Now()

    async def test(client: TestClient, engine: FakeEngine) -> None:
        for _ in range(4):
            assert (await login(client, "op", "wrong-password")).status == 401
        fifth = await login(client, "op", "wrong-password")
        assert fifth.status == 429 and "5 分钟后再试" in await fifth.text()
        locked = await login(client, "op", PASSWORDS["op"])  # even the right password
        assert locked.status == 429 and "cc_session" not in locked.cookies
        assert (await client.get("/api/status", headers=basic("op"))).status == 429  # Basic is no way around it
        assert (await login(client, "sup", PASSWORDS["sup"])).status == 303  # other users are not locked
        client.session.cookie_jar.clear()
        now.t += 301
        assert (await login(client, "op", PASSWORDS["op"])).status == 303

    run(test, now=now)


def test_lockout_message_in_english():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        for _ in range(5):
            response = await login(client, "op", "wrong-password", lang="en")
        assert "Too many failed logins. Try again in 5 minutes." in await response.text()

    run(test)


def test_limiter_and_sessions_expire_on_the_injected_clock():
    now = Now()
    limiter = LoginLimiter(limit=2, window=10, now=now)
    limiter.failed("k")
    now.t += 6
    limiter.failed("k")
    assert limiter.locked_for("k") == pytest.approx(4)
    now.t += 4.5
    assert limiter.locked_for("k") == 0
    store = SessionStore(3600, now=now)
    session = store.create(User("op", "operator"))
    assert store.get(session.token) is session and store.get("forged") is None
    now.t += 3600
    assert store.get(session.token) is None and len(store) == 0


# -- access control ------------------------------------------------------------------------------------------


ALL_ROLES = {"operator", "supervisor", "auditor", "admin"}
STAFF = {"operator", "supervisor", "admin"}
EXPECTED_ROUTES = {
    ("GET", "/login"): "public", ("POST", "/login"): "public", ("GET", "/static"): "public",
    ("POST", "/logout"): ALL_ROLES,
    ("GET", "/"): ALL_ROLES,
    ("GET", "/api/status"): ALL_ROLES,
    ("GET", "/api/calls"): ALL_ROLES,
    ("POST", "/api/calls"): STAFF,
    ("GET", "/api/calls/{call_id}"): ALL_ROLES,
    ("DELETE", "/api/calls/{call_id}"): STAFF,
    ("POST", "/api/calls/{call_id}/parties"): STAFF,
    ("GET", "/api/operators"): ALL_ROLES,
    ("POST", "/api/operators/{name}/state"): STAFF,
    ("GET", "/api/queues"): ALL_ROLES,
    ("GET", "/api/callbacks"): ALL_ROLES,
    ("POST", "/api/callbacks/{task_id}/dial"): STAFF,
    ("POST", "/api/callbacks/{task_id}/close"): STAFF,
    ("GET", "/api/stats"): {"supervisor", "auditor", "admin"},
    ("GET", "/metrics"): {"supervisor", "admin"},
    ("GET", "/api/desk/events"): ALL_ROLES,
    ("GET", "/api/desk/current"): STAFF,
    ("GET", "/api/wallboard"): {"supervisor", "admin"},
    ("GET", "/api/dispositions"): ALL_ROLES,
    ("GET", "/api/elders"): ALL_ROLES,
    ("POST", "/api/elders"): STAFF,
    ("GET", "/api/elders/{elder_id}"): ALL_ROLES,
    ("PATCH", "/api/elders/{elder_id}"): STAFF,
    ("GET", "/api/elders/{elder_id}/history"): ALL_ROLES,
    ("POST", "/api/records"): STAFF,
    ("GET", "/api/work-orders"): STAFF,
    ("POST", "/api/work-orders"): STAFF,
    ("PATCH", "/api/work-orders/{order_id}"): STAFF,
    ("GET", "/api/history"): ALL_ROLES,
    ("GET", "/api/access-log"): {"auditor", "admin"},
    ("GET", "/api/openapi.json"): ALL_ROLES,
    ("GET", "/api/docs"): ALL_ROLES,
    ("GET", "/desk"): STAFF,
    ("GET", "/wallboard"): {"supervisor", "admin"},
    ("POST", "/api/desk/device"): STAFF,
    ("POST", "/api/desk/webrtc"): STAFF,
    ("POST", "/api/desk/answer"): STAFF,
    ("POST", "/api/desk/hangup"): STAFF,
    ("POST", "/api/desk/hold"): STAFF,
    ("POST", "/api/desk/mute"): STAFF,
    ("POST", "/api/desk/dtmf"): STAFF,
    ("POST", "/api/desk/transfer"): STAFF,
    ("POST", "/api/desk/conference"): STAFF,
    ("DELETE", "/api/desk/conference/{party_call_id}"): STAFF,
    ("POST", "/api/desk/dial"): STAFF,
}


def test_every_route_declares_roles_and_refuses_anonymous_users():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        table: dict[tuple[str, str], Any] = {}
        for route in client.server.app.router.routes():
            roles = route_roles(route)
            assert roles is not None, f"{route.method} {route.resource.canonical} declares no roles"
            if route.method != "HEAD":
                table[(route.method, route.resource.canonical)] = "public" if roles is PUBLIC else set(roles)
            if roles is PUBLIC:
                continue
            path = route.resource.canonical.replace("{call_id}", "some-call").replace("{name}", "op1")
            path = path.replace("{task_id}", "1")
            response = await client.request(route.method, path, allow_redirects=False)
            if path.startswith("/api/") or path == "/metrics":  # scripts and scrapers: 401, not a redirect
                assert response.status == 401, (route.method, path)
                if route.method != "HEAD":
                    assert "error" in await response.json()
            else:
                assert response.status == 303 and response.headers["Location"].startswith("/login"), path
        assert table == EXPECTED_ROUTES  # a new route must be added here, with its roles, on purpose

    run(test)


def test_a_route_without_roles_is_refused_to_everybody():
    async def undeclared(request: web.Request) -> web.Response:
        return web.json_response({"secret": True})

    config = make_config()
    app = create_app(FakeEngine(config), config, now=Now())
    app.router.add_get("/api/undeclared", undeclared)

    async def test(client: TestClient, engine: FakeEngine) -> None:
        assert (await client.get("/api/undeclared")).status == 401
        response = await client.get("/api/undeclared", headers=basic("admin"))
        assert response.status == 403 and "secret" not in await response.text()

    run(test, config=config, app=app)


def test_allow_rejects_unknown_roles():
    with pytest.raises(ValueError):
        allow("operator", "root")
    with pytest.raises(ValueError):
        allow()


def test_auditor_may_read_but_not_place_or_end_calls():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        engine.ua.calls["c1"] = make_call("c1")
        assert (await client.get("/api/status", headers=basic("aud"))).status == 200
        assert (await client.get("/api/calls/c1", headers=basic("aud"))).status == 200
        response = await client.post("/api/calls", json={"number": "120"}, headers=basic("aud"))
        assert response.status == 403 and "error" in await response.json()
        assert (await client.delete("/api/calls/c1", headers=basic("aud"))).status == 403
        csrf = await logged_in(client, "aud")  # the same with a session and a valid CSRF token
        response = await client.post("/api/calls", json={"number": "120"}, headers={"X-CSRF-Token": csrf})
        assert response.status == 403
        assert engine.ua.outbound.placed == [] and engine.ua.inbound.hung_up == []

    run(test)


def test_state_changes_from_a_session_need_the_csrf_token():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        csrf = await logged_in(client, "op")
        assert (await client.post("/api/calls", json={"number": "120"})).status == 403
        response = await client.post("/api/calls", json={"number": "120"}, headers={"X-CSRF-Token": "x" * 43})
        assert response.status == 403 and "CSRF" in (await response.json())["error"]
        engine.ua.calls["c1"] = make_call("c1")
        assert (await client.delete("/api/calls/c1")).status == 403
        assert engine.ua.outbound.placed == [] and engine.ua.inbound.hung_up == []
        assert (await client.post("/logout", allow_redirects=False)).status == 403  # form without csrf_token
        assert (await client.get("/")).status == 200  # still logged in
        response = await client.post("/api/calls", json={"number": "120"}, headers={"X-CSRF-Token": csrf})
        assert response.status == 201

    run(test)


def test_basic_auth_works_on_the_api_only():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        response = await client.get("/api/status", headers=basic("aud"))
        assert response.status == 200 and (await response.json())["node"] == "node-test"
        response = await client.post("/api/calls", json={"number": "+8612345"}, headers=basic("op"))  # no CSRF
        assert response.status == 201
        assert (await client.get("/api/status", headers=basic("aud", "wrong-password"))).status == 401
        assert (await client.get("/api/status", headers={"Authorization": "Basic !!!"})).status == 401
        page = await client.get("/", headers=basic("admin"), allow_redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/login"
        assert "WWW-Authenticate" not in response.headers  # browsers never prompt for (and cache) Basic

    run(test)


def test_logout_invalidates_the_session():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        csrf = await logged_in(client, "sup")
        cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["cc_session"].value
        response = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/login"
        stale = {"Cookie": f"cc_session={cookie}"}
        assert (await client.get("/api/status", headers=stale)).status == 401
        response = await client.get("/", headers=stale, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/login"

    run(test)


def test_sessions_expire_after_session_hours():
    now = Now()

    async def test(client: TestClient, engine: FakeEngine) -> None:
        await logged_in(client, "op")
        now.t += 2 * 3600 - 1
        assert (await client.get("/api/status")).status == 200
        now.t += 1
        assert (await client.get("/api/status")).status == 401

    run(test, now=now, config=make_config(session_hours=2))


def test_security_headers_on_every_response():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        responses = [
            await client.get("/login"),
            await client.get("/", allow_redirects=False),
            await client.get("/api/status"),
            await client.get("/api/nowhere", headers=basic("op")),
            await client.get("/static/desk.css"),
        ]
        for response in responses:
            headers = response.headers
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["X-Frame-Options"] == "DENY"
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["Referrer-Policy"]
        assert responses[0].headers["Cache-Control"] == "no-store"
        assert responses[3].status == 404 and "error" in await responses[3].json()
        assert responses[4].status == 200 and "text/css" in responses[4].headers["Content-Type"]

    run(test)


# -- API -----------------------------------------------------------------------------------------------------


def test_originate_places_a_call():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        body = {"number": "+8613800000000", "trunk": "carrier", "max_duration": 90}
        response = await client.post("/api/calls", json=body, headers=basic("sup"))
        assert response.status == 201
        data = await response.json()
        assert data["call_id"] == "out-0" and response.headers["Location"] == "/api/calls/out-0"
        assert engine.ua.outbound.placed == [{"number": "+8613800000000", "trunk": "carrier", "max_duration": 90.0}]
        calls = (await (await client.get("/api/calls", headers=basic("op"))).json())["calls"]
        assert [c["call_id"] for c in calls] == ["out-0"] and calls[0]["direction"] == "outbound"

    run(test)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "number"),
        ({"number": "12a4"}, "number"),
        ({"number": ""}, "number"),
        ({"number": "1" * 33}, "number"),
        ({"number": "+"}, "number"),
        ({"number": 120}, "number"),
        ({"number": "120", "trunk": "nope"}, "trunk"),
        ({"number": "120", "trunk": "inbound-only"}, "trunk"),
        ({"number": "120", "max_duration": 0}, "max_duration"),
        ({"number": "120", "max_duration": -5}, "max_duration"),
        ({"number": "120", "max_duration": True}, "max_duration"),
        ({"number": "120", "max_duration": "60"}, "max_duration"),
        ({"number": "120", "max_duration": 7200}, "max_duration"),
        ({"number": "120", "caller_id": "110"}, "caller_id"),
    ],
)
def test_originate_validation_names_the_field(body: dict[str, Any], field: str):
    async def test(client: TestClient, engine: FakeEngine) -> None:
        response = await client.post("/api/calls", json=body, headers=basic("op"))
        assert response.status == 422
        data = await response.json()
        assert data["field"] == field and data["error"]
        assert engine.ua.outbound.placed == []

    run(test)


def test_originate_wants_a_json_object():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        form = await client.post("/api/calls", data={"number": "120"}, headers=basic("op"))
        assert form.status == 415
        bad = await client.post("/api/calls", data="{",
                                headers={"Content-Type": "application/json", **basic("op")})
        assert bad.status == 400 and "error" in await bad.json()
        array = await client.post("/api/calls", json=["120"], headers=basic("op"))
        assert array.status == 400

    run(test)


def test_originate_refused_by_the_engine_is_409():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        engine.ua.outbound.refuse = "trunk carrier has no free non-emergency channel"
        response = await client.post("/api/calls", json={"number": "120"}, headers=basic("op"))
        assert response.status == 409
        assert (await response.json()) == {"error": "trunk carrier has no free non-emergency channel"}

    run(test)


def test_hangup():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        engine.ua.calls["in-1"] = make_call("in-1")
        response = await client.delete("/api/calls/in-1", headers=basic("op"))
        assert response.status == 202 and (await response.json())["call_id"] == "in-1"
        assert engine.ua.inbound.hung_up == [("in-1", EndReason.LOCAL_BYE)]
        assert (await client.delete("/api/calls/nope", headers=basic("op"))).status == 404
        assert (await client.get("/api/calls/nope", headers=basic("op"))).status == 404

    run(test)


def test_status_shows_calls_registrations_trunks_and_counters():
    async def test(client: TestClient, engine: FakeEngine) -> None:
        ua = engine.ua
        ua.calls["c-normal"] = make_call("c-normal", started_at=150.0)
        ua.calls["c-sos"] = make_call("c-sos", emergency=True, started_at=40.0, display="<script>x</script>")
        ua.trunks.trunks["carrier"].active_calls.update({"c-normal", "c-sos"})
        ua.bindings.put(Binding(aor="sip:1001@callcenter.local", contact="sip:1001@127.0.0.1:5062",
                                expires_at=460.0, call_id="r1", cseq=1, source=("UDP", "127.0.0.1", 5062)))
        status = await (await client.get("/api/status", headers=basic("aud"))).json()
        assert status["node"] == "node-test"
        assert {(s["transport"], s["port"]) for s in status["sip"]} == {("udp", 5060), ("tcp", 5060)}
        assert [c["call_id"] for c in status["calls"]] == ["c-sos", "c-normal"]  # emergencies first
        sos = status["calls"][0]
        assert sos["emergency"] is True and sos["duration"] == 120.0 and sos["state"] == "confirmed"
        assert sos["route"] == "Emergency button" and sos["trunk"] == "carrier" and sos["caller"] == "01088886666"
        assert status["registrations"] == [{"aor": "sip:1001@callcenter.local", "contact": "sip:1001@127.0.0.1:5062",
                                            "expires": 300, "source": "udp:127.0.0.1:5062", "user_agent": ""}]
        carrier = next(t for t in status["trunks"] if t["name"] == "carrier")
        assert carrier["channels_used"] == 2 and carrier["channels"] == 30 and carrier["emergency_reserve"] == 2
        counters = status["counters"]
        assert counters["transport"]["received"] == 10 and counters["transactions"]["server_created"] == 7
        assert counters["inbound"]["offered"] == 3 and counters["auth"]["auth_challenges"] == 4

        await logged_in(client, "aud")
        html = await (await client.get("/")).text()
        assert "c-sos" in html and "2:00" in html and "sip:1001@127.0.0.1:5062" in html and "2 / 30" in html
        assert "&lt;script&gt;" in html and "<script>" not in html
        english = await (await client.get("/?lang=en")).text()
        assert "Active calls" in english and "Emergency button" in english
        assert "Auditor" in await (await client.get("/")).text()  # the language stays in the session

    run(test)


# -- configuration and CLI -----------------------------------------------------------------------------------


def test_default_config_demo_users_verify_with_the_documented_passwords():
    config = load_config(None, env={})
    demo = {"admin": "admin-demo", "supervisor": "supervisor-demo", "operator1": "operator-demo",
            "auditor": "auditor-demo"}
    assert {u.username: u.role for u in config.users} == {"admin": "admin", "supervisor": "supervisor",
                                                          "operator1": "operator", "auditor": "auditor"}
    hasher = PasswordHasher()
    for user in config.users:
        assert user.password_hash.startswith("$argon2id$")
        assert hasher.verify(user.password_hash, demo[user.username])
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    for password in demo.values():  # the demo passwords appear only in the comment that documents them
        assert all(line.lstrip().startswith("#") for line in text.splitlines() if password in line)
    assert config.http.session_hours == 12 and config.http.secure_cookies is False


def test_config_rejects_duplicate_users_and_bad_hashes(tmp_path):
    good = FAST.hash("whatever-pass")
    path = tmp_path / "c.yaml"

    def problems(users: str) -> str:
        path.write_text("users:\n" + users, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        return str(info.value)

    assert "users[1].username: duplicate username" in problems(
        f"  - {{username: op, password_hash: '{good}', role: operator}}\n"
        f"  - {{username: OP, password_hash: '{good}', role: operator}}\n"
    )
    text = problems(
        "  - {username: x, password_hash: 'secret', role: operator}\n"
        f"  - {{username: y, password_hash: '{good}', role: root}}\n"
    )
    assert "users[0].password_hash: expected an argon2id hash" in text and "users[1].role" in text


def test_cli_hash_password_reads_stdin(monkeypatch):
    from callcenter import cli

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["users", "hash-password"]) == 0
    assert PasswordHasher().verify(out.getvalue().strip(), "a-long-password")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["users", "hash-password"]) == 2
