"""The ACD on a running engine: SIPp callers queue through a flow, SIPp UAS instances are the operators'
desk phones (at fixed addresses, no REGISTER), and an emergency arriving while every operator talks
pre-empts one.

The phones run tools/sipp/acd_phone.xml (answers, logs every INVITE with its From user and every BYE) or
one of the misbehaving phones below (never answers, busy, stops answering keepalives); the callers run
tools/sipp/acd_caller.xml (a given calling number, hangs up after ``-d`` ms; a BYE from the engine before
that fails the SIPp call)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine import TRUNK_HOST, RunningEngine, free_port
from tests.integration.peers import SIPP_SCENARIO_DIR, Sipp, free_port_range

pytestmark = pytest.mark.integration

QUEUE_FLOW = """\
flow: {name}
description: straight into a queue
start: answer
nodes:
  answer: {{type: answer, next: wait}}
  wait: {{type: queue, queue: {queue}, priority: {priority}}}
"""

NORMAL_NUMBER = "13800138001"
EMERGENCY_NUMBER = "13900139009"

_REPLY_HEADERS = """\
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:phone@[local_ip]:[local_port];transport=[transport]>"""

_ANSWER_SDP = """\
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=phone 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
"""

# Rings and never answers; when the engine gives up it CANCELs, and the phone does what a phone does.
PHONE_NEVER_ANSWERS = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="phone that rings and is never picked up">
  <recv request="INVITE" crlf="true">
    <action><ereg regexp=".*" search_in="hdr" header="CSeq:" check_it="true" assign_to="invite_cseq"/></action>
  </recv>
  <send><![CDATA[
      SIP/2.0 180 Ringing
{_REPLY_HEADERS}
      Content-Length: 0

  ]]></send>
  <recv request="CANCEL"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <send><![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq:[$invite_cseq]
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
</scenario>
"""

PHONE_BUSY = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="phone that is busy">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
      SIP/2.0 486 Busy Here
{_REPLY_HEADERS}
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
</scenario>
"""

# Answers, then loses the dialog (a reboot, a lost BYE): the engine's in-dialog OPTIONS get 481.
PHONE_LOSES_THE_CALL = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="phone that forgets the call">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500"><![CDATA[
      SIP/2.0 200 OK
{_REPLY_HEADERS}
{_ANSWER_SDP}
  ]]></send>
  <recv request="ACK"/>
  <recv request="OPTIONS" timeout="15000"/>
  <send><![CDATA[
      SIP/2.0 481 Call/Transaction Does Not Exist
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
</scenario>
"""

# acd_caller.xml that answers one in-dialog OPTIONS (the engine's keepalive) and hangs up 4 s later.
KEEPALIVE_ANSWER = """\
  <recv request="OPTIONS" timeout="10000"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <pause milliseconds="4000"/>
"""


def caller_answering_a_keepalive(tmp_path: Path) -> Path:
    text = (SIPP_SCENARIO_DIR / "acd_caller.xml").read_text()
    assert text.count("  <pause/>\n") == 1
    return scenario_file(tmp_path, "caller_keepalive", text.replace("  <pause/>\n", KEEPALIVE_ANSWER))


def acd_config(phones: dict[str, int], *, wrap_up: float = 0, start: str = "available",
               extra: dict[str, Any] | None = None):
    def tweak(config: dict[str, Any]) -> None:
        flows = Path(config["flows"]["directory"])
        flows.mkdir(parents=True, exist_ok=True)
        (flows / "normal.yaml").write_text(QUEUE_FLOW.format(name="normal", queue="hotline", priority="normal"))
        (flows / "urgent.yaml").write_text(QUEUE_FLOW.format(name="urgent", queue="emergency",
                                                             priority="emergency"))
        config["queues"] = [{"name": "hotline"}, {"name": "emergency", "service_level": 60}]
        config["accounts"] = [
            {"username": account, "password": f"secret{account}", "kind": "phone",
             "contact": f"sip:{account}@127.0.0.1:{port}"} for account, port in phones.items()]
        config["operators"] = [
            {"name": f"op{account}", "phone": account, "skills": {"cmn": 9},
             "queues": {"hotline": 5, "emergency": 10}, "wrap_up": wrap_up, "start": start}
            for account in phones]
        config["acd"] = {"ring_timeout": 5, "keepalive": 0, **(extra or {})}
        config["routing"]["numbers"] = [
            {"number": "1000", "name": "Hotline", "action": "flow", "flow": "normal"},
            {"number": "12349", "name": "Emergency button", "action": "flow", "flow": "urgent",
             "emergency": True},
        ]
    return tweak


