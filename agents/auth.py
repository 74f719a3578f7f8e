"""Who may use the desktop: users with argon2id password hashes, login rate limiting, server-side sessions.

No HTTP here (that is :mod:`agents.web`) and no wall clock: time comes from an injected ``now()`` returning
seconds (``time.monotonic`` in production), so tests step through lockouts and expiry without sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

Role = Literal["operator", "supervisor", "auditor", "admin"]
ROLES: Final[frozenset[str]] = frozenset({"operator", "supervisor", "auditor", "admin"})

# Verified against when the username is unknown, so that a wrong username costs as long as a wrong password
# and response times do not tell which usernames exist. Same parameters as PasswordHasher() defaults.
_DUMMY_HASH: Final = "$argon2id$v=19$m=65536,t=3,p=4$8yTjfPLpG7WqNOQOHFKebQ$slU5OJgx56HNs/QhCgHpcKpyYgIrXKm5N4n1RFwYVJk"

MAX_USERNAME = 64
MAX_PASSWORD = 1024


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    display_name: str | None = None

    @property
    def label(self) -> str:
        return self.display_name or self.username


class UserDirectory:
    """The configured users. :meth:`verify` runs argon2 in a thread (it is slow on purpose), at most
    ``parallel`` at a time (each verification takes the hash's memory cost, 64 MiB by default)."""

    def __init__(
        self,
        users: Iterable[Any],
        *,
        parallel: int = 4,
        cache_seconds: float = 60.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users: dict[str, tuple[User, str]] = {}
        for u in users:
            self._users[u.username.casefold()] = (User(u.username, u.role, u.display_name), u.password_hash)
        self._hasher = PasswordHasher()
        self._parallel = parallel
        self._semaphore: asyncio.Semaphore | None = None
        self._now = now
        # Recently verified credentials (HTTP Basic sends them on every request): keyed by an HMAC of
        # username and password under a per-process key, so the table never holds a password.
        self._cache_key = secrets.token_bytes(32)
        self._cache_seconds = cache_seconds
        self._cache: OrderedDict[bytes, tuple[float, User]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def get(self, username: str) -> User | None:
        entry = self._users.get(username.casefold())
        return entry[0] if entry else None

    async def verify(self, username: str, password: str, *, cached: bool = False) -> User | None:
        """The user if ``password`` is theirs, else None (unknown user or wrong password: the same answer)."""
        if not username or len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            return None
        key = b""
        if cached:
            key = hmac.new(self._cache_key, f"{username.casefold()}\0{password}".encode(), hashlib.sha256).digest()
            hit = self._cache.get(key)
            if hit is not None and hit[0] > self._now():
                return hit[1]
        entry = self._users.get(username.casefold())
        stored = entry[1] if entry else _DUMMY_HASH
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._parallel)
        async with self._semaphore:
            ok = await asyncio.to_thread(self._check, stored, password)
        if not ok or entry is None:
            return None
        if cached:
            self._cache[key] = (self._now() + self._cache_seconds, entry[0])
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
        return entry[0]

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


class LoginLimiter:
    """Failed logins per key (``username|ip``, and ``*|ip`` for password spraying) in a sliding window.
    A key with ``limit`` failures inside ``window`` seconds is locked until the oldest of them leaves it."""

    def __init__(self, limit: int = 5, window: float = 300.0, *, now: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self._now = now
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def locked_for(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self._now())

    def failed(self, key: str) -> None:
        if key not in self._failures and len(self._failures) >= self._max_keys:
            self._prune()
        times = self._failures.setdefault(key, deque(maxlen=self.limit))
        times.append(self._now())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self._now() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _prune(self) -> None:
        for key in list(self._failures):
            self._recent(key)
        while len(self._failures) >= self._max_keys:  # still full of fresh failures: forget the oldest keys
            del self._failures[next(iter(self._failures))]


@dataclass(slots=True)
class Session:
    token: str = field(repr=False)
    user: User
    csrf_token: str = field(repr=False)
    created_at: float
    expires_at: float
    lang: str = "zh"


class SessionStore:
    """Server-side sessions in memory. The cookie carries a random 32-byte token; the table is keyed by its
    SHA-256, so neither a memory dump of the table nor a log line of a key yields a usable cookie."""

    def __init__(self, lifetime: float, *, now: Callable[[], float] = time.monotonic,
                 max_sessions: int = 10_000) -> None:
        self.lifetime = lifetime
        self._now = now
        self._max = max_sessions
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def create(self, user: User, lang: str = "zh") -> Session:
        now = self._now()
        self.purge()
        while len(self._sessions) >= self._max:
            self._sessions.popitem(last=False)
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self.lifetime,
            lang=lang,
        )
        self._sessions[self._key(session.token)] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 128:
            return None
        key = self._key(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at <= self._now():
            del self._sessions[key]
            return None
        return session

    def delete(self, token: str | None) -> None:
        if token:
            self._sessions.pop(self._key(token), None)

    def purge(self) -> None:
        now = self._now()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
