"""``GET /metrics``: the queue metrics for Prometheus (text exposition format 0.0.4).

Supervisors and admins only; Prometheus scrapes with HTTP Basic (``basic_auth`` in its scrape config: it sends
the credentials without waiting for a challenge), a browser with its session. The engine's ``acd_metrics`` (a
:class:`~callcenter.stats.metrics.QueueMetrics`) gives the counters and ``acd.live()`` the live gauges; when the
engine has neither (no ACD yet), the metrics are rendered empty rather than refused."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import hdrs, web

from agents.credentials import METRICS_PATH
from agents.desk import DESK
from agents.roles import allow
from callcenter.stats.metrics import CONTENT_TYPE, QueueMetrics

log = structlog.get_logger("agents.web")  # one logger name for the whole desktop


def _live(engine: Any) -> dict[str, Any]:
    acd = getattr(engine, "acd", None)
    live = getattr(acd, "live", None)
    if live is None:
        return {}
    data = live()
    return data if isinstance(data, dict) else {}


@allow("supervisor", "admin")
async def metrics(request: web.Request) -> web.StreamResponse:
    engine = request.app[DESK].engine
    sink = getattr(engine, "acd_metrics", None)
    if sink is None:
        sink = QueueMetrics()
    text = sink.render(_live(engine))
    return web.Response(body=text.encode("utf-8"), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


def register(app: web.Application) -> None:
    """Add ``GET /metrics`` (and HEAD) to the desktop application."""
    app.router.add_get(METRICS_PATH, metrics)
