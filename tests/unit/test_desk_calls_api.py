"""The call control API (agents.desk_calls): roles, CSRF, who acts for whom, field errors, ControlError → JSON, and
the whole way through to the real CallControl of tests/unit/test_call_control.py (real Distributor and
SipConnector, fake SIP and media)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.desk_calls import REQUEST_SCHEMAS, register
from agents.web import create_app
from callcenter.acd.control import ControlError
from tests.unit.test_call_control import World
from tests.unit.test_web import FakeEngine, Now, basic, logged_in, make_config

CALL = {"call_id": "c1", "state": "talking", "device": "phone", "muted": False, "held": False, "parties": [],
        "started_at": "2025-01-01T00:00:00+00:00", "kind": "queue"}
PARTY = {"call_id": "party-1", "number": "120", "label": "120", "state": "ringing"}


class FakeControl:
    """Records what the routes ask; raises ``error`` when set."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.error: ControlError | None = None

    def _do(self, action: str, *args: Any, **kwargs: Any) -> None:
        self.asked.append((action, args, kwargs))
        if self.error is not None:
            raise self.error

    def set_device(self, name: str, device: str) -> str:
        self._do("device", name, device)
        return device

    async def connect_browser(self, name: str, sdp: str) -> str:
        self._do("webrtc", name, sdp)
        return "v=0\r\nanswer"

    def answer(self, name: str, offer_id: int) -> dict[str, Any]:
        self._do("answer", name, offer_id)
        return CALL

    def hangup(self, name: str) -> None:
        self._do("hangup", name)

    def hold(self, name: str, held: bool) -> dict[str, Any]:
        self._do("hold", name, held)
        return CALL

    def mute(self, name: str, muted: bool) -> dict[str, Any]:
        self._do("mute", name, muted)
        return CALL

    def dtmf(self, name: str, digits: Any) -> dict[str, Any]:
        self._do("dtmf", name, digits)
        return CALL

    def transfer(self, name: str, **target: Any) -> dict[str, Any]:
        self._do("transfer", name, **target)
        key, value = next(iter(target.items()))
        return {"call_id": "c1", "target": f"{key}:{value}"}

    def conference(self, name: str, *, number: str | None = None, service: str | None = None) -> dict[str, Any]:
        self._do("conference", name, number=number, service=service)
        return PARTY

    def drop_party(self, name: str, party_call_id: str) -> dict[str, Any]:
        self._do("drop_party", name, party_call_id)
        return CALL

    def current(self, name: str) -> dict[str, Any] | None:
        return None


class DeskEngine(FakeEngine):
    def __init__(self, world: World) -> None:
        super().__init__(make_config())
        self.world = world
        self.acd = world.acd
        self.acd.operators["op1"].user = "op"  # the login "op" is operator op1
        self.control: Any = FakeControl()