# -- helpers ----------------------------------------------------------------------------------------------
def start_acd(engine_factory, phones: dict[str, int], **options: Any) -> RunningEngine:
    engine = engine_factory(acd_config(phones, **options))
    engine.wait_for_event("ivr.started", timeout=60)
    return engine


def start_phone(sipp_factory, scenario: str | Path, port: int, *, log: Path | None = None,
                **options: Any) -> Sipp:
    """An operator's desk phone: a SIPp UAS on 127.0.0.1:port, started; ``log`` gets its <log> lines."""
    extra = ["-trace_logs", "-log_file", str(log)] if log is not None else []
    return sipp_factory(scenario, local_port=port, media_port=free_port_range(4, "udp"), extra_args=extra,
                        **options).start()


def scenario_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.xml"
    path.write_text(text)
    return path


def place_call(sipp_factory, engine: RunningEngine, number: str, *, service: str = "1000", hold_ms: int = 3000,
               scenario: str | Path = "acd_caller.xml", **options: Any) -> Sipp:
    """An elder calling ``service`` from ``number`` through the carrier and hanging up ``hold_ms`` after the
    200 OK (started)."""
    return sipp_factory(scenario, target=engine.sip_target, service=service, local_ip=TRUNK_HOST,
                        media_port=free_port_range(4, "udp", host=TRUNK_HOST), max_calls=1, duration_ms=hold_ms,
                        keys={"caller": number}, timeout=hold_ms / 1000 + 20, recv_timeout=15,
                        **options).start()


