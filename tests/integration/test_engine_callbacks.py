"""Callback tasks (回访) on a running engine: an abandoned call becomes a task, an operator dials it from the
API (their SIPp desk phone rings first, then the elder is called through the carrier trunk, where a SIPp UAS
answers or is busy), the operator closes it; and a queue whose overflow is "callback" offers the waiting
caller a callback (press 1, an RFC 2833 digit from SIPp's pcap) while a caller who does not press keeps the
place.

The desk phone runs tools/sipp/acd_phone.xml at a static contact; the elders run the small scenarios below
on 127.0.0.2 (the carrier) at the trunk's port."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine import TRUNK_HOST, RunningEngine, free_port
from tests.integration.peers import SIPP_SCENARIO_DIR, Sipp
from tests.integration.test_engine_acd import (
    NORMAL_NUMBER,
    PHONE_BUSY,
    acd_config,
    at,
    offered_call,
    operator_states,
    phone_log,
    place_call,
    scenario_file,
    start_phone,
)

pytestmark = pytest.mark.integration

# The elder's telephone behind the carrier: answers, talks for a while, hangs up (BYE from this side).
ELDER_ANSWERS_AND_HANGS_UP = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="elder who answers the callback and hangs up after a short talk">
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp="sip:([^@&gt;;]*)@" search_in="hdr" header="To:" check_it="true" assign_to="t,dialled"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="their_from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="our_to"/>
      <log message="[timestamp] INVITE [call_id] to=[$dialled]"/>
    </action>
  </recv>
  <Reference variables="t"/>
  <send><![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:elder@[local_ip]:[local_port]>
      Content-Length: 0

  ]]></send>
  <send retrans="500"><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:elder@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=elder 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

  ]]></send>
  <recv request="ACK"/>
  <pause milliseconds="{talk_ms}"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From:[$our_to];tag=[pid]SIPpTag01[call_number]
      To:[$their_from]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
</scenario>
"""

# A caller waiting in a queue whose overflow is "callback": after the ACK it waits past max_wait (the offer
# starts), presses 1 (RFC 2833) and waits for the engine to say goodbye and hang up.
PRESS_1_AND_WAIT_FOR_BYE = """\
  <pause milliseconds="{before_ms}"/>
  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_1.pcap"/></action></nop>
  <recv request="BYE" timeout="{bye_timeout_ms}"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
</scenario>
"""


def caller_pressing_1(tmp_path: Path, *, before_ms: int, bye_timeout_ms: int) -> Path:
    """tools/sipp/acd_caller.xml whose tail (wait, then BYE) becomes: wait, press 1, take the engine's BYE."""
    text = (SIPP_SCENARIO_DIR / "acd_caller.xml").read_text()
    head = text[:text.index("  <pause/>")]
    tail = PRESS_1_AND_WAIT_FOR_BYE.format(before_ms=before_ms, bye_timeout_ms=bye_timeout_ms)
    return scenario_file(tmp_path, "presses_1", head + tail)


ELDER_NUMBER = NORMAL_NUMBER
SECOND_NUMBER = "13700137002"


def with_operator_login(phone_port: int, **options: Any):
    """acd_config with op1001 logged out at first and belonging to the desktop login operator1."""
    base = acd_config({"1001": phone_port}, start="logged_out", **options)

    def tweak(config: dict[str, Any]) -> None:
        base(config)
        config["operators"][0]["user"] = "operator1"

    return tweak


def carrier(sipp_factory, engine: RunningEngine, scenario: str | Path, *, log: Path | None = None) -> Sipp:
    """The elder's telephone behind the carrier: a SIPp UAS on TRUNK_HOST at the trunk's port (started)."""
    extra = ["-trace_logs", "-log_file", str(log)] if log is not None else []
    return sipp_factory(scenario, local_ip=TRUNK_HOST, local_port=engine.trunk_port, max_calls=1, timeout=30,
                        recv_timeout=20, extra_args=extra).start()


