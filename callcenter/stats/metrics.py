"""Prometheus metrics of the queues, in the text exposition format 0.0.4 (written here: no client library).

:class:`QueueMetrics` is an :class:`~callcenter.acd.events.EventSink` that counts the queue event log as it
happens; :meth:`QueueMetrics.render` writes those counters plus the live gauges the ACD reports
(``acd.live()``), for ``GET /metrics`` (:mod:`agents.metrics_route`). The live data has this shape (every part
optional)::

    {"queues": {"hotline": {"waiting": 3, "longest_wait": 12.5}},
     "operators": {"available": 2, "talking": 1, "paused": 0},
     "calls": 17}
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from callcenter.acd.events import QueueEvent

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
WAIT_BUCKETS: Final[tuple[float, ...]] = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300)

Labels = tuple[tuple[str, str], ...]


def escape_label(value: str) -> str:
    """A label value as the exposition format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text: backslash and newline escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value (or ``le`` bound): integers without a fraction, +Inf/-Inf/NaN spelled as Prometheus does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {format_value(value)}"
    body = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels)
    return f"{name}{{{body}}} {format_value(value)}"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Histogram:
    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)  # the first bound >= value (le is inclusive)
        if index < len(self.counts):
            self.counts[index] += 1
        self.count += 1
        self.sum += value

    def lines(self, name: str, labels: Labels) -> list[str]:
        out = []
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            out.append(_sample(f"{name}_bucket", (*labels, ("le", format_value(bound))), cumulative))
        out.append(_sample(f"{name}_bucket", (*labels, ("le", "+Inf")), self.count))
        out.append(_sample(f"{name}_sum", labels, self.sum))
        out.append(_sample(f"{name}_count", labels, self.count))
        return out


class QueueMetrics:
    """Counts queue events for Prometheus (an EventSink; call ``record`` on the event loop's thread)."""

    def __init__(self, wait_buckets: Iterable[float] = WAIT_BUCKETS) -> None:
        self.wait_buckets = tuple(wait_buckets)
        self.events: dict[Labels, int] = {}  # (queue, kind, priority) → count
        self.waits: dict[Labels, _Histogram] = {}  # (queue, priority) → connect waits
        self.preemptions = 0
        self.talk_seconds: dict[Labels, float] = {}  # (operator,) → seconds

    def record(self, event: QueueEvent) -> None:
        key: Labels = (("queue", event.queue), ("kind", event.kind), ("priority", event.priority))
        self.events[key] = self.events.get(key, 0) + 1
        if event.kind == "connect" and event.wait is not None and math.isfinite(event.wait):
            wait_key: Labels = (("queue", event.queue), ("priority", event.priority))
            histogram = self.waits.get(wait_key)
            if histogram is None:
                histogram = self.waits[wait_key] = _Histogram(self.wait_buckets)
            histogram.observe(event.wait)
        elif event.kind == "preempt":
            self.preemptions += 1
        elif event.kind == "complete" and event.operator and event.seconds is not None:
            talk_key: Labels = (("operator", event.operator),)
            self.talk_seconds[talk_key] = self.talk_seconds.get(talk_key, 0.0) + event.seconds

    def render(self, live: Mapping[str, Any] | None = None) -> str:
        """Every metric in the text exposition format 0.0.4 (one HELP and TYPE line per metric, samples in
        a stable order), with the live gauges from ``live`` (missing or malformed parts are left out)."""
        lines: list[str] = []
        lines += _family("callcenter_queue_events_total", "counter", "Queue events by queue, kind and priority.")
        lines += [_sample("callcenter_queue_events_total", k, v) for k, v in sorted(self.events.items())]
        lines += _family("callcenter_queue_wait_seconds", "histogram",
                         "Seconds a call waited in its queue until an operator answered.")
        for key in sorted(self.waits):
            lines += self.waits[key].lines("callcenter_queue_wait_seconds", key)
        lines += _family("callcenter_preemptions_total", "counter",
                         "Calls taken from an operator for an emergency (line seize).")
        lines.append(_sample("callcenter_preemptions_total", (), self.preemptions))
        lines += _family("callcenter_operator_talk_seconds_total", "counter",
                         "Seconds operators talked with queued callers.")
        lines += [_sample("callcenter_operator_talk_seconds_total", k, v)
                  for k, v in sorted(self.talk_seconds.items())]
        lines += _live_lines(live or {})
        return "\n".join(lines) + "\n"


def _live_lines(live: Mapping[str, Any]) -> list[str]:
    queues = live.get("queues")
    queues = queues if isinstance(queues, Mapping) else {}
    waiting: list[str] = []
    longest: list[str] = []
    for name in sorted(queues, key=str):
        data = queues[name]
        if not isinstance(data, Mapping):
            continue
        labels: Labels = (("queue", str(name)),)
        if (count := _number(data.get("waiting"))) is not None:
            waiting.append(_sample("callcenter_queue_waiting", labels, count))
        if (seconds := _number(data.get("longest_wait"))) is not None:
            longest.append(_sample("callcenter_queue_longest_wait_seconds", labels, seconds))
    operators = live.get("operators")
    operators = operators if isinstance(operators, Mapping) else {}
    states = [_sample("callcenter_operators", (("state", str(state)),), count)
              for state in sorted(operators, key=str) if (count := _number(operators[state])) is not None]
    calls = _number(live.get("calls"))
    return [
        *_family("callcenter_queue_waiting", "gauge", "Calls waiting in the queue now."), *waiting,
        *_family("callcenter_queue_longest_wait_seconds", "gauge",
                 "Seconds the longest-waiting call of the queue has waited so far."), *longest,
        *_family("callcenter_operators", "gauge", "Operators by state now."), *states,
        *_family("callcenter_active_calls", "gauge", "Calls in the engine now."),
        *([_sample("callcenter_active_calls", (), calls)] if calls is not None else []),
    ]