def run(test: Callable[[TestClient, DeskEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        config = make_config()
        engine = DeskEngine(World())
        async with TestClient(TestServer(create_app(engine, config, now=Now()))) as client:
            await test(client, engine)

    asyncio.run(main())


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


ROUTES = [("POST", "/api/desk/device", {"device": "browser"}),
          ("POST", "/api/desk/webrtc", {"type": "offer", "sdp": "v=0\r\n"}),
          ("POST", "/api/desk/answer", {"offer_id": 3}),
          ("POST", "/api/desk/hangup", {}),
          ("POST", "/api/desk/hold", {"held": True}),
          ("POST", "/api/desk/mute", {"muted": False}),
          ("POST", "/api/desk/dtmf", {"digits": "12#"}),
          ("POST", "/api/desk/transfer", {"queue": "emergency"}),
          ("POST", "/api/desk/conference", {"service": "120"}),
          ("DELETE", "/api/desk/conference/party-1", None)]


def test_every_route_for_an_operator_acts_for_their_own_operator() -> None:
    async def test(client: TestClient, engine: DeskEngine) -> None:
        for method, path, body in ROUTES:
            response = await client.request(method, path, json=body, headers=basic("op"))
            assert response.status in (200, 201), (path, await response.text())
        assert [(a, args[0]) for a, args, _ in engine.control.asked] == [
            ("device", "op1"), ("webrtc", "op1"), ("answer", "op1"), ("hangup", "op1"), ("hold", "op1"),
            ("mute", "op1"), ("dtmf", "op1"), ("transfer", "op1"), ("conference", "op1"), ("drop_party", "op1")]
        asked = {a: (args, kwargs) for a, args, kwargs in engine.control.asked}
        assert asked["transfer"] == (("op1",), {"queue": "emergency"})
        assert asked["conference"] == (("op1",), {"number": None, "service": "120"})
        assert asked["drop_party"] == (("op1", "party-1"), {})
        assert asked["hold"] == (("op1", True), {}) and asked["answer"] == (("op1", 3), {})

    run(test)


def test_answers_carry_the_call() -> None:
    async def test(client: TestClient, engine: DeskEngine) -> None:
        body = await json_of(await client.post("/api/desk/hold", json={"held": True}, headers=basic("op")), 200)
        assert body == {"operator": "op1", "call": CALL}
        body = await json_of(await client.post("/api/desk/conference", json={"service": "120"}, headers=basic("op")),
                             201)
        assert body == {"operator": "op1", "call": None, "party": PARTY}
        body = await json_of(await client.post("/api/desk/webrtc", json={"type": "offer", "sdp": "v=0\r\n"},
                                               headers=basic("op")), 200)
        assert body == {"type": "answer", "sdp": "v=0\r\nanswer"}
        body = await json_of(await client.post("/api/desk/transfer", json={"number": "13700137000"},
                                               headers=basic("op")), 200)
        assert body["transferred"] == {"call_id": "c1", "target": "number:13700137000"}
        body = await json_of(await client.post("/api/desk/device", json={"device": "phone"}, headers=basic("op")),
                             200)
        assert body == {"operator": "op1", "device": "phone"}

    run(test)


def test_roles_and_acting_for_another_operator() -> None:
    async def test(client: TestClient, engine: DeskEngine) -> None:
        for method, path, body in ROUTES:
            assert (await client.request(method, path, json=body)).status == 401, path
            assert (await client.request(method, path, json=body, headers=basic("aud"))).status == 403, path
        assert engine.control.asked == []
        # an operator never acts for another, neither in the body nor in the query
        response = await client.post("/api/desk/hold", json={"held": True, "operator": "op2"}, headers=basic("op"))
        assert (await json_of(response, 403))["field"] == "operator"
        response = await client.post("/api/desk/transfer?operator=op2", json={"queue": "hotline"},
                                     headers=basic("op"))
        await json_of(response, 403)
        assert engine.control.asked == []
        # supervisors and admins name the operator (they are none themselves)
        response = await client.post("/api/desk/hold", json={"held": True}, headers=basic("sup"))
        assert (await json_of(response, 422))["field"] == "operator"
        await json_of(await client.post("/api/desk/hold", json={"held": True, "operator": "op2"},
                                        headers=basic("sup")), 200)
        await json_of(await client.post("/api/desk/transfer?operator=op3", json={"operator": "op2"},
                                        headers=basic("admin")), 200)
        await json_of(await client.delete("/api/desk/conference/party-7?operator=op2", headers=basic("admin")), 200)
        response = await client.post("/api/desk/hold", json={"held": True, "operator": "op9"}, headers=basic("sup"))
        assert (await json_of(response, 422))["field"] == "operator"
        assert [(a, args[0]) for a, args, _ in engine.control.asked] == [
            ("hold", "op2"), ("transfer", "op3"), ("drop_party", "op2")]
        assert engine.control.asked[1][2] == {"operator": "op2"}  # the colleague, not the one acted for
        engine.acd.operators["op1"].user = None  # a login of role operator that is no operator
        await json_of(await client.post("/api/desk/hangup", headers=basic("op")), 403)

    run(test)


def test_a_session_needs_the_csrf_token() -> None:
    async def test(client: TestClient, engine: DeskEngine) -> None:
        csrf = await logged_in(client, "op")
        for method, path, body in ROUTES:
            response = await client.request(method, path, json=body)
            assert response.status == 403 and "CSRF" in (await response.json())["error"], path
        assert engine.control.asked == []
        response = await client.post("/api/desk/mute", json={"muted": True}, headers={"X-CSRF-Token": csrf})
        await json_of(response, 200)
        assert engine.control.asked == [("mute", ("op1", True), {})]

    run(test)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/desk/device", {"device": "tablet"}, "device"),
    ("/api/desk/device", {}, "device"),
    ("/api/desk/webrtc", {"type": "answer", "sdp": "v=0"}, "type"),
    ("/api/desk/webrtc", {"type": "offer"}, "sdp"),
    ("/api/desk/webrtc", {"type": "offer", "sdp": "hello"}, "sdp"),
    ("/api/desk/webrtc", {"type": "offer", "sdp": "v=0" + "x" * 20000}, "sdp"),
    ("/api/desk/answer", {}, "offer_id"),
    ("/api/desk/answer", {"offer_id": "3"}, "offer_id"),
    ("/api/desk/answer", {"offer_id": True}, "offer_id"),
    ("/api/desk/answer", {"offer_id": 0}, "offer_id"),
    ("/api/desk/hold", {"held": "yes"}, "held"),
    ("/api/desk/hold", {}, "held"),
    ("/api/desk/mute", {"muted": 1}, "muted"),
    ("/api/desk/hangup", {"now": True}, "now"),
    ("/api/desk/dtmf", {"digits": "1", "volume": 3}, "volume"),
    ("/api/desk/transfer", {}, "number"),
    ("/api/desk/transfer", {"number": "120", "queue": "hotline"}, "number"),
    ("/api/desk/transfer", {"queue": 5}, "queue"),
    ("/api/desk/transfer", {"to": "x"}, "to"),
    ("/api/desk/conference", {"number": 120}, "number"),
    ("/api/desk/conference", {"service": ["120"]}, "service"),
])
def test_bad_bodies_name_the_field(path: str, body: dict[str, Any], field: str) -> None:
    async def test(client: TestClient, engine: DeskEngine) -> None:
        response = await client.post(path, json=body, headers=basic("op"))
        assert (await json_of(response, 422))["field"] == field
        assert engine.control.asked == []

    run(test)


def test_refusals_of_the_control_become_json_errors() -> None:
    async def test(client: TestClient, engine: DeskEngine) -> None:
        for status, field in ((409, None), (404, "party_call_id"), (422, "digits"), (503, None)):
            engine.control.error = ControlError(status, f"refused {status}", field)
            response = await client.post("/api/desk/dtmf", json={"digits": "1"}, headers=basic("op"))
            body = await json_of(response, status)
            assert body["error"] == f"refused {status}" and body.get("field") == field
        response = await client.post("/api/desk/hold", data="held=1", headers=basic("op"))
        await json_of(response, 415)
        response = await client.post("/api/desk/hold", json=[True], headers=basic("op"))
        await json_of(response, 400)
        engine.control = None
        await json_of(await client.post("/api/desk/hangup", headers=basic("op")), 503)

    run(test)


def test_request_schemas_describe_every_handler() -> None:
    from aiohttp import web

    app = web.Application()
    register(app)
    handlers = {route.handler.__name__ for route in app.router.routes()}
    assert handlers == set(REQUEST_SCHEMAS)
    for route in app.router.routes():
        assert route.handler.__doc__, route.handler.__name__
    assert REQUEST_SCHEMAS["api_desk_dtmf"]["required"] == ["digits"]


# -- the whole way: HTTP → CallControl → the distributor and the (fake) telephones ---------------------------------
def test_through_to_the_real_call_control() -> None:
    async def test(client: TestClient, engine: DeskEngine) -> None:
        world = engine.world
        engine.control = world.control
        response = await client.post("/api/desk/hold", json={"held": True}, headers=basic("op"))
        assert (await json_of(response, 409))["error"] == "you have no call in progress"
        caller, phone = world.talking("op1")
        body = await json_of(await client.post("/api/desk/hold", json={"held": True}, headers=basic("op")), 200)
        assert body["call"]["state"] == "held" and body["call"]["call_id"] == "c1"
        response = await client.post("/api/desk/dtmf", json={"digits": "12x"}, headers=basic("op"))
        assert (await json_of(response, 422))["field"] == "digits"
        response = await client.post("/api/desk/conference", json={"service": "120"}, headers=basic("op"))
        assert (await json_of(response, 409))["error"] == "take the caller off hold first"
        await json_of(await client.post("/api/desk/hold", json={"held": False}, headers=basic("op")), 200)
        body = await json_of(await client.post("/api/desk/conference", json={"service": "120"}, headers=basic("op")),
                             201)
        party = body["party"]
        assert body["call"]["parties"] == [party] and party["label"] == "120"
        body = await json_of(await client.delete(f"/api/desk/conference/{party['call_id']}", headers=basic("op")),
                             200)
        assert body["call"]["parties"] == []
        body = await json_of(await client.post("/api/desk/transfer", json={"queue": "emergency"},
                                               headers=basic("op")), 200)
        assert body["call"] is None and body["transferred"]["target"] == "queue:emergency"
        assert world.acd.calls["c1"].queue.name == "emergency" and caller.active and not phone.active
        response = await client.post("/api/desk/hangup", headers=basic("op"))
        assert (await json_of(response, 409))["error"] == "you have no call"

    run(test)
