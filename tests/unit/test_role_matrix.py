"""Every route of the desktop against every role, generated from the router (a new route is covered the day it
is added): anonymous users get 401 on the API and a redirect to /login on pages; a role the route does not allow
gets 403 from the role check; an allowed role gets past authentication and the role check (whatever the handler
then answers: 200, 4xx for the empty body and made-up ids, 503 for a part this fake engine lacks)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.auth import ROLES
from agents.push import HUB
from agents.roles import PUBLIC, route_roles
from agents.web import create_app
from tests.unit.test_push import Builder, PushEngine, push_config
from tests.unit.test_web import Now, logged_in

USER_OF_ROLE = {"operator": "op", "supervisor": "sup", "auditor": "aud", "admin": "admin"}
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_PARAM = re.compile(r"{[^}]+}")


def routes(app: web.Application) -> list[tuple[str, str, frozenset[str]]]:
    """(method, concrete path, roles) of every route that needs a login."""
    found = []
    for route in app.router.routes():
        roles = route_roles(route)
        assert roles is not None, f"{route.method} {route.resource.canonical} declares no roles"
        if roles is PUBLIC or route.method == "HEAD":
            continue
        found.append((route.method, _PARAM.sub("1", route.resource.canonical), roles))
    return found


def is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"  # scripts and scrapers: 401, never a redirect


async def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    kwargs: dict[str, Any] = {"allow_redirects": False, "headers": headers or {}}
    if method in BODY_METHODS:
        kwargs["json"] = {}
    response = await client.request(method, path, **kwargs)
    streaming = response.status == 200 and path.endswith("/events")
    text = "" if streaming else await response.text()  # a push stream never ends: headers only
    response.close()
    return response.status, response.headers, text


def run_matrix(check: Any) -> None:
    async def main() -> None:
        config = push_config()
        engine = PushEngine(config)
        app = create_app(engine, config, now=Now())
        app[HUB].pops.build = Builder()
        async with TestClient(TestServer(app)) as client:
            await check(client, routes(app))

    asyncio.run(main())


def test_the_matrix_covers_the_desktop():
    async def check(client: TestClient, table: list[tuple[str, str, frozenset[str]]]) -> None:
        paths = {(m, p) for m, p, _ in table}
        for expected in (("GET", "/api/desk/events"), ("GET", "/api/wallboard"), ("PATCH", "/api/elders/1"),
                         ("GET", "/api/openapi.json"), ("GET", "/"), ("POST", "/logout")):
            assert expected in paths
        assert len(table) >= 30

    run_matrix(check)


def test_anonymous_users_get_401_on_the_api_and_the_login_page_elsewhere():
    async def check(client: TestClient, table: list[tuple[str, str, frozenset[str]]]) -> None:
        for method, path, _ in table:
            status, headers, text = await call(client, method, path)
            if is_api(path):
                assert status == 401 and '"error"' in text, (method, path, status)
            else:
                assert status == 303 and headers["Location"].startswith("/login"), (method, path, status)

    run_matrix(check)


def test_each_role_is_refused_exactly_where_the_route_does_not_allow_it():
    async def check(client: TestClient, table: list[tuple[str, str, frozenset[str]]]) -> None:
        for role in sorted(ROLES):
            client.session.cookie_jar.clear()
            csrf = await logged_in(client, USER_OF_ROLE[role])
            for method, path, roles in table:
                status, headers, text = await call(client, method, path, {"X-CSRF-Token": csrf})
                # the role check's refusal: JSON naming the role on the API, the error page elsewhere
                refused = status == 403 and (f"the {role} role may not do this" in text
                                             or not path.startswith("/api/"))
                if role in roles:
                    assert status != 401 and not refused, (role, method, path, status, text[:200])
                    if path == "/logout":  # it worked: log in again for the rest
                        csrf = await logged_in(client, USER_OF_ROLE[role])
                else:
                    assert refused, (role, method, path, status, text[:200])

    run_matrix(check)
