"""Digest authentication, server side (RFC 2617, RFC 3261 §22, RFC 7616 / RFC 8760).

:class:`DigestServer` issues stateless nonces (issue time + random salt + HMAC-SHA256 over both, keyed with
a server secret), so any nonce can be checked without having been stored. Only the highest nonce-count seen
per nonce is remembered, in a bounded LRU table, for replay protection. Sans-I/O: time comes in as ``now``.
Header parsing and the client side live in :mod:`callcenter.sip.digest`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callcenter.sip.digest import (
    _NC_RE,
    Challenge,
    Credentials,
    DigestError,
    _base_algorithm,
    _quote,
    _require_algorithm,
    compute_ha1,
    compute_response,
    normalize_algorithm,
    parse_credentials,
)

__all__ = ["AccountSecret", "AuthResult", "AuthStatus", "DigestServer"]


@dataclass(frozen=True, slots=True)
class AccountSecret:
    """What the server knows about an account: a plaintext password and/or precomputed HA1s.

    Precomputed HA1 values are ``H(username:realm:password)`` for this server's
    realm (see :func:`compute_ha1`).  An account holding only an MD5 HA1 cannot
    authenticate with SHA-256 and vice versa.
    """

    password: str | None = None
    ha1_md5: str | None = None
    ha1_sha256: str | None = None

    @classmethod
    def from_password(cls, password: str) -> AccountSecret:
        return cls(password=password)

    @classmethod
    def from_ha1(cls, *, md5: str | None = None, sha256: str | None = None) -> AccountSecret:
        return cls(ha1_md5=md5, ha1_sha256=sha256)

    def ha1_for(self, algorithm: str, username: str, realm: str) -> str | None:
        """HA1 for ``algorithm`` (base or -sess), or ``None`` if this account cannot provide it."""
        base = _base_algorithm(_require_algorithm(algorithm))
        stored = self.ha1_md5 if base == "MD5" else self.ha1_sha256
        if stored is not None:
            return stored.lower()
        if self.password is not None:
            return compute_ha1(username, realm, self.password, base)
        return None


class AuthStatus(enum.Enum):
    OK = "ok"
    #: Response was correct but the nonce has expired or its nonce count was
    #: already used: re-challenge with ``stale=True`` (the UA retries silently).
    STALE = "stale"
    #: Wrong password, unknown user, wrong realm, forged nonce, ...: re-challenge.
    FAILED = "failed"
    #: Structurally invalid credentials: answer 400.
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of :meth:`DigestServer.verify`; ``reason`` is for logs only, never for the wire."""

    status: AuthStatus
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_NONCE_RAW_LEN = 32  # 8 bytes issue time (ms) + 8 bytes salt + 16 bytes truncated HMAC
_SALT_LEN = 8
_MAC_LEN = 16
_DUMMY_HA1 = {"MD5": "0" * 32, "SHA-256": "0" * 64}


