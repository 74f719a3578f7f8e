"""Call control from the desktop API on a running engine with real SIP peers.

An elder (SIPp, through the carrier) waits in the queue; op1001's desk phone (SIPp UAS) answers; then, through
``/api/desk/*`` as the operator's login: hold (the caller receives non-silent music, read from the RTP the engine
sends to a socket of this test, which is the caller's SDP media address), DTMF (the same socket receives the
RFC 4733 events), a three-way call with 120 (a SIPp UAS behind the carrier trunk) and dropping it, hang-up (the
caller gets a BYE). A second elder is transferred blind to a number: the desk phone is released, the number (the
carrier's UAS) rings, answers and talks with the elder until the elder hangs up.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callcenter.media.g711 import codec_for
from tests.integration.engine import TRUNK_HOST, RunningEngine
from tests.integration.peers import SIPP_SCENARIO_DIR, free_port, free_port_range
from tests.integration.test_engine_acd import (
    NORMAL_NUMBER,
    acd_config,
    offered_call,
    phone_log,
    place_call,
    scenario_file,
    start_phone,
)

pytestmark = pytest.mark.integration

SECOND_NUMBER = "13800138002"
TRANSFER_TO = "13700137000"
DTMF_EVENTS = {"1": 1, "2": 2, "#": 11}

WAIT_FOR_BYE = """\
  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
"""


def caller_until_engine_bye(tmp_path: Path) -> Path:
    """acd_caller.xml whose SDP names the media port given with -key rtpport (a socket of the test) and that waits
    for the engine's BYE instead of hanging up itself."""
    text = (SIPP_SCENARIO_DIR / "acd_caller.xml").read_text()
    assert text.count("m=audio [media_port] ") == 1 and text.count("  <pause/>\n") == 1
    text = text.replace("m=audio [media_port] ", "m=audio [rtpport] ")
    head, _, _ = text.partition("  <pause/>\n")
    _, _, tail = text.partition('  <recv response="200" crlf="true"/>\n')
    return scenario_file(tmp_path, "caller_until_bye", head + WAIT_FOR_BYE + tail)


