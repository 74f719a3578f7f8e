"""An ordinary outbound call placed from the desktop (POST /api/desk/dial) on a running engine, desk phone path.

The operator's desk phone is tools/sipp/acd_phone.xml at a static contact (it rings first, showing the elder's
number, and answers); the elder's telephone is a SIPp UAS on the carrier (127.0.0.2, the trunk's port) that answers,
talks 2 s and hangs up. The proof: the phone rings before the elder, the elder's INVITE goes out through the trunk
(and is the number as the directory keys it), the operator is reserved then talking, the desk sees an "outbound"
call, and a service record saved for the call lands in the elder's history next to the call itself (its CDR)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine import RunningEngine, free_port
from tests.integration.test_engine_acd import at, operator_states, phone_log, scenario_file, start_phone
from tests.integration.test_engine_callbacks import (
    ELDER_ANSWERS_AND_HANGS_UP,
    carrier,
    make_available,
    operator_view,
    wait_for_operator_state,
    with_operator_login,
)

pytestmark = pytest.mark.integration

ELDER_NUMBER = "13700137005"


def elder_history(engine: RunningEngine, elder_id: int) -> list[dict[str, Any]]:
    code, body = engine.api("GET", f"/api/elders/{elder_id}/history")
    assert code == 200, body
    return list(body["history"])


def until(condition: Any, message: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(0.1)
    return value


def test_an_operator_calls_an_elder_from_the_desk_phone_and_records_it(engine_factory, sipp_factory,
                                                                         tmp_path: Path) -> None:
    port = free_port("udp")
    engine = engine_factory(with_operator_login(port))
    engine.wait_for_event("ivr.started", timeout=60)
    code, created = engine.api("POST", "/api/elders", {"name": "赵淑兰", "number": "137 0013 7005"})
    assert code == 201, created
    elder_id = created["id"]

    phone_trace, elder_trace = tmp_path / "phone.log", tmp_path / "elder.log"
    desk = start_phone(sipp_factory, "acd_phone.xml", port, log=phone_trace, max_calls=1, timeout=30)
    elder = carrier(sipp_factory, engine, scenario_file(tmp_path, "elder_answers",
                                                        ELDER_ANSWERS_AND_HANGS_UP.format(talk_ms=2000)),
                    log=elder_trace)

    # logged out: refused, nothing rings; an auditor may not dial; a bad number names the field
    code, body = engine.api("POST", "/api/desk/dial", {"number": ELDER_NUMBER})
    assert code == 409 and "logged_out" in body["error"], body
    make_available(engine)
    assert engine.api("POST", "/api/desk/dial", {"number": ELDER_NUMBER, "operator": "op1001"},
                      user="auditor")[0] == 403
    code, body = engine.api("POST", "/api/desk/dial", {"number": "abc"})
    assert (code, body.get("field")) == (422, "number"), body

    code, body = engine.api("POST", "/api/desk/dial", {"number": "+86 137-0013-7005", "elder_id": elder_id})
    assert code == 202, body
    key = body["dialling"]["call_id"]
    assert key.startswith("outbound-") and body["dialling"]["number"] == ELDER_NUMBER, body
    assert (body["call"]["state"], body["call"]["kind"], body["call"]["device"]) == ("ringing", "outbound", "phone")
    assert engine.api("POST", "/api/desk/dial", {"number": ELDER_NUMBER})[0] == 409  # one call at a time

    (dialling,) = engine.wait_for_event("acd.outbound.dialling", key=key)
    (calling,) = engine.wait_for_event("acd.outbound.calling_elder", key=key, timeout=10)
    assert calling["number"] == ELDER_NUMBER
    (placing,) = engine.wait_for_event("call.outbound.placing", call_id=calling["call_id"])
    assert (placing["trunk"], placing["number"]) == ("carrier", ELDER_NUMBER)  # through the trunk
    (connected,) = engine.wait_for_event("acd.outbound.connected", key=key, timeout=10)
    assert connected["call_id"] == calling["call_id"] and operator_view(engine)["state"] == "talking"
    code, current = engine.api("GET", "/api/desk/current")
    assert code == 200 and current["offer"] is None, current
    call = current["call"]
    assert (call["call_id"], call["state"], call["kind"]) == (calling["call_id"], "talking", "outbound"), call
    assert call["pop"]["call"]["direction"] == "outbound" and call["pop"]["elder"]["id"] == elder_id, call["pop"]

    # the service record, written during the call, by the call's id alone
    notes = f"主动关爱 outbound {int(time.time())}"
    code, record = engine.api("POST", "/api/records", {"call_id": calling["call_id"], "disposition": "咨询已解答",
                                                       "notes": notes})
    assert code == 201, record

    (ended,) = engine.wait_for_event("acd.outbound.ended", key=key, timeout=10)
    assert (ended["outcome"], ended["reached"]) == ("reached", True)
    assert 1.5 <= at(ended) - at(connected) <= 5.0, "the elder hung up after 2 s"
    result = elder.run(20)
    assert result.ok and result.successful == 1, str(result)
    assert desk.run(20).successful == 1  # the desk phone got the engine's BYE when the elder hung up

    # the desk phone rang first, showing the elder's number; then the elder's phone, for the number as keyed
    seen = [(kind, call_id, fields.get("from")) for _, kind, call_id, fields in phone_log(phone_trace)]
    assert seen == [("INVITE", dialling["call_id"], ELDER_NUMBER), ("BYE", dialling["call_id"], None)], seen
    phone_rang = next(t for t, kind, _, _ in phone_log(phone_trace) if kind == "INVITE")
    elder_rang = [line.split() for line in elder_trace.read_text().splitlines() if " INVITE " in line]
    assert len(elder_rang) == 1 and elder_rang[0][-1] == f"to={ELDER_NUMBER}", elder_rang
    assert float(elder_rang[0][2]) > phone_rang
    engine.wait_for_event("call.ended", call_id=calling["call_id"])
    # a second record, written after the hang-up (the usual case): the call detail record says what it was
    code, later = engine.api("POST", "/api/records", {"call_id": calling["call_id"], "disposition": "咨询已解答",
                                                      "notes": notes + " (after)"})
    assert code == 201, later

    wait_for_operator_state(engine, "available")
    assert [new for new, _ in operator_states(engine, "op1001")] == ["available", "reserved", "talking",
                                                                     "available"]
    # the elder's history: the record (with the call's id) and the call itself, outbound
    history = until(lambda: (h := elder_history(engine, elder_id)) and any(i["kind"] == "call" for i in h) and h,
                    "the outbound call is not in the elder's history")
    saved = sorted((i for i in history if i["kind"] == "record"), key=lambda i: i["notes"])
    assert [(i["notes"], i["call_id"], i["direction"]) for i in saved] == [
        (notes, calling["call_id"], "outbound"), (notes + " (after)", calling["call_id"], "outbound")], saved
    (cdr,) = [i for i in history if i["kind"] == "call"]
    assert (cdr["call_id"], cdr["direction"], cdr["answered"]) == (calling["call_id"], "outbound", True), cdr
    assert not engine.find("acd.callback.attempt_ended") and not engine.find("acd.callback.update_failed")
