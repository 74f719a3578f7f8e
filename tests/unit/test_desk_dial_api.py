"""POST /api/desk/dial (agents.desk_calls): roles, who dials for whom, the number normalised as the directory keys
numbers, field errors, the dialler's refusals as JSON; and the whole way through the real Dialler and CallControl
with the desk phone rig of tests/unit/test_outbound_dial.py (real Distributor, fake telephones)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.desk_calls import REQUEST_SCHEMAS
from agents.web import create_app
from callcenter.acd.dialler import DialError
from callcenter.acd.operators import OperatorState
from tests.unit.test_outbound_dial import ELDER, PhoneRig
from tests.unit.test_web import FakeEngine, Now, basic, logged_in, make_config

RINGING = {"call_id": "outbound-1", "state": "ringing", "device": "phone", "muted": False, "held": False,
           "parties": [], "started_at": "2025-01-01T00:00:00+00:00", "kind": "outbound"}


class FakePlaced:
    def __init__(self, key: str) -> None:
        self.key = key
        self.browser = False


class FakeDialler:
    """Records what the route asks; raises ``error`` when set."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int | None]] = []
        self.error: DialError | None = None

    def call(self, operator: str, number: str, *, elder_id: int | None = None) -> FakePlaced:
        self.asked.append((operator, number, elder_id))
        if self.error is not None:
            raise self.error
        return FakePlaced(f"outbound-{len(self.asked)}")


class FakeControl:
    def current(self, name: str) -> dict[str, Any]:
        return RINGING


class FakeDirectory:
    async def has_elder(self, elder_id: int) -> bool:
        return elder_id < 100


class DialEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__(make_config())
        self.rig = PhoneRig()
        self.rig.op1.user = "op"  # the login "op" is operator op1
        self.acd = self.rig.acd
        self.control: Any = FakeControl()
        self.dialler: Any = FakeDialler()
        self.directory = FakeDirectory()


