"""What the status page and ``GET /api/status`` show, read from the engine: calls, registrations, trunks and
counters, JSON-ready."""

from __future__ import annotations

import time
from dataclasses import asdict, is_dataclass
from typing import Any


def _counters(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if callable(value):
        value = value()
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    return {str(k): v for k, v in dict(value).items()}


def call_json(call: Any, now: float) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "direction": call.direction,
        "caller": call.caller_number,
        "caller_display": call.caller_display,
        "dialled": call.dialled,
        "state": call.state.value,
        "route": call.route_name,
        "trunk": call.trunk,
        "emergency": call.emergency,
        "duration": round(max(0.0, now - call.started_at), 1),
        "answered": call.answered_at is not None,
        "button": call.button,
        "elder_id": call.elder_id,
        "flow": call.flow_version,
    }


def status_snapshot(engine: Any) -> dict[str, Any]:
    """What the status page and ``GET /api/status`` show; JSON-ready."""
    ua = engine.ua
    transport = engine.transport
    now = ua.clock.seconds() if ua is not None else time.time()
    addresses = transport.addresses if transport is not None else {}
    status: dict[str, Any] = {
        "node": engine.config.engine.node_name,
        "sip": [{"transport": t.lower(), "host": h, "port": p} for t, (h, p) in sorted(addresses.items())],
        "accepting": bool(ua.accepting) if ua is not None else False,
        "calls": [],
        "registrations": [],
        "trunks": [],
        "counters": {"transport": _counters(getattr(transport, "stats", None))},
    }
    if ua is None:
        return status
    calls = sorted(ua.calls.values(), key=lambda c: (not c.emergency, c.started_at))
    status["calls"] = [call_json(c, now) for c in calls]
    for username in sorted(ua.accounts):
        aor = f"sip:{username}@{ua.domain}"
        for b in ua.bindings.lookup(aor, now):
            status["registrations"].append({
                "aor": aor,
                "contact": b.contact,
                "expires": b.remaining(now),
                "source": f"{b.source[0].lower()}:{b.source[1]}:{b.source[2]}",
                "user_agent": b.user_agent,
            })
    for trunk in ua.trunks.trunks.values():
        status["trunks"].append({
            "name": trunk.name,
            "channels_used": len(trunk.active_calls),
            "channels": trunk.channels,
            "emergency_reserve": trunk.emergency_reserve,
            "register": trunk.register,
            "registered": trunk.registered,
            "outbound": trunk.outbound,
        })
    counters = status["counters"]
    counters["transactions"] = _counters(getattr(getattr(ua, "txl", None), "stats", None))
    counters["inbound"] = _counters(getattr(ua.inbound, "counters", None))
    counters["outbound"] = _counters(getattr(ua.outbound, "counters", None))
    counters["auth"] = _counters(ua.counters)
    counters["media"] = _counters(getattr(getattr(engine, "media", None), "stats", None))
    flows = getattr(engine, "flows", None)
    if flows is not None:
        ivr = flows.status()
        status["flows"] = ivr["flows"]
        status["flows_refused"] = ivr["refused"]  # the problems of the last refused edit, per flow
        status["queues"] = ivr["queues"]
        counters["ivr"] = _counters(ivr["counters"])
        for call in status["calls"]:  # the IVR path: the nodes the caller went through
            call["ivr_path"] = [step.as_dict() for step in flows.paths.get(call["call_id"], [])]
    acd = getattr(engine, "acd", None)
    if acd is not None:
        status["operators"] = acd.operators_view()
        counters["acd"] = _counters(acd.counters)
        missed = getattr(engine, "missed", None)
        if missed is not None:
            counters["callbacks"] = _counters(missed.counters)
    return status


def format_duration(seconds: float) -> str:
    """Seconds as "m:ss", or "h:mm:ss" from an hour on."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