def at(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"]).timestamp()


def offered_call(engine: RunningEngine, caller_number: str, timeout: float = 10) -> str:
    (offered,) = engine.wait_for_event("call.offered", timeout=timeout, caller=caller_number)
    return str(offered["call_id"])


def phone_log(path: Path) -> list[tuple[float, str, str, dict[str, str]]]:
    """acd_phone.xml's log: (unix time, "INVITE" | "BYE", SIP Call-ID, {"to": account, "from": number})."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) >= 5 and parts[3] in ("INVITE", "BYE"):
            fields = dict(p.split("=", 1) for p in parts[5:] if "=" in p)
            rows.append((float(parts[2]), parts[3], parts[4], fields))
    return rows


def operator_states(engine: RunningEngine, name: str) -> list[tuple[str, str | None]]:
    return [(e["new"], e.get("reason")) for e in engine.find("acd.operator.state", operator=name)]


# -- tests ------------------------------------------------------------------------------------------------
def test_a_queued_caller_reaches_an_operator_phone(engine_factory, sipp_factory) -> None:
    port = free_port("udp")
    engine = engine_factory(acd_config({"1001": port}))
    engine.wait_for_event("ivr.started", timeout=60)
    phone = sipp_factory("uas", local_port=port, extra_args=["-rtp_echo"]).start()
    caller = sipp_factory("uac", target=engine.sip_target, service="1000", local_ip=TRUNK_HOST, max_calls=1,
                          duration_ms=3000, timeout=30, recv_timeout=20)
    result = caller.run(40)
    assert result.ok and result.successful == 1, str(result)
    connected = engine.wait_for_event("acd.call.connected", timeout=5)
    assert connected[0]["operator"] == "op1001"
    status, ops = engine.api("GET", "/api/status")
    assert status == 200
    phone.stop()


def test_an_emergency_preempts_a_normal_call_seen_from_both_sides(engine_factory, sipp_factory,
                                                                   tmp_path: Path) -> None:
    port = free_port("udp")
    engine = start_acd(engine_factory, {"1001": port})
    log = tmp_path / "phone.log"
    # The desk phone takes three calls: the normal one, the emergency, the normal one again.
    desk = start_phone(sipp_factory, "acd_phone.xml", port, log=log, max_calls=3, timeout=40)

    normal = place_call(sipp_factory, engine, NORMAL_NUMBER, hold_ms=12000)
    victim = offered_call(engine, NORMAL_NUMBER)
    engine.wait_for_event("acd.call.connected", call_id=victim, operator="op1001")

    emergency = place_call(sipp_factory, engine, EMERGENCY_NUMBER, service="12349", hold_ms=3000)
    urgent = offered_call(engine, EMERGENCY_NUMBER)
    (preempt,) = engine.wait_for_event("acd.preempt", call_id=urgent)
    assert (preempt["victim_call_id"], preempt["operator"], preempt["requeue"]) == (victim, "op1001", True)
    (ringing,) = engine.wait_for_event("acd.phone.ringing", call_id=urgent)
    assert ringing["operator"] == "op1001" and ringing["emergency"] is True
    engine.wait_for_event("acd.call.connected", call_id=urgent, operator="op1001")
    latency = at(ringing) - at(engine.find("call.offered", call_id=urgent)[0])
    print(f"\nemergency INVITE received -> operator phone ringing: {latency * 1000:.1f} ms")
    assert latency < 1.0

    # The victim waits again, first in line (the queue snapshot of /api/status), and gets the operator
    # back when the emergency is over.
    code, status = engine.api("GET", "/api/status")
    assert code == 200
    waiting = {c["call_id"]: c for c in status["queues"]["hotline"]}
    assert victim in waiting and waiting[victim]["head"] is True, status["queues"]
    assert waiting[victim]["state"] in ("waiting", "offered")
    assert status["counters"]["acd"]["preemptions"] == 1
    assert normal.running
    assert emergency.run(30).successful == 1
    engine.wait_for_event("call.ended", call_id=urgent)
    reconnect = engine.wait_for_event("acd.call.connected", count=2, call_id=victim, timeout=10)[1]
    assert reconnect["operator"] == "op1001" and reconnect["first"] is False
    assert not [e for e in engine.find("call.ended", call_id=victim)], "the victim was hung up"
    assert not engine.find("acd.announce.failed") and not engine.find("ivr.tts.failed")

    result = normal.run(30)  # a BYE from the engine before its own would have failed this call
    assert result.ok and result.successful == 1, str(result)
    assert desk.run(30).successful == 3

    # What the phone saw, in order: the normal call, its BYE, the emergency, its BYE, the normal call again.
    phone_calls = [e["phone_call_id"] for e in engine.find("acd.phone.ringing")]
    assert len(phone_calls) == 3
    seen = [(kind, call_id, fields.get("from")) for _, kind, call_id, fields in phone_log(log)]
    assert seen[:4] == [("INVITE", phone_calls[0], NORMAL_NUMBER), ("BYE", phone_calls[0], None),
                        ("INVITE", phone_calls[1], EMERGENCY_NUMBER), ("BYE", phone_calls[1], None)], seen
    assert seen[4] == ("INVITE", phone_calls[2], NORMAL_NUMBER), seen
    arrived = next(t for t, kind, call_id, _ in phone_log(log) if kind == "INVITE" and call_id == phone_calls[1])
    print(f"emergency INVITE received -> INVITE at the phone: "
          f"{(arrived - at(engine.find('call.offered', call_id=urgent)[0])) * 1000:.1f} ms")


def test_a_phone_that_rings_unanswered_passes_the_call_to_the_next_operator(engine_factory, sipp_factory,
                                                                             tmp_path: Path) -> None:
    port_a, port_b = free_port("udp"), free_port("udp")
    engine = start_acd(engine_factory, {"1001": port_a, "1002": port_b}, extra={"ring_timeout": 3})
    silent = start_phone(sipp_factory, scenario_file(tmp_path, "never_answers", PHONE_NEVER_ANSWERS), port_a,
                         max_calls=1, timeout=30)
    desk = start_phone(sipp_factory, "acd_phone.xml", port_b, max_calls=1, timeout=30)

    call = place_call(sipp_factory, engine, NORMAL_NUMBER, hold_ms=7000)
    call_id = offered_call(engine, NORMAL_NUMBER)
    (first,) = engine.wait_for_event("acd.call.offered", call_id=call_id, operator="op1001")
    (missed,) = engine.wait_for_event("acd.offer.withdrawn", call_id=call_id, operator="op1001", timeout=10)
    assert missed["reason"] in ("no_answer", "timeout"), missed
    (connected,) = engine.wait_for_event("acd.call.connected", call_id=call_id, operator="op1002", timeout=10)
    rang = at(missed) - at(first)
    assert 2.5 <= rang <= 5.0, f"op1001's phone rang {rang:.1f} s, the ring timeout is 3 s"

    assert silent.run(30).successful == 1  # it was CANCELled (200, 487, ACK), never answered
    result = call.run(30)
    assert result.ok and result.successful == 1, str(result)
    assert desk.run(30).successful == 1
    assert operator_states(engine, "op1001")[-1] == ("available", None)  # one miss: not paused (max_missed 3)


def test_a_busy_phone_passes_the_call_on_and_pauses_its_operator_after_max_missed(engine_factory, sipp_factory,
                                                                                  tmp_path: Path) -> None:
    port_a, port_b = free_port("udp"), free_port("udp")
    engine = start_acd(engine_factory, {"1001": port_a, "1002": port_b}, extra={"max_missed": 1})
    busy = start_phone(sipp_factory, scenario_file(tmp_path, "busy", PHONE_BUSY), port_a, max_calls=1, timeout=30)
    desk = start_phone(sipp_factory, "acd_phone.xml", port_b, max_calls=1, timeout=30)

    call = place_call(sipp_factory, engine, NORMAL_NUMBER, hold_ms=3000)
    call_id = offered_call(engine, NORMAL_NUMBER)
    engine.wait_for_event("acd.call.offered", call_id=call_id, operator="op1001")
    (missed,) = engine.wait_for_event("acd.offer.withdrawn", call_id=call_id, operator="op1001")
    assert missed["reason"] == "busy"
    engine.wait_for_event("acd.call.connected", call_id=call_id, operator="op1002")
    engine.wait_for_event("acd.operator.state", operator="op1001", new="paused", reason="missed_offers")

    code, status = engine.api("GET", "/api/status")
    assert code == 200
    operators = {o["name"]: o for o in status["operators"]}
    assert (operators["op1001"]["state"], operators["op1001"]["reason"]) == ("paused", "missed_offers")
    assert operators["op1001"]["misses"] == 1 and operators["op1002"]["state"] == "talking"

    assert busy.run(30).successful == 1
    result = call.run(30)
    assert result.ok and result.successful == 1, str(result)
    assert desk.run(30).successful == 1
    assert operator_states(engine, "op1001")[-1] == ("paused", "missed_offers")  # stays paused


def test_a_caller_who_gives_up_waiting_gets_a_callback_task(engine_factory, sipp_factory) -> None:
    engine = start_acd(engine_factory, {"1001": free_port("udp")}, start="logged_out",
                       extra={"abandon_threshold": 0})
    call = place_call(sipp_factory, engine, NORMAL_NUMBER, hold_ms=2000)
    call_id = offered_call(engine, NORMAL_NUMBER)
    engine.wait_for_event("acd.call.queued", call_id=call_id)
    result = call.run(30)
    assert result.ok and result.successful == 1, str(result)
    (left,) = engine.wait_for_event("acd.call.left_queue", call_id=call_id)
    assert left["result"] == "caller_hangup" and left["waited"] >= 1.5
    (task,) = engine.wait_for_event("acd.callback.created", call_id=call_id)
    assert (task["source"], task["number"]) == ("abandoned", NORMAL_NUMBER)
    assert not engine.find("acd.call.offered")


def test_an_emergency_takes_an_operator_out_of_wrap_up_at_once(engine_factory, sipp_factory,
                                                               tmp_path: Path) -> None:
    port = free_port("udp")
    engine = start_acd(engine_factory, {"1001": port}, wrap_up=30)
    log = tmp_path / "phone.log"
    desk = start_phone(sipp_factory, "acd_phone.xml", port, log=log, max_calls=2, timeout=30)

    normal = place_call(sipp_factory, engine, NORMAL_NUMBER, hold_ms=1500)
    first = offered_call(engine, NORMAL_NUMBER)
    engine.wait_for_event("acd.call.connected", call_id=first, operator="op1001")
    assert normal.run(30).successful == 1
    (wrap,) = engine.wait_for_event("acd.operator.state", operator="op1001", new="wrap_up")

    emergency = place_call(sipp_factory, engine, EMERGENCY_NUMBER, service="12349", hold_ms=2000)
    urgent = offered_call(engine, EMERGENCY_NUMBER)
    engine.wait_for_event("acd.seize.wrap_up", call_id=urgent, operator="op1001")
    (connected,) = engine.wait_for_event("acd.call.connected", call_id=urgent, operator="op1001")
    took = at(connected) - at(engine.find("call.offered", call_id=urgent)[0])
    assert took < 2.0, f"the emergency waited {took:.1f} s for an operator in wrap-up"
    assert at(connected) - at(wrap) < 15, "wrap-up (30 s) was not cut short"
    assert emergency.run(30).successful == 1
    assert desk.run(30).successful == 2
    assert [f.get("from") for _, kind, _, f in phone_log(log) if kind == "INVITE"] == [NORMAL_NUMBER,
                                                                                       EMERGENCY_NUMBER]


def test_a_phone_that_stops_answering_keepalives_is_dropped_and_the_caller_waits_again(
        engine_factory, sipp_factory, tmp_path: Path) -> None:
    port = free_port("udp")
    engine = start_acd(engine_factory, {"1001": port}, extra={"keepalive": 2})
    lost = start_phone(sipp_factory, scenario_file(tmp_path, "lost", PHONE_LOSES_THE_CALL), port, max_calls=1,
                       timeout=30)
    call = place_call(sipp_factory, engine, NORMAL_NUMBER, scenario=caller_answering_a_keepalive(tmp_path))
    call_id = offered_call(engine, NORMAL_NUMBER)
    (ringing,) = engine.wait_for_event("acd.phone.ringing", call_id=call_id)
    engine.wait_for_event("acd.call.connected", call_id=call_id, operator="op1001")
    (gone,) = engine.wait_for_event("acd.keepalive.lost", call_id=ringing["phone_call_id"], timeout=6)
    assert gone["status"] == 481
    engine.wait_for_event("acd.operator.lost", call_id=call_id, operator="op1001")
    engine.wait_for_event("acd.operator.state", operator="op1001", new="paused", reason="phone_lost")
    assert lost.run(30).successful == 1

    code, status = engine.api("GET", "/api/status")
    assert code == 200
    waiting = {c["call_id"]: c for c in status["queues"]["hotline"]}
    assert call_id in waiting and waiting[call_id]["head"] is True, status["queues"]
    assert not engine.find("call.ended", call_id=call_id), "the caller was hung up with the phone"
    result = call.run(30)  # the caller stayed up (a BYE from the engine would fail it) and hung up itself
    assert result.ok and result.successful == 1, str(result)
    assert not engine.find("acd.announce.failed")
