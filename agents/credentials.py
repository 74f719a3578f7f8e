"""Who is asking: the session cookie, or HTTP Basic on ``/api/*`` and ``/metrics`` (with the same login lockouts
as the form). Also the one log line for a refused request."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Final

import structlog
from aiohttp import hdrs, web

from agents.api import ApiError, is_api
from agents.auth import User
from agents.desk import Desk, Identity

log = structlog.get_logger("agents.web")  # one logger name for the whole desktop

METRICS_PATH: Final = "/metrics"  # Prometheus scrapes it with HTTP Basic


def accepts_basic(request: web.Request) -> bool:
    """Where scripts may authenticate with HTTP Basic: the API and the Prometheus metrics."""
    return is_api(request) or request.path == METRICS_PATH


async def identify(request: web.Request, desk: Desk) -> Identity | None:
    """The identity a request proves, or None when it proves none (no or an expired session cookie). On
    ``/metrics`` (a scraper, not a page) proving none is a 401 rather than a redirect to the login form."""
    if accepts_basic(request) and request.headers.get(hdrs.AUTHORIZATION, "").lower().startswith("basic "):
        return await _basic_identity(request, desk)
    session = desk.sessions.get(request.cookies.get(desk.session_cookie))
    if session is None and request.path == METRICS_PATH:
        log_denied(request, "anonymous", None)
        raise ApiError(401, "log in first (HTTP Basic or session cookie)")
    return Identity(session.user, session) if session is not None else None


async def _basic_identity(request: web.Request, desk: Desk) -> Identity:
    """HTTP Basic on the API and /metrics. We never answer with a Basic challenge, so browsers never prompt for
    (and never remember and replay) Basic credentials; only scripts send them, which is why they need no CSRF
    token."""
    ip = request.remote or "-"
    credentials = _decode_basic(request.headers[hdrs.AUTHORIZATION])
    if credentials is None:
        log_denied(request, "malformed_basic", None)
        raise ApiError(401, "malformed Authorization header")
    login, password = credentials
    username = login[:64]
    keys = (f"{username.casefold()}|{ip}", f"*|{ip}")
    wait = max(desk.limiter.locked_for(keys[0]), desk.ip_limiter.locked_for(keys[1]))
    if wait > 0:
        log.warning("http.login.failed", username=username, ip=ip, reason="locked", via="basic")
        raise ApiError(429, "too many failed logins; try again later", headers={"Retry-After": str(math.ceil(wait))})
    user = await desk.users.verify(login, password, cached=True)
    if user is None:
        desk.limiter.failed(keys[0])
        desk.ip_limiter.failed(keys[1])
        log.warning("http.login.failed", username=username, ip=ip, reason="bad_credentials", via="basic")
        raise ApiError(401, "wrong username or password")
    desk.limiter.succeeded(keys[0])
    return Identity(user, None)


def _decode_basic(header: str) -> tuple[str, str] | None:
    scheme, _, data = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(data.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    login, sep, password = text.partition(":")
    return (login, password) if sep else None


def log_denied(request: web.Request, reason: str, user: User | None) -> None:
    log.info(
        "http.request.denied",
        method=request.method,
        path=request.path,
        ip=request.remote,
        username=user.username if user else None,
        role=user.role if user else None,
        reason=reason,
    )
