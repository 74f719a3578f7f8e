"""Prometheus metrics: QueueMetrics counting the queue event log, the text exposition format 0.0.4 parsed back
line by line, and GET /metrics on the desktop (supervisors and admins, HTTP Basic for the scraper)."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from agents import metrics_route
from agents.web import create_app
from callcenter.acd.events import FanOut, QueueEvent
from callcenter.config import Config
from callcenter.stats.metrics import CONTENT_TYPE, QueueMetrics, escape_label, format_value

# -- a parser of the text format, strict enough to catch what Prometheus would refuse --------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        assert match, f"bad labels at {text[position:]!r}"
        labels[match.group(1)] = _unescape(match.group(2))
        position = match.end()
    return labels


def parse(text: str) -> dict[str, dict[str, Any]]:
    """Families by name: help, type, samples [(sample name, labels, value)]. Checks that every family has its
    HELP and TYPE line once, before its samples, and that a family's lines are not split."""
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, keyword, name, rest = line.split(" ", 3)
            family = families.setdefault(name, {"help": None, "type": None, "samples": []})
            key = keyword.lower()
            assert family[key] is None and not family["samples"], f"{keyword} of {name} repeated or late"
            family[key] = rest
            current = name
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert current is not None
        family = families[current]
        suffixes = ("_bucket", "_sum", "_count") if family["type"] == "histogram" else ("",)
        assert any(name == current + suffix for suffix in suffixes), f"{name} outside its family {current}"
        family["samples"].append((name, parse_labels(labels or ""), float(value)))
    for name, family in families.items():
        assert family["help"] and family["type"] in ("counter", "gauge", "histogram"), name
    return families


def value(families: dict[str, dict[str, Any]], name: str, **labels: str) -> float:
    family = families[re.sub(r"_(bucket|sum|count)$", "", name)] if name not in families else families[name]
    found = [v for n, lab, v in family["samples"] if n == name and lab == labels]
    assert len(found) == 1, (name, labels, family["samples"])
    return found[0]


def ev(kind: str, call_id: str = "c1", queue: str = "hotline", priority: str = "normal", **extra) -> QueueEvent:
    return QueueEvent(at=1000.0, kind=kind, call_id=call_id, queue=queue, priority=priority, **extra)


LIVE = {"queues": {"hotline": {"waiting": 3, "longest_wait": 12.5}, "emergency": {"waiting": 0, "longest_wait": 0}},
        "operators": {"available": 2, "talking": 1, "paused": 0, "wrapup": 1}, "calls": 17}

METRICS = ("callcenter_queue_events_total", "callcenter_queue_wait_seconds", "callcenter_preemptions_total",
           "callcenter_operator_talk_seconds_total", "callcenter_queue_waiting",
           "callcenter_queue_longest_wait_seconds", "callcenter_operators", "callcenter_active_calls")


def test_render_counts_events_and_live_gauges() -> None:
    metrics = QueueMetrics()
    sink = FanOut(metrics)
    for item in [ev("enter"), ev("connect", wait=1.0, operator="1001"), ev("enter", "c2"),
                 ev("connect", "c2", wait=14.2, operator="1001"), ev("enter", "c3"),
                 ev("connect", "c3", wait=1000, operator="1002"),
                 ev("enter", "e1", "emergency", "emergency"),
                 ev("connect", "e1", "emergency", "emergency", wait=0.4, operator="1001"),
                 ev("preempt", "c2", operator="1001"), ev("preempt", "c3", operator="1002"),
                 ev("complete", "c1", operator="1001", seconds=61.5), ev("complete", "e1", operator="1001", seconds=20),
                 ev("complete", "c3", operator="1002", seconds=5)]:
        sink.record(item)
    families = parse(metrics.render(LIVE))
    assert list(families) == list(METRICS)
    assert {name: families[name]["type"] for name in families} == {
        "callcenter_queue_events_total": "counter", "callcenter_queue_wait_seconds": "histogram",
        "callcenter_preemptions_total": "counter", "callcenter_operator_talk_seconds_total": "counter",
        "callcenter_queue_waiting": "gauge", "callcenter_queue_longest_wait_seconds": "gauge",
        "callcenter_operators": "gauge", "callcenter_active_calls": "gauge"}
    assert value(families, "callcenter_queue_events_total", queue="hotline", kind="enter", priority="normal") == 3
    assert value(families, "callcenter_queue_events_total", queue="hotline", kind="preempt", priority="normal") == 2
    assert value(families, "callcenter_queue_events_total", queue="emergency", kind="connect",
                 priority="emergency") == 1
    buckets = [(lab["le"], v) for n, lab, v in families["callcenter_queue_wait_seconds"]["samples"]
               if n.endswith("_bucket") and lab["queue"] == "hotline"]
    assert buckets == [("1", 1), ("2", 1), ("5", 1), ("10", 1), ("15", 2), ("20", 2), ("30", 2), ("60", 2),
                       ("120", 2), ("300", 2), ("+Inf", 3)]  # le is inclusive: a wait of exactly 1 s is in "1"
    assert value(families, "callcenter_queue_wait_seconds_count", queue="hotline", priority="normal") == 3
    assert value(families, "callcenter_queue_wait_seconds_sum", queue="hotline", priority="normal") == 1015.2
    assert value(families, "callcenter_queue_wait_seconds_bucket", queue="emergency", priority="emergency",
                 le="1") == 1
    assert value(families, "callcenter_preemptions_total") == 2
    assert value(families, "callcenter_operator_talk_seconds_total", operator="1001") == 81.5
    assert value(families, "callcenter_operator_talk_seconds_total", operator="1002") == 5
    assert value(families, "callcenter_queue_waiting", queue="hotline") == 3
    assert value(families, "callcenter_queue_longest_wait_seconds", queue="hotline") == 12.5
    assert value(families, "callcenter_queue_waiting", queue="emergency") == 0
    assert {lab["state"]: v for _, lab, v in families["callcenter_operators"]["samples"]} == {
        "available": 2, "talking": 1, "paused": 0, "wrapup": 1}
    assert value(families, "callcenter_active_calls") == 17


