"""What the desktop's handlers share: the per-application :class:`Desk` and the per-request
:class:`Identity` that the auth middleware in :mod:`agents.web` leaves for the handler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import jinja2
from aiohttp import web

from agents.auth import LoginLimiter, Session, SessionStore, User, UserDirectory
from callcenter.config import Config


@dataclass
class Desk:
    """What the handlers share; one per application."""

    engine: Any
    config: Config
    users: UserDirectory
    sessions: SessionStore
    limiter: LoginLimiter
    ip_limiter: LoginLimiter
    templates: jinja2.Environment
    session_cookie: str
    login_cookie: str

    def cookie_options(self) -> dict[str, Any]:
        return {"httponly": True, "samesite": "Strict", "secure": self.config.http.secure_cookies, "path": "/"}

    def clear_cookie(self, response: web.StreamResponse, name: str) -> None:
        """Expire a cookie with the attributes it was set with (a __Host- cookie without Secure is ignored)."""
        response.set_cookie(name, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", **self.cookie_options())


@dataclass(frozen=True, slots=True)
class Identity:
    user: User
    session: Session | None  # None when the request authenticated with HTTP Basic


DESK: Final = web.AppKey("desk", Desk)
# Where the middleware leaves the caller's identity for the handler (web.RequestKey from aiohttp 3.13 on).
IDENTITY: Final[Any] = web.RequestKey("identity", Identity) if hasattr(web, "RequestKey") else "callcenter.identity"


def identity_of(request: web.Request) -> Identity:
    """Who is asking; set for every route that is not public."""
    identity: Identity = request[IDENTITY]
    return identity