def run(test: Callable[[TestClient, DialEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        config = make_config()
        engine = DialEngine()
        async with TestClient(TestServer(create_app(engine, config, now=Now()))) as client:
            await test(client, engine)

    asyncio.run(main())


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


def test_an_operator_dials_for_themselves_and_the_number_is_normalised() -> None:
    async def test(client: TestClient, engine: DialEngine) -> None:
        body = await json_of(await client.post("/api/desk/dial", json={"number": "+86 138 0013 8001", "elder_id": 7},
                                               headers=basic("op")), 202)
        assert body == {"operator": "op1", "call": RINGING, "dialling": {
            "call_id": "outbound-1", "number": ELDER, "elder_id": 7, "device": "phone"}}
        await json_of(await client.post("/api/desk/dial", json={"number": "010-6234 5678"}, headers=basic("op")), 202)
        await json_of(await client.post("/api/desk/dial", json={"number": "１３８００１３８００１"},
                                        headers=basic("op")), 202)  # full-width digits, as input methods type them
        assert engine.dialler.asked == [("op1", ELDER, 7), ("op1", "01062345678", None), ("op1", ELDER, None)]

    run(test)


def test_roles_and_dialling_for_another_operator() -> None:
    async def test(client: TestClient, engine: DialEngine) -> None:
        body = {"number": ELDER}
        assert (await client.post("/api/desk/dial", json=body)).status == 401
        assert (await client.post("/api/desk/dial", json=body, headers=basic("aud"))).status == 403
        response = await client.post("/api/desk/dial", json={**body, "operator": "op2"}, headers=basic("op"))
        assert (await json_of(response, 403))["field"] == "operator"
        response = await client.post("/api/desk/dial?operator=op2", json=body, headers=basic("op"))
        await json_of(response, 403)
        response = await client.post("/api/desk/dial", json=body, headers=basic("sup"))
        assert (await json_of(response, 422))["field"] == "operator"  # supervisors name the operator
        assert engine.dialler.asked == []
        await json_of(await client.post("/api/desk/dial", json={**body, "operator": "op2"}, headers=basic("sup")),
                      202)
        await json_of(await client.post("/api/desk/dial?operator=op1", json=body, headers=basic("admin")), 202)
        assert [a[0] for a in engine.dialler.asked] == ["op2", "op1"]

    run(test)


def test_a_session_needs_the_csrf_token() -> None:
    async def test(client: TestClient, engine: DialEngine) -> None:
        csrf = await logged_in(client, "op")
        response = await client.post("/api/desk/dial", json={"number": ELDER})
        assert response.status == 403 and "CSRF" in (await response.json())["error"]
        await json_of(await client.post("/api/desk/dial", json={"number": ELDER}, headers={"X-CSRF-Token": csrf}),
                      202)
        assert engine.dialler.asked == [("op1", ELDER, None)]

    run(test)


@pytest.mark.parametrize(("body", "field"), [
    ({}, "number"),
    ({"number": 13800138001}, "number"),
    ({"number": "   "}, "number"),
    ({"number": "1" * 33}, "number"),
    ({"number": "abc"}, "number"),
    ({"number": "12345678901"}, "number"),  # 11 digits that are no mobile
    ({"number": "62345678"}, "number"),  # a local number without its area code
    ({"number": ELDER, "elder_id": "7"}, "elder_id"),
    ({"number": ELDER, "elder_id": True}, "elder_id"),
    ({"number": ELDER, "elder_id": 0}, "elder_id"),
    ({"number": ELDER, "elder_id": 500}, "elder_id"),  # no such elder
    ({"number": ELDER, "priority": "high"}, "priority"),
])
def test_bad_bodies_name_the_field(body: dict[str, Any], field: str) -> None:
    async def test(client: TestClient, engine: DialEngine) -> None:
        response = await client.post("/api/desk/dial", json=body, headers=basic("op"))
        assert (await json_of(response, 422))["field"] == field
        assert engine.dialler.asked == []

    run(test)


def test_refusals_of_the_dialler_become_json_errors() -> None:
    async def test(client: TestClient, engine: DialEngine) -> None:
        for status, field in ((409, None), (422, "number"), (404, "operator")):
            engine.dialler.error = DialError(status, f"refused {status}", field)
            response = await client.post("/api/desk/dial", json={"number": ELDER}, headers=basic("op"))
            body = await json_of(response, status)
            assert body["error"] == f"refused {status}" and body.get("field") == field
        engine.dialler = None
        await json_of(await client.post("/api/desk/dial", json={"number": ELDER}, headers=basic("op")), 503)

    run(test)


def test_the_request_schema_describes_the_route() -> None:
    schema = REQUEST_SCHEMAS["api_desk_dial"]
    assert schema["required"] == ["number"] and set(schema["properties"]) == {"number", "elder_id", "operator"}


def test_through_to_the_real_dialler_and_call_control() -> None:
    async def test(client: TestClient, engine: DialEngine) -> None:
        rig = engine.rig
        engine.control, engine.dialler = rig.control, rig.dialler
        body = await json_of(await client.post("/api/desk/dial", json={"number": "138-0013-8001", "elder_id": 5},
                                               headers=basic("op")), 202)
        key = body["dialling"]["call_id"]
        assert key.startswith("outbound-") and body["call"]["call_id"] == key
        assert (body["call"]["state"], body["call"]["kind"], body["call"]["device"]) == ("ringing", "outbound", "phone")
        assert rig.op1.state is OperatorState.RESERVED and rig.outbound.phones[0]["caller_number"] == ELDER
        response = await client.post("/api/desk/dial", json={"number": ELDER}, headers=basic("op"))
        assert "reserved" in (await json_of(response, 409))["error"]  # one call at a time
        body = await json_of(await client.post("/api/desk/hangup", headers=basic("op")), 200)
        assert body["call"] is None and rig.op1.state is OperatorState.AVAILABLE  # cancelled while the phone rang
        rig.acd.set_state("op1", "logged_out")
        response = await client.post("/api/desk/dial", json={"number": ELDER}, headers=basic("op"))
        assert "logged_out" in (await json_of(response, 409))["error"]

    run(test)
