"""The engine (`callcenter serve`, a real subprocess) against SIPp and raw SIP on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from callcenter.sip.message import Response, response_for
from tests.integration.engine import REPO_ROOT, TRUNK_HOST, RunningEngine
from tests.integration.rawsip import RawSip, ack_for, bye_for, sdp_offer

pytestmark = pytest.mark.integration


def call_records(e: RunningEngine) -> list[dict[str, Any]]:
    """The CDRs, read with the real CLI after the engine flushed them."""
    out = subprocess.run(
        [sys.executable, "-m", "callcenter.cli", "calls", "recent", "--json", "--limit", "500",
         "--config", str(e.config_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_sipp_uac_from_trunk_completes_calls_and_writes_records(engine: RunningEngine, sipp_factory) -> None:
    sipp = sipp_factory("uac", target=engine.sip_target, service="1000", local_ip=TRUNK_HOST,
                        local_port=engine.trunk_port, max_calls=10, rate=10, timeout=20, recv_timeout=5)
    result = sipp.run(timeout=30)
    assert result.successful == 10 and result.failed == 0, str(result)
    engine.wait_for_event("call.ended", count=10, reason="caller_bye")
    assert engine.stop() == 0
    records = call_records(engine)
    assert len(records) == 10
    assert {r["end_reason"] for r in records} == {"caller_bye"}
    assert all(r["trunk"] == "carrier" and r["to_number"] == "1000" and r["answered_at"] for r in records)


def test_sipp_over_tcp(engine: RunningEngine, sipp_factory) -> None:
    sipp = sipp_factory("uac_hold.xml", target=engine.sip_target, service="1000", transport="t1",
                        local_ip=TRUNK_HOST, max_calls=5, rate=5, timeout=20, recv_timeout=5)
    result = sipp.run(timeout=30)
    assert result.successful == 5 and result.failed == 0, str(result)


def test_sipp_with_ten_percent_packet_loss_recovers_by_retransmission(engine: RunningEngine, sipp_factory) -> None:
    sipp = sipp_factory("uac_hold.xml", target=engine.sip_target, service="1000", local_ip=TRUNK_HOST,
                        max_calls=30, rate=10, limit=30, lost=10, timeout=60, recv_timeout=40)
    result = sipp.run(timeout=90)
    assert result.successful == 30 and result.failed == 0, str(result)
    assert result.retransmissions > 0  # the loss really happened and was repaired


def test_cancel_before_answer_gets_487(engine: RunningEngine, sipp_factory) -> None:
    sipp = sipp_factory("uac_cancel.xml", target=engine.sip_target, service="2000", local_ip=TRUNK_HOST,
                        max_calls=3, rate=3, timeout=20, recv_timeout=5)
    result = sipp.run(timeout=30)
    assert result.successful == 3 and result.failed == 0, str(result)
    ended = engine.wait_for_event("call.ended", count=3, reason="cancelled")
    assert all(e["sip_status"] == 487 for e in ended)


def test_unauthenticated_invite_is_challenged(engine_factory: Callable[..., RunningEngine]) -> None:
    def both(config: dict[str, Any]) -> None:
        config["sip"]["digest_algorithms"] = ["SHA-256", "MD5"]

    engine = engine_factory(both)
    with RawSip(engine.sip_port) as sip:
        invite, _ = sip.request("INVITE", f"sip:1000@127.0.0.1:{engine.sip_port}", body=sdp_offer())
        sip.send(invite)
        first = sip.receive()
        assert isinstance(first, Response) and first.status == 100
        final = sip.final_response()
        assert final.status == 401
        challenges = final.headers.get_all("WWW-Authenticate")
        assert len(challenges) == 2 and "SHA-256" in challenges[0] and "MD5" in challenges[1]  # as configured
        sip.send(ack_for(invite, final))


def test_unknown_number_404_and_no_common_codec_488(engine: RunningEngine) -> None:
    with RawSip(engine.sip_port, local_ip=TRUNK_HOST) as sip:
        invite, _ = sip.request("INVITE", f"sip:5555@127.0.0.1:{engine.sip_port}", body=sdp_offer())
        sip.send(invite)
        resp = sip.final_response()
        assert resp.status == 404 and "5555" in resp.reason
        invite, _ = sip.request("INVITE", f"sip:1000@127.0.0.1:{engine.sip_port}", body=sdp_offer(codecs="18"))
        sip.send(invite)
        resp = sip.final_response()
        assert resp.status == 488 and "no common codec" in (resp.headers.get("Warning") or "")


def test_malformed_messages_get_400_with_reason_and_engine_keeps_working(engine: RunningEngine) -> None:
    with RawSip(engine.sip_port, local_ip=TRUNK_HOST) as sip:
        good, _ = sip.request("OPTIONS", f"sip:1000@127.0.0.1:{engine.sip_port}")
        broken = good.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")  # RFC 4475 mismatch01
        sip.send(broken)
        resp = sip.final_response()
        assert resp.status == 400 and "CSeq method" in resp.reason
        sip.send(good.replace(b"SIP/2.0\r\nVia", b"SIP/7.0\r\nVia", 1))  # RFC 4475 badvers
        assert sip.final_response().status == 505
        for junk in (b"\x00\xff garbage", b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"x" * 65000):
            sip.send(junk)  # unroutable or oversized: dropped (logged once), never answered
        sip.send(good)
        assert sip.final_response().status == 200
    assert engine.find("sip.message.malformed")


def small_trunk(config: dict[str, Any]) -> None:
    config["trunks"][0].update(channels=4, emergency_reserve=1)


def test_trunk_channels_keep_a_reserve_for_emergencies(engine_factory: Callable[..., RunningEngine]) -> None:
    """channels=4, emergency_reserve=1: 3 ordinary calls fit, the 4th gets 486, an emergency still gets in."""
    engine = engine_factory(small_trunk)
    with RawSip(engine.sip_port, local_ip=TRUNK_HOST) as sip:
        answered: list[tuple[bytes, Response]] = []

        def call(number: str) -> Response:
            invite, _ = sip.request("INVITE", f"sip:{number}@127.0.0.1:{engine.sip_port}", body=sdp_offer())
            sip.send(invite)
            resp = sip.final_response()
            if resp.status == 200:
                sip.send(ack_for(invite, resp))
                answered.append((invite, resp))
            return resp

        assert [call("1000").status for _ in range(3)] == [200, 200, 200]
        busy = call("1000")
        assert busy.status == 486 and "emergenc" in busy.reason
        assert call("12349").status == 200
        assert call("12349").status == 503
        for invite, resp in answered:
            sip.send(bye_for(invite, resp))
            assert sip.final_response().status == 200
    engine.wait_for_event("call.ended", count=4, reason="caller_bye")


def test_max_duration_ends_the_call_with_bye(engine: RunningEngine) -> None:
    with RawSip(engine.sip_port, local_ip=TRUNK_HOST) as sip:
        invite, call_id = sip.request("INVITE", f"sip:3000@127.0.0.1:{engine.sip_port}", body=sdp_offer())
        sip.send(invite)
        resp = sip.final_response()
        assert resp.status == 200
        sip.send(ack_for(invite, resp))
        started = time.monotonic()
        bye = sip.receive(timeout=5)
        assert bye is not None and getattr(bye, "method", None) == "BYE"
        assert 0.8 < time.monotonic() - started < 3
        sip.send(bytes(response_for(bye, 200)))  # type: ignore[arg-type]
    engine.wait_for_event("call.ended", call_id=call_id, reason="max_duration")


def test_graceful_shutdown_sends_bye_and_flushes_records(engine: RunningEngine) -> None:
    with RawSip(engine.sip_port, local_ip=TRUNK_HOST) as sip:
        invite, call_id = sip.request("INVITE", f"sip:1000@127.0.0.1:{engine.sip_port}", body=sdp_offer())
        sip.send(invite)
        resp = sip.final_response()
        sip.send(ack_for(invite, resp))
        engine.wait_for_event("call.answered", call_id=call_id)
        assert engine.proc is not None
        engine.proc.send_signal(__import__("signal").SIGTERM)
        bye = sip.receive(timeout=5)
        assert bye is not None and getattr(bye, "method", None) == "BYE"
        # answer the BYE so the engine can finish cleanly
        sip.send(bytes(response_for(bye, 200)))  # type: ignore[arg-type]
        assert engine.stop() == 0
    records = call_records(engine)
    assert [(r["call_id"], r["end_reason"]) for r in records] == [(call_id, "shutdown")]
    assert engine.find("engine.stopped")


def test_outbound_call_through_the_trunk_to_a_sipp_uas(engine: RunningEngine, sipp_factory) -> None:
    """An operator places a call (API) through the carrier trunk; the far end is SIPp's uas."""
    carrier = sipp_factory("uas", local_ip=TRUNK_HOST, local_port=engine.trunk_port, max_calls=1,
                           timeout=30, recv_timeout=20)
    carrier.start()
    status, body = engine.api("POST", "/api/calls", {"number": "120", "trunk": "carrier"})
    assert status == 201, body
    call_id = body["call_id"]
    engine.wait_for_event("call.outbound.answered", call_id=call_id, timeout=10)
    status, body = engine.api("DELETE", f"/api/calls/{call_id}")
    assert status == 202, body
    engine.wait_for_event("call.ended", call_id=call_id, reason="local_bye")
    result = carrier.stop(grace=8)
    assert result.successful == 1 and result.failed == 0, str(result)
    # an auditor may look but not dial; bad input names the field
    assert engine.api("POST", "/api/calls", {"number": "120"}, user="auditor")[0] == 403
    status, body = engine.api("POST", "/api/calls", {"number": "12a"})
    assert status == 422 and body["field"] == "number"
    assert engine.stop() == 0
    (record,) = [r for r in call_records(engine) if r["call_id"] == call_id]
    assert record["direction"] == "outbound" and record["to_number"] == "120" and record["answered_at"]