def abandoned_task(engine: RunningEngine, sipp_factory) -> dict[str, Any]:
    """ELDER_NUMBER calls the hotline while nobody is available and hangs up: the task as the API shows it."""
    call = place_call(sipp_factory, engine, ELDER_NUMBER, hold_ms=1500)
    call_id = offered_call(engine, ELDER_NUMBER)
    engine.wait_for_event("acd.call.queued", call_id=call_id)
    result = call.run(30)
    assert result.ok and result.successful == 1, str(result)
    (created,) = engine.wait_for_event("acd.callback.created", call_id=call_id)
    assert (created["source"], created["number"]) == ("abandoned", ELDER_NUMBER)
    code, body = engine.api("GET", "/api/callbacks")
    assert code == 200, body
    (task,) = [t for t in body["callbacks"] if t["id"] == created["task_id"]]
    assert (task["state"], task["attempts"], task["number"]) == ("open", 0, ELDER_NUMBER), task
    return task


def make_available(engine: RunningEngine, name: str = "op1001") -> None:
    code, body = engine.api("POST", f"/api/operators/{name}/state", {"state": "available"})
    assert code == 200 and body["state"] == "available", body
    engine.wait_for_event("acd.operator.state", operator=name, new="available")


def operator_view(engine: RunningEngine, name: str = "op1001") -> dict[str, Any]:
    code, body = engine.api("GET", "/api/operators")
    assert code == 200, body
    (view,) = [o for o in body["operators"] if o["name"] == name]
    return view


def callbacks(engine: RunningEngine, state: str | None = None) -> list[dict[str, Any]]:
    code, body = engine.api("GET", "/api/callbacks" + (f"?state={state}" if state else ""))
    assert code == 200, body
    return list(body["callbacks"])


