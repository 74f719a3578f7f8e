"""The ACD on a running engine: SIPp callers queue through a flow, SIPp UAS instances are the operators'
desk phones (at fixed addresses), and an emergency arriving while every operator talks pre-empts one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine import TRUNK_HOST, RunningEngine, free_port

pytestmark = pytest.mark.integration

QUEUE_FLOW = """\
flow: {name}
description: straight into a queue
start: answer
nodes:
  answer: {{type: answer, next: wait}}
  wait: {{type: queue, queue: {queue}, priority: {priority}}}
"""


def acd_config(phones: dict[str, int], *, wrap_up: float = 0, extra: dict[str, Any] | None = None):
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
             "queues": {"hotline": 5, "emergency": 10}, "wrap_up": wrap_up, "start": "available"}
            for account in phones]
        config["acd"] = {"ring_timeout": 5, "keepalive": 0, **(extra or {})}
        config["routing"]["numbers"] = [
            {"number": "1000", "name": "Hotline", "action": "flow", "flow": "normal"},
            {"number": "12349", "name": "Emergency button", "action": "flow", "flow": "urgent",
             "emergency": True},
        ]
    return tweak


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