class RtpTap:
    """A UDP socket on the carrier's address standing in for the caller's RTP port: keeps (time, pt, payload)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((TRUNK_HOST, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[tuple[float, int, int, bytes]] = []  # (arrival, payload type, RTP timestamp, payload)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) > 12 and data[0] >> 6 == 2:
                self.packets.append((time.monotonic(), data[1] & 0x7F, int.from_bytes(data[4:8]), data[12:]))

    def since(self, start: float, pt: int, until: float = float("inf")) -> list[bytes]:
        return [payload for at, kind, _, payload in list(self.packets) if start <= at < until and kind == pt]

    def events_since(self, start: float, pt: int = 101) -> list[int]:
        """RFC 4733 events in order: every packet of one event carries the event's RTP timestamp."""
        seen: dict[int, int] = {}
        for at, kind, stamp, payload in list(self.packets):
            if at >= start and kind == pt:
                seen.setdefault(stamp, payload[0])
        return list(seen.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def rtp_tap() -> Iterator[RtpTap]:
    tap = RtpTap()
    yield tap
    tap.close()


def rms(payloads: list[bytes]) -> float:
    pcm = codec_for("PCMU").decode(b"".join(payloads)).astype(np.float64)
    return float(np.sqrt(np.mean(pcm**2))) if len(pcm) else 0.0


def desk_config(phones: dict[str, int]) -> Any:
    base = acd_config(phones)

    def tweak(config: dict[str, Any]) -> None:
        base(config)
        config["operators"][0]["user"] = "operator1"  # the test's API login is operator op1001
        config["acd"]["transfer_ring_timeout"] = 10
    return tweak


def api(engine: RunningEngine, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    code, answer = engine.api(method, path, body)
    assert code == status, (method, path, code, answer)
    return answer


def test_hold_dtmf_conference_hangup_and_transfer_from_the_desktop(engine_factory, sipp_factory, tmp_path: Path,
                                                                   rtp_tap: RtpTap) -> None:
    port = free_port("udp")
    engine = engine_factory(desk_config({"1001": port}))
    engine.wait_for_event("ivr.started", timeout=60)
    desk_log, trunk_log = tmp_path / "desk.log", tmp_path / "trunk.log"
    desk = start_phone(sipp_factory, "acd_phone.xml", port, log=desk_log, max_calls=2, timeout=90)
    carrier = sipp_factory("acd_phone.xml", local_ip=TRUNK_HOST, local_port=engine.trunk_port,
                           media_port=free_port_range(4, "udp", host=TRUNK_HOST), max_calls=2, timeout=90,
                           extra_args=["-trace_logs", "-log_file", str(trunk_log)]).start()

    caller = sipp_factory(caller_until_engine_bye(tmp_path), target=engine.sip_target, service="1000",
                          local_ip=TRUNK_HOST, media_port=free_port_range(4, "udp", host=TRUNK_HOST), max_calls=1,
                          keys={"caller": NORMAL_NUMBER, "rtpport": str(rtp_tap.port)}, timeout=60,
                          recv_timeout=60).start()
    call_id = offered_call(engine, NORMAL_NUMBER)
    engine.wait_for_event("acd.call.connected", call_id=call_id, operator="op1001")

    # -- hold: the caller hears music (before, the silent desk phone gave them silence) --------------------------
    talking = time.monotonic()
    time.sleep(1.0)
    held = time.monotonic()
    body = api(engine, "POST", "/api/desk/hold", {"held": True})
    assert (body["call"]["state"], body["call"]["call_id"], body["call"]["device"]) == ("held", call_id, "phone")
    time.sleep(1.5)
    api(engine, "POST", "/api/desk/hold", {"held": False})
    bridged = rtp_tap.since(talking + 0.2, 0, until=held)
    music = rtp_tap.since(held + 0.2, 0)[:40]
    assert len(bridged) >= 20 and len(music) >= 40, (len(bridged), len(music))
    print(f"\ncaller's audio RMS: bridged to the silent phone {rms(bridged):.0f}, on hold {rms(music):.0f}")
    assert rms(bridged) < 50 < 500 < rms(music), (rms(bridged), rms(music))
    engine.wait_for_event("media.hold", call_id=engine.find("acd.phone.ringing")[0]["phone_call_id"], held=True)

    # -- DTMF: RFC 4733 events on the caller's leg ------------------------------------------------------------------
    sent = time.monotonic()
    api(engine, "POST", "/api/desk/dtmf", {"digits": "12#"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(rtp_tap.events_since(sent)) < 3:
        time.sleep(0.1)
    time.sleep(0.3)
    assert rtp_tap.events_since(sent) == [DTMF_EVENTS[d] for d in "12#"]
    assert any(p[1] & 0x80 for p in rtp_tap.since(sent, 101))  # with end packets
    code, bad = engine.api("POST", "/api/desk/dtmf", {"digits": "12x"})
    assert (code, bad["field"]) == (422, "digits")

    # -- three-way call with 120 behind the carrier, then dropped -----------------------------------------------------
    body = api(engine, "POST", "/api/desk/conference", {"service": "120"}, 201)
    party = body["party"]
    assert (party["number"], party["label"]) == ("120", "120")
    (joined,) = engine.wait_for_event("desk.party.joined", call_id=call_id, timeout=10)
    assert joined["members"] == 3 and joined["party_call_id"] == party["call_id"]
    engine.wait_for_event("media.conference", call_id=call_id, members=3)
    api(engine, "DELETE", f"/api/desk/conference/{party['call_id']}")
    engine.wait_for_event("call.ended", call_id=party["call_id"])
    engine.wait_for_event("desk.party.left", party_call_id=party["call_id"], answered=True)
    engine.wait_for_event("media.bridge", call_id=call_id, count=2)  # back to the two of them

    # -- hang up: the caller gets the BYE (its scenario waits for it) -------------------------------------------------
    body = api(engine, "POST", "/api/desk/hangup")
    result = caller.run(30)
    assert result.ok and result.successful == 1, str(result)
    (ended,) = engine.wait_for_event("call.ended", call_id=call_id)
    assert ended["reason"] == "local_bye"
    engine.wait_for_event("acd.operator.state", operator="op1001", new="available")

    # -- a second elder, transferred blind to a number -------------------------------------------------------------
    second = place_call(sipp_factory, engine, SECOND_NUMBER, hold_ms=9000)
    second_id = offered_call(engine, SECOND_NUMBER)
    engine.wait_for_event("acd.call.connected", call_id=second_id, operator="op1001")
    body = api(engine, "POST", "/api/desk/transfer", {"number": TRANSFER_TO})
    assert body["transferred"] == {"call_id": second_id, "target": f"number:{TRANSFER_TO}"}
    engine.wait_for_event("ivr.transfer.connected", call_id=second_id, number=TRANSFER_TO, timeout=10)
    engine.wait_for_event("desk.call.changed", operator="op1001", call_id=second_id, state="ended")
    result = second.run(30)  # the elder talked with the number and hung up; no BYE from the engine before
    assert result.ok and result.successful == 1, str(result)
    assert desk.run(30).successful == 2 and carrier.run(30).successful == 2

    desk_calls = [(kind, fields.get("from")) for _, kind, _, fields in phone_log(desk_log)]
    assert desk_calls == [("INVITE", NORMAL_NUMBER), ("BYE", None), ("INVITE", SECOND_NUMBER), ("BYE", None)]
    trunk_calls = [(kind, fields.get("to"), fields.get("from")) for _, kind, _, fields in phone_log(trunk_log)]
    assert trunk_calls == [("INVITE", "120", NORMAL_NUMBER), ("BYE", None, None),
                           ("INVITE", TRANSFER_TO, SECOND_NUMBER), ("BYE", None, None)]
    assert engine.find("desk.call.transfer", call_id=second_id, target=f"number:{TRANSFER_TO}")