class DigestServer:
    """Verifies digest credentials for one realm using stateless, HMAC-signed nonces.

    ``secret`` keys the nonce HMAC; servers sharing it accept each other's nonces.
    ``nonce_lifetime`` is how long (seconds) a nonce stays valid.  Nonce-count
    replay state is kept for at most ``max_tracked_nonces`` nonces (LRU); when a
    still-valid nonce has to be evicted, every untracked nonce issued no later
    than it is answered STALE, so eviction can never re-enable a replay.
    ``allow_no_qop`` accepts RFC 2069 style answers (no qop, hence no replay
    protection within the nonce lifetime).  ``random_bytes`` supplies nonce salt.
    Not thread-safe; use from a single event loop.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        *,
        max_tracked_nonces: int = 10_000,
        allow_no_qop: bool = True,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if not nonce_lifetime > 0:
            raise ValueError("nonce_lifetime must be positive")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        _quote(realm, "realm")  # fail early on unserialisable realms
        self.realm = realm
        self.nonce_lifetime = float(nonce_lifetime)
        self.max_tracked_nonces = max_tracked_nonces
        self.allow_no_qop = allow_no_qop
        self._secret = bytes(secret)
        self._random_bytes = random_bytes
        self._realm_bytes = realm.encode("utf-8")
        # nonce -> (highest nc seen, issue time in ms); ordered least recently used first.
        self._nc_seen: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Untracked nonces issued at or before this time (ms) may have lost their state.
        self._evicted_watermark_ms = -1

    # ----------------------------------------------------------------- nonces

    def _mac(self, stamp_and_salt: bytes) -> bytes:
        msg = b"sip-digest-nonce\x00" + self._realm_bytes + b"\x00" + stamp_and_salt
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_LEN]

    def make_nonce(self, now: float) -> str:
        """A fresh nonce carrying ``now``; verifiable later without any stored state."""
        if not math.isfinite(now) or now < 0:
            raise ValueError(f"now must be a finite non-negative time, got {now!r}")
        salt = self._random_bytes(_SALT_LEN)
        if len(salt) != _SALT_LEN:
            raise ValueError("random_bytes returned the wrong number of bytes")
        head = struct.pack(">Q", int(now * 1000)) + salt
        return base64.urlsafe_b64encode(head + self._mac(head)).rstrip(b"=").decode("ascii")

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """Issue time (ms) of a nonce this server signed, or ``None`` if it is not genuine."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce + "=")
        if len(raw) != _NONCE_RAW_LEN:
            return None
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != nonce:
            return None  # non-canonical encoding
        head, mac = raw[: 8 + _SALT_LEN], raw[8 + _SALT_LEN :]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        return int(struct.unpack(">Q", head[:8])[0])

    def challenge(self, now: float, stale: bool = False, algorithm: str = "MD5") -> Challenge:
        """A challenge with a fresh nonce, offering qop=auth."""
        return Challenge(
            realm=self.realm,
            nonce=self.make_nonce(now),
            algorithm=_require_algorithm(algorithm),
            qop=("auth",),
            stale=stale,
        )

    def challenges(
        self, now: float, stale: bool = False, algorithms: Sequence[str] = ("SHA-256", "MD5")
    ) -> list[Challenge]:
        """One challenge per algorithm, in the order given (RFC 8760 §2.4: most preferred first),
        each with its own nonce.

        Send one ``WWW-Authenticate`` / ``Proxy-Authenticate`` header per challenge, in this order.
        """
        return [self.challenge(now, stale=stale, algorithm=name) for name in algorithms]

    # ----------------------------------------------------------------- verification

    def verify_header(
        self,
        value: str,
        method: str,
        now: float,
        lookup: Callable[[str], AccountSecret | None],
        *,
        body: bytes = b"",
    ) -> AuthResult:
        """Parse an Authorization / Proxy-Authorization value and :meth:`verify` it."""
        try:
            credentials = parse_credentials(value)
        except DigestError as exc:
            return AuthResult(AuthStatus.MALFORMED, reason=str(exc))
        return self.verify(credentials, method, now, lookup, body=body)

    def verify(
        self,
        credentials: Credentials,
        method: str,
        now: float,
        lookup: Callable[[str], AccountSecret | None],
        *,
        body: bytes = b"",
    ) -> AuthResult:
        """Check ``credentials`` for a request with ``method`` (and ``body`` for qop=auth-int).

        ``lookup(username)`` returns the account's secret or ``None``.  Checking
        that ``credentials.uri`` matches the Request-URI is left to the caller.
        The digest is checked before expiry and replay, so STALE is only ever
        returned to a client that knows the password (RFC 7616 §3.3).
        """
        # --- structure
        algorithm = normalize_algorithm(credentials.algorithm)
        if algorithm is None:
            return AuthResult(AuthStatus.FAILED, reason=f"unsupported algorithm {credentials.algorithm!r}")
        qop = credentials.qop
        nc_value: int | None = None
        if qop is not None:
            if qop.lower() not in ("auth", "auth-int"):
                return AuthResult(AuthStatus.MALFORMED, reason=f"unsupported qop {qop!r}")
            if credentials.cnonce is None or credentials.nc is None:
                return AuthResult(AuthStatus.MALFORMED, reason="qop without nc/cnonce")
            if not _NC_RE.fullmatch(credentials.nc):
                return AuthResult(AuthStatus.MALFORMED, reason=f"bad nc {credentials.nc!r}")
            nc_value = int(credentials.nc, 16)
            if nc_value == 0:
                return AuthResult(AuthStatus.MALFORMED, reason="nc must start at 1")
        else:
            if not self.allow_no_qop:
                return AuthResult(AuthStatus.FAILED, reason="qop required")
            if algorithm.endswith("-sess"):
                return AuthResult(AuthStatus.MALFORMED, reason=f"{algorithm} without qop")

        # --- realm and nonce authenticity
        if credentials.realm != self.realm:
            return AuthResult(AuthStatus.FAILED, reason=f"wrong realm {credentials.realm!r}")
        issued_ms = self._nonce_issued_ms(credentials.nonce)
        if issued_ms is None:
            return AuthResult(AuthStatus.FAILED, reason="nonce not issued by this server")

        # --- the digest itself (dummy work for unknown users to keep timing uniform)
        account = lookup(credentials.username)
        ha1 = None if account is None else account.ha1_for(algorithm, credentials.username, self.realm)
        expected = compute_response(
            algorithm=algorithm,
            ha1=ha1 if ha1 is not None else _DUMMY_HA1[_base_algorithm(algorithm)],
            nonce=credentials.nonce,
            method=method,
            uri=credentials.uri,
            qop=qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            body=body,
        )
        matches = hmac.compare_digest(expected.encode("ascii"), credentials.response.lower().encode("utf-8"))
        if account is None:
            return AuthResult(AuthStatus.FAILED, reason="unknown user")
        if ha1 is None:
            return AuthResult(AuthStatus.FAILED, reason=f"no {algorithm} secret for user")
        if not matches:
            return AuthResult(AuthStatus.FAILED, reason="wrong response")

        # --- freshness and replay
        age = now - issued_ms / 1000.0
        if age > self.nonce_lifetime or age < -self.nonce_lifetime:
            return AuthResult(AuthStatus.STALE, reason="nonce expired")
        if nc_value is not None:
            replay = self._record_nc(credentials.nonce, nc_value, issued_ms, now)
            if replay is not None:
                return AuthResult(AuthStatus.STALE, reason=replay)
        return AuthResult(AuthStatus.OK, username=credentials.username)

    def _record_nc(self, nonce: str, nc_value: int, issued_ms: int, now: float) -> str | None:
        """Record ``nc_value`` for ``nonce``; return a reason string if it is a replay."""
        table = self._nc_seen
        entry = table.get(nonce)
        if entry is not None:
            if nc_value <= entry[0]:
                table.move_to_end(nonce)
                return f"nonce count {nc_value} not above {entry[0]} (replay)"
        elif issued_ms <= self._evicted_watermark_ms:
            return "nonce-count state was evicted"
        table[nonce] = (nc_value, issued_ms)
        table.move_to_end(nonce)
        self._prune(now)
        return None

    def _prune(self, now: float) -> None:
        table = self._nc_seen
        expired_before_ms = (now - self.nonce_lifetime) * 1000.0
        while table:
            nonce, (_, issued_ms) = next(iter(table.items()))
            if issued_ms >= expired_before_ms and len(table) <= self.max_tracked_nonces:
                break
            del table[nonce]
            if issued_ms >= expired_before_ms:  # still valid: remember that its state is gone
                self._evicted_watermark_ms = max(self._evicted_watermark_ms, issued_ms)

    @property
    def tracked_nonces(self) -> int:
        """Number of nonces whose nonce count is currently remembered."""
        return len(self._nc_seen)