def test_empty_metrics_still_have_help_and_type() -> None:
    text = QueueMetrics().render({})
    families = parse(text)
    assert list(families) == list(METRICS)
    assert [s for f in families.values() for s in f["samples"]] == [("callcenter_preemptions_total", {}, 0.0)]
    assert QueueMetrics().render() == text
    # malformed live data is left out, not an error
    odd = parse(QueueMetrics().render({"queues": {"q": "x", "r": {"waiting": "3"}}, "operators": [], "calls": None}))
    assert [s for f in odd.values() for s in f["samples"]] == [("callcenter_preemptions_total", {}, 0.0)]


def test_label_values_are_escaped() -> None:
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    metrics = QueueMetrics()
    nasty = 'q"ue\\ue\n2'
    metrics.record(ev("enter", queue=nasty, priority="nor}mal,x=\"y\""))
    metrics.record(ev("complete", operator="张三 \"3\"", seconds=2.5))
    text = metrics.render({"queues": {nasty: {"waiting": 1}}, "operators": {"on\nbreak": 1}})
    assert 'queue="q\\"ue\\\\ue\\n2"' in text
    assert all("\n" not in line for line in text.splitlines())  # one sample per line: the newline was escaped
    families = parse(text)
    assert value(families, "callcenter_queue_events_total", queue=nasty, kind="enter",
                 priority="nor}mal,x=\"y\"") == 1
    assert value(families, "callcenter_operator_talk_seconds_total", operator="张三 \"3\"") == 2.5
    assert value(families, "callcenter_queue_waiting", queue=nasty) == 1
    assert value(families, "callcenter_operators", state="on\nbreak") == 1


def test_format_value() -> None:
    assert [format_value(v) for v in (0, 3, 2.5, 1e20, float("inf"), float("-inf"))] == [
        "0", "3", "2.5", "1e+20", "+Inf", "-Inf"]
    assert format_value(float("nan")) == "NaN"


# -- GET /metrics on the desktop -------------------------------------------------------------------------------

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORDS = {"admin": "admin-pass", "sup": "sup-pass", "op": "op-pass", "aud": "aud-pass"}
ROLE_OF = {"admin": "admin", "sup": "supervisor", "op": "operator", "aud": "auditor"}


def make_config() -> Config:
    return Config.model_validate({
        "http": {"listen": "127.0.0.1:0"},
        "users": [{"username": u, "password_hash": FAST.hash(p), "role": ROLE_OF[u]} for u, p in PASSWORDS.items()],
    })


class FakeAcd:
    def live(self) -> dict[str, Any]:
        return LIVE


class FakeEngine:
    def __init__(self, config: Config, *, with_acd: bool = True) -> None:
        self.config = config
        if with_acd:
            self.acd = FakeAcd()
            self.acd_metrics = QueueMetrics()
            self.acd_metrics.record(ev("preempt", operator="1001"))


def basic(username: str, password: str | None = None) -> dict[str, str]:
    secret = PASSWORDS[username] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


def run_desk(engine: FakeEngine, test: Any) -> None:
    async def main() -> None:
        app = create_app(engine, engine.config)
        metrics_route.register(app)
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(main())


def test_metrics_route_needs_a_supervisor_or_admin() -> None:
    async def test(client: TestClient) -> None:
        anonymous = await client.get("/metrics", allow_redirects=False)
        assert anonymous.status == 401 and "WWW-Authenticate" not in anonymous.headers
        assert (await client.get("/metrics", headers=basic("sup", "wrong"))).status == 401
        assert (await client.get("/metrics", headers=basic("op"))).status == 403
        assert (await client.get("/metrics", headers=basic("aud"))).status == 403
        response = await client.get("/metrics", headers=basic("sup"))
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        families = parse(await response.text())
        assert value(families, "callcenter_preemptions_total") == 1
        assert value(families, "callcenter_active_calls") == 17
        assert value(families, "callcenter_queue_waiting", queue="hotline") == 3
        assert (await client.get("/metrics", headers=basic("admin"))).status == 200

    run_desk(FakeEngine(make_config()), test)


def test_metrics_route_without_an_acd_renders_empty_metrics() -> None:
    async def test(client: TestClient) -> None:
        response = await client.get("/metrics", headers=basic("admin"))
        assert response.status == 200
        families = parse(await response.text())
        assert list(families) == list(METRICS)
        assert value(families, "callcenter_preemptions_total") == 0
        assert families["callcenter_active_calls"]["samples"] == []

    run_desk(FakeEngine(make_config(), with_acd=False), test)
