"""IVR flows on a running engine, driven by SIPp callers sending RFC 2833 keypad digits: the hotline menu
leads to the right queue; a flow edited during a call does not change that call while the next call gets
the new version; a broken file is refused (file:line:column) while calls keep working."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine import TRUNK_HOST, RunningEngine

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
QUEUES = [{"name": name} for name in ("emergency", "hotline", "complaint", "care_center", "care_station",
                                      "community", "taxi")]

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="caller navigating an IVR menu with RFC 2833 digits">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Elder" <sip:13800138001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:elder@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=elder 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Elder" <sip:13800138001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0

  ]]></send>
  <pause milliseconds="{before_ms}"/>
  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{digit}.pcap"/></action></nop>
  <pause milliseconds="{after_ms}"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Elder" <sip:13800138001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
</scenario>
"""


def scenario(tmp: Path, digit: str, before_ms: int, after_ms: int = 2500) -> Path:
    path = tmp / f"ivr_{digit}_{before_ms}_{time.monotonic_ns()}.xml"
    path.write_text(SCENARIO.format(digit=digit, before_ms=before_ms, after_ms=after_ms))
    return path


def hotline_all_day() -> str:
    """The shipped hotline flow, open around the clock (the test must not depend on the time of day)."""
    text = (REPO / "ivr_flows" / "hotline.yaml").read_text(encoding="utf-8")
    start = text.index("    weekly:")
    end = text.index("    holidays:")
    return text[:start] + "    schedule: 7x24\n" + text[end:]


def with_flows(config: dict[str, Any]) -> None:
    flows = Path(config["flows"]["directory"])
    flows.mkdir(parents=True, exist_ok=True)
    (flows / "hotline.yaml").write_text(hotline_all_day(), encoding="utf-8")
    shutil.copy(REPO / "ivr_flows" / "after_hours.yaml", flows / "after_hours.yaml")
    config["queues"] = QUEUES
    for route in config["routing"]["numbers"]:
        if route["number"] == "1000":
            route.update({"action": "flow", "flow": "hotline", "button": "hotline"})


@pytest.fixture
def ivr_engine(engine_factory) -> RunningEngine:
    engine = engine_factory(with_flows)
    engine.wait_for_event("ivr.started", timeout=60)
    return engine


def call_menu(engine: RunningEngine, sipp_factory, tmp_path: Path, digit: str, before_ms: int = 4000):
    sipp = sipp_factory(scenario(tmp_path, digit, before_ms), target=engine.sip_target, service="1000",
                        local_ip=TRUNK_HOST, max_calls=1, timeout=40, recv_timeout=20)
    return sipp


def test_sipp_caller_navigates_the_hotline_menu_into_the_right_queue(ivr_engine: RunningEngine, sipp_factory,
                                                                       tmp_path: Path) -> None:
    result = call_menu(ivr_engine, sipp_factory, tmp_path, "3").run(timeout=40)
    assert result.successful == 1, str(result)
    (offered,) = ivr_engine.wait_for_event("call.offered", dialled="1000")
    call_id = offered["call_id"]
    (queued,) = ivr_engine.wait_for_event("acd.call.queued", call_id=call_id)
    assert queued["queue"] == "complaint"
    assert [e["digit"] for e in ivr_engine.find("media.dtmf", call_id=call_id)] == ["3"]
    assert {e["source"] for e in ivr_engine.find("media.dtmf", call_id=call_id)} == {"rfc4733"}
    nodes = [e["node"] for e in ivr_engine.find("ivr.node", call_id=call_id)]
    assert nodes[:3] == ["answer", "welcome", "open_hours"] and "complaint" in nodes
    ivr_engine.wait_for_event("acd.call.left_queue", call_id=call_id, result="caller_hangup")
    ivr_engine.wait_for_event("call.ended", call_id=call_id)
    code, status = ivr_engine.api("GET", "/api/status")
    assert code == 200 and status["flows"]["hotline"]["version"] == 1 and status["counters"]["ivr"]["queued"] >= 0

    second = call_menu(ivr_engine, sipp_factory, tmp_path, "1").run(timeout=40)  # emergency
    assert second.successful == 1, str(second)
    ivr_engine.wait_for_event("acd.call.queued", queue="emergency", priority="emergency")


