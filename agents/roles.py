"""Who may use which desktop route: handlers declare their roles with :func:`allow` or :func:`public`; a
route that declares nothing is refused to everybody (default deny, enforced by :mod:`agents.web`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.web_urldispatcher import StaticResource

from agents.auth import ROLES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC: Final[frozenset[str]] = frozenset({"<public>"})
STAFF: Final[tuple[str, ...]] = ("operator", "supervisor", "admin")  # may place and end calls
_ROLES_ATTR: Final = "callcenter_roles"


def allow(*roles: str) -> Callable[[Handler], Handler]:
    """Declare which roles may use a route handler."""
    unknown = set(roles) - ROLES
    if not roles or unknown:
        raise ValueError(f"allow() needs roles out of {sorted(ROLES)}, got {sorted(roles)}")

    def mark(handler: Handler) -> Handler:
        setattr(handler, _ROLES_ATTR, frozenset(roles))
        return handler

    return mark


def public(handler: Handler) -> Handler:
    """Declare a route that needs no login (only the login form)."""
    setattr(handler, _ROLES_ATTR, PUBLIC)
    return handler


def route_roles(route: web.AbstractRoute) -> frozenset[str] | None:
    """The roles a route allows, :data:`PUBLIC`, or None when it declares nothing (nobody may use it)."""
    if isinstance(route.resource, StaticResource):
        return PUBLIC
    roles = getattr(route.handler, _ROLES_ATTR, None)
    return roles if isinstance(roles, frozenset) else None