def test_trunk_registers_with_digest_and_unregisters_at_shutdown(engine_factory, sipp_factory) -> None:
    """A trunk with register: true logs in to the carrier's registrar (a SIPp scenario checks the digest)."""
    registrar = sipp_factory("uas_registrar.xml", local_ip=TRUNK_HOST, max_calls=1, timeout=30, recv_timeout=20)
    registrar.start()

    def registering(config: dict[str, Any]) -> None:
        config["trunks"][0].update(port=registrar.local_port, register=True, username="center",
                                   password="trunk-secret", register_expires=600)

    engine = engine_factory(registering)
    engine.wait_for_event("trunk.register.state", trunk="carrier", registered=True, timeout=10)
    assert engine.stop() == 0  # SIGTERM: the engine un-registers before it exits
    result = registrar.stop(grace=5)
    assert result.successful == 1 and result.failed == 0, str(result)


def test_flood_from_a_stranger_is_throttled_but_never_the_trunk(engine_factory: Callable[..., RunningEngine]) -> None:
    def tight(config: dict[str, Any]) -> None:
        config["sip"]["flood"] = {"rate": 20, "burst": 40, "ban_seconds": 30}

    engine = engine_factory(tight)

    def answered(local_ip: str, count: int) -> int:
        with RawSip(engine.sip_port, local_ip=local_ip) as sip:
            for _ in range(count):
                sip.send(sip.request("OPTIONS", f"sip:1000@127.0.0.1:{engine.sip_port}")[0])
            got = 0
            while sip.receive(timeout=1.0) is not None:
                got += 1
            return got

    stranger = answered("127.0.0.3", 300)
    assert 30 <= stranger < 100  # the burst, then a ban
    assert answered("127.0.0.3", 5) == 0  # still banned
    assert answered(TRUNK_HOST, 300) == 300  # the carrier is never throttled


def test_ipv6_listener_answers_with_received_and_rport(engine_factory: Callable[..., RunningEngine]) -> None:
    import socket

    def v6(config: dict[str, Any]) -> None:
        port = config["sip"]["listen"][0].rsplit(":", 1)[1]
        config["sip"]["listen"] = [f"udp:[::1]:{port}"]

    engine = engine_factory(v6)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:1000@[::1]:{engine.sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP [::1]:{port};branch=z9hG4bKv6test;rport\r\nMax-Forwards: 70\r\n"
                f"From: <sip:x@[::1]>;tag=1\r\nTo: <sip:1000@[::1]>\r\nCall-ID: v6@test\r\nCSeq: 1 OPTIONS\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode(),
            ("::1", engine.sip_port),
        )
        s.settimeout(5)
        reply = s.recvfrom(65535)[0].decode()
    assert reply.startswith("SIP/2.0 200 OK")
    assert f"rport={port}" in reply