def test_a_flow_changed_during_a_call_keeps_that_call_on_its_version(ivr_engine: RunningEngine, sipp_factory,
                                                                      tmp_path: Path) -> None:
    first = call_menu(ivr_engine, sipp_factory, tmp_path, "3", before_ms=7000).start()
    (welcome,) = ivr_engine.wait_for_event("ivr.node", node="welcome", timeout=15)
    call_a = welcome["call_id"]
    assert welcome["flow"] == "hotline v1"
    path = ivr_engine.flows_dir / "hotline.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count("    queue: complaint\n") == 1
    path.write_text(text.replace("    queue: complaint\n", "    queue: hotline\n"), encoding="utf-8")
    ivr_engine.wait_for_event("ivr.flow.live", flow="hotline", version=2, timeout=20)
    assert first.running  # call A is still in its flow
    ivr_engine.wait_for_event("acd.call.queued", call_id=call_a, timeout=20)
    assert ivr_engine.find("acd.call.queued", call_id=call_a)[0]["queue"] == "complaint"  # v1's choice
    assert first.run(timeout=40).successful == 1

    second = call_menu(ivr_engine, sipp_factory, tmp_path, "3").run(timeout=40)
    assert second.successful == 1, str(second)
    (queued,) = [e for e in ivr_engine.find("acd.call.queued") if e["call_id"] != call_a]
    assert queued["queue"] == "hotline"  # v2: complaints are taken by the hotline queue
    assert ivr_engine.find("ivr.node", call_id=queued["call_id"])[0]["flow"] == "hotline v2"


def test_a_broken_flow_file_is_refused_and_calls_keep_working(ivr_engine: RunningEngine, sipp_factory,
                                                               tmp_path: Path) -> None:
    path = ivr_engine.flows_dir / "hotline.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("      3: complaint", "      3: complain"), encoding="utf-8")  # dangling
    (refused,) = ivr_engine.wait_for_event("ivr.flow.refused", flow="hotline", timeout=20)
    problems = "\n".join(refused["problems"])
    line = next(n for n, row in enumerate(path.read_text().splitlines(), 1) if "3: complain" in row)
    assert f"hotline.yaml:{line}:" in problems and "complain" in problems
    assert any("\u4e00" <= ch <= "\u9fff" for ch in problems)  # the Chinese message is there too
    assert refused["keeps"] == "hotline v1"

    result = call_menu(ivr_engine, sipp_factory, tmp_path, "3").run(timeout=40)
    assert result.successful == 1, str(result)
    (queued,) = ivr_engine.wait_for_event("acd.call.queued")
    assert queued["queue"] == "complaint"
    assert ivr_engine.find("ivr.node", call_id=queued["call_id"])[0]["flow"] == "hotline v1"


def test_an_emergency_whose_flow_is_not_live_still_reaches_the_emergency_queue(engine_factory, sipp_factory) -> None:
    def missing_flow(config: dict[str, Any]) -> None:
        config["queues"] = QUEUES
        for route in config["routing"]["numbers"]:
            if route["number"] == "12349":
                route.update({"action": "flow", "flow": "terminal", "button": "emergency"})

    engine = engine_factory(missing_flow)  # no terminal.yaml in its flows folder
    engine.wait_for_event("ivr.started", timeout=60)
    sipp = sipp_factory("uac", target=engine.sip_target, service="12349", local_ip=TRUNK_HOST, max_calls=1,
                        timeout=30, recv_timeout=15)
    assert sipp.run(timeout=40).successful == 1
    (offered,) = engine.wait_for_event("call.offered", dialled="12349")
    engine.wait_for_event("ivr.emergency.fallback", call_id=offered["call_id"])
    (queued,) = engine.wait_for_event("acd.call.queued", call_id=offered["call_id"])
    assert (queued["queue"], queued["priority"]) == ("emergency", "emergency")
    assert not engine.find("call.rejected", call_id=offered["call_id"])