def wait_for_operator_state(engine: RunningEngine, state: str, name: str = "op1001", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (view := operator_view(engine, name))["state"] != state:
        assert time.monotonic() < deadline, f"{name} is {view['state']}, not {state}: {view}"
        time.sleep(0.1)


# -- tests ------------------------------------------------------------------------------------------------
def test_an_operator_dials_a_callback_task_and_closes_it(engine_factory, sipp_factory, tmp_path: Path) -> None:
    port = free_port("udp")
    engine = engine_factory(with_operator_login(port, extra={"abandon_threshold": 0}))
    engine.wait_for_event("ivr.started", timeout=60)
    task = abandoned_task(engine, sipp_factory)
    task_id = task["id"]

    phone_trace = tmp_path / "phone.log"
    desk = start_phone(sipp_factory, "acd_phone.xml", port, log=phone_trace, max_calls=1, timeout=30)
    elder_trace = tmp_path / "elder.log"
    elder = carrier(sipp_factory, engine, scenario_file(tmp_path, "elder_answers",
                                                        ELDER_ANSWERS_AND_HANGS_UP.format(talk_ms=2000)),
                    log=elder_trace)
    make_available(engine)

    # an auditor may look but not dial; operator1 dials as op1001 (no operator named in the body)
    assert engine.api("POST", f"/api/callbacks/{task_id}/dial", {}, user="auditor")[0] == 403
    code, body = engine.api("POST", f"/api/callbacks/{task_id}/dial", {})
    assert code == 202, body
    assert (body["task_id"], body["operator"]) == (task_id, "op1001") and body["call_id"]
    (dialling,) = engine.wait_for_event("acd.callback.dialling", task_id=task_id)
    assert (dialling["operator"], dialling["number"], dialling["call_id"]) == ("op1001", ELDER_NUMBER,
                                                                               body["call_id"])
    # being dialled: not offered twice, not closable
    assert engine.api("POST", f"/api/callbacks/{task_id}/dial", {})[0] == 409
    (calling,) = engine.wait_for_event("acd.callback.calling_elder", task_id=task_id, timeout=10)
    assert calling["number"] == ELDER_NUMBER
    (connected,) = engine.wait_for_event("acd.callback.connected", task_id=task_id, timeout=10)
    assert connected["operator"] == "op1001" and connected["call_id"] == calling["call_id"]
    assert operator_view(engine)["state"] == "talking"
    (ended,) = engine.wait_for_event("acd.callback.attempt_ended", task_id=task_id, timeout=10)
    assert (ended["outcome"], ended["reached"]) == ("reached", True)
    talked = at(ended) - at(connected)
    assert 1.5 <= talked <= 5.0, f"the elder hung up after 2 s; the attempt ended {talked:.1f} s after connecting"
    engine.wait_for_event("acd.callback.reached_elder", task_id=task_id)

    # the phone rang first (showing the elder's number), then the elder was called; both calls are over
    result = elder.run(20)
    assert result.ok and result.successful == 1, str(result)
    assert desk.run(20).successful == 1  # it got the engine's BYE when the elder hung up
    seen = [(kind, call_id, fields.get("from")) for _, kind, call_id, fields in phone_log(phone_trace)]
    assert seen == [("INVITE", body["call_id"], ELDER_NUMBER), ("BYE", body["call_id"], None)], seen
    phone_rang = next(t for t, kind, _, _ in phone_log(phone_trace) if kind == "INVITE")
    elder_rang = [line.split() for line in elder_trace.read_text().splitlines() if " INVITE " in line]
    assert len(elder_rang) == 1 and elder_rang[0][-1] == f"to={ELDER_NUMBER}", elder_rang
    assert float(elder_rang[0][2]) > phone_rang
    engine.wait_for_event("call.ended", call_id=calling["call_id"])
    engine.wait_for_event("call.ended", call_id=body["call_id"])

    (after,) = [t for t in callbacks(engine) if t["id"] == task_id]
    assert (after["state"], after["attempts"], after["operator"]) == ("open", 1, "op1001"), after
    assert "reached" in after["outcome"], after
    wait_for_operator_state(engine, "available")
    assert [new for new, _ in operator_states(engine, "op1001")] == ["available", "reserved", "talking",
                                                                     "available"]

    code, closed = engine.api("POST", f"/api/callbacks/{task_id}/close",
                              {"result": "completed", "outcome": "talked to the elder, all is well"})
    assert code == 200, closed
    assert closed["state"] == "completed" and closed["closed_at"], closed
    assert closed["outcome"] == "talked to the elder, all is well (operator1)"
    engine.wait_for_event("acd.callback.finished", task_id=task_id, state="completed")
    assert task_id not in [t["id"] for t in callbacks(engine)]
    (done,) = [t for t in callbacks(engine, "completed") if t["id"] == task_id]
    assert done["attempts"] == 1 and done["state"] == "completed"
    # an ended task is not dialled or closed again
    assert engine.api("POST", f"/api/callbacks/{task_id}/dial", {})[0] == 409
    assert engine.api("POST", f"/api/callbacks/{task_id}/close", {"result": "closed", "outcome": "again"})[0] == 409
    assert not engine.find("acd.callback.update_failed")


def test_a_busy_elder_puts_the_task_back_with_a_retry_time(engine_factory, sipp_factory, tmp_path: Path) -> None:
    port = free_port("udp")
    engine = engine_factory(with_operator_login(port, extra={"abandon_threshold": 0, "callback_retry": [60]}))
    engine.wait_for_event("ivr.started", timeout=60)
    task_id = abandoned_task(engine, sipp_factory)["id"]

    desk = start_phone(sipp_factory, "acd_phone.xml", port, max_calls=1, timeout=30)
    elder = carrier(sipp_factory, engine, scenario_file(tmp_path, "elder_busy", PHONE_BUSY))
    make_available(engine)

    code, body = engine.api("POST", f"/api/callbacks/{task_id}/dial", {"operator": "op1001"})
    assert code == 202, body
    engine.wait_for_event("acd.callback.dialling", task_id=task_id)
    engine.wait_for_event("acd.callback.calling_elder", task_id=task_id, timeout=10)
    (ended,) = engine.wait_for_event("acd.callback.attempt_ended", task_id=task_id, timeout=10)
    assert (ended["outcome"], ended["reached"]) == ("busy", False)
    (not_reached,) = engine.wait_for_event("acd.callback.not_reached", task_id=task_id)
    assert not_reached["counted"] is True
    assert not engine.find("acd.callback.connected")
    assert elder.run(20).successful == 1
    assert desk.run(20).successful == 1  # the operator's phone was hung up

    now = dt.datetime.now(dt.UTC)
    (after,) = [t for t in callbacks(engine) if t["id"] == task_id]
    assert (after["state"], after["attempts"], after["outcome"]) == ("open", 1, "attempt 1: busy"), after
    due = dt.datetime.fromisoformat(after["due_at"])
    due = due if due.tzinfo is not None else due.replace(tzinfo=dt.UTC)
    assert now + dt.timedelta(seconds=50) < due <= now + dt.timedelta(seconds=61), (after["due_at"], now)
    wait_for_operator_state(engine, "available")
    assert not engine.find("acd.callback.update_failed")


def callback_queue(config: dict[str, Any]) -> None:
    """Nobody available; the hotline offers a callback after 3 s; hanging up creates no task by itself."""
    acd_config({"1001": free_port("udp")}, start="logged_out", extra={"abandon_threshold": 60})(config)
    config["queues"][0].update(max_wait=3, overflow="callback")


def test_a_waiting_caller_accepts_the_callback_offer_and_is_hung_up(engine_factory, sipp_factory,
                                                                    tmp_path: Path) -> None:
    engine = engine_factory(callback_queue)
    engine.wait_for_event("ivr.started", timeout=60)
    scenario = caller_pressing_1(tmp_path, before_ms=6000, bye_timeout_ms=20000)
    caller = place_call(sipp_factory, engine, ELDER_NUMBER, scenario=scenario)
    call_id = offered_call(engine, ELDER_NUMBER)
    (queued,) = engine.wait_for_event("acd.call.queued", call_id=call_id)
    offered = engine.wait_for_event("acd.callback.offered", call_id=call_id, timeout=8)[0]
    assert 2.5 <= at(offered) - at(queued) <= 4.5, "the offer comes after the queue's max_wait (3 s)"
    (digit,) = engine.wait_for_event("media.dtmf", call_id=call_id, timeout=10)
    assert digit["digit"] == "1"
    (created,) = engine.wait_for_event("acd.callback.created", call_id=call_id, timeout=5)
    assert (created["source"], created["number"]) == ("missed", ELDER_NUMBER)
    assert "asked for a callback" in created["reason"]
    (left,) = engine.wait_for_event("acd.call.left_queue", call_id=call_id)
    assert left["result"] == "timeout"
    # the engine says goodbye and hangs up: the scenario ends with the engine's BYE, answered with 200
    result = caller.run(30)
    assert result.ok and result.successful == 1, str(result)
    (ended,) = engine.wait_for_event("call.ended", call_id=call_id)
    assert ended["reason"] == "local_bye", ended
    assert at(ended) > at(created)
    code, queues = engine.api("GET", "/api/queues")
    assert code == 200 and queues["queues"]["hotline"]["calls"] == []
    (task,) = [t for t in callbacks(engine) if t["call_id"] == call_id]
    assert (task["source"], task["state"], task["queue"]) == ("missed", "open", "hotline"), task
    assert not engine.find("acd.callback.offer_failed") and not engine.find("acd.announce.failed")


def test_a_caller_who_does_not_press_1_keeps_the_place(engine_factory, sipp_factory) -> None:
    engine = engine_factory(callback_queue)
    engine.wait_for_event("ivr.started", timeout=60)
    caller = place_call(sipp_factory, engine, SECOND_NUMBER, hold_ms=9000)  # an engine BYE would fail it
    call_id = offered_call(engine, SECOND_NUMBER)
    engine.wait_for_event("acd.call.queued", call_id=call_id)
    engine.wait_for_event("acd.callback.offered", call_id=call_id, timeout=8)
    # max_wait passes again while the caller still hears (or answers) the first offer: it is not cut and restarted
    engine.wait_for_event("acd.callback.offer_in_progress", call_id=call_id, timeout=5)
    assert len(engine.find("acd.callback.offered", call_id=call_id)) == 1
    code, queues = engine.api("GET", "/api/queues")
    assert code == 200, queues
    assert [c["call_id"] for c in queues["queues"]["hotline"]["calls"]] == [call_id], queues
    assert not engine.find("acd.callback.created")
    result = caller.run(30)
    assert result.ok and result.successful == 1, str(result)
    (left,) = engine.wait_for_event("acd.call.left_queue", call_id=call_id)
    assert left["result"] == "caller_hangup"
    assert not engine.find("acd.callback.created"), "nobody asked for a callback (and 9 s < abandon_threshold)"
    assert not engine.find("media.dtmf", call_id=call_id)
    assert not engine.find("acd.callback.offer_failed") and not engine.find("acd.announce.failed")
