"""SIP digest authentication (RFC 2617, RFC 3261 §22, RFC 7616 / RFC 8760 for SHA-256).

Sans-I/O: nothing here touches sockets or reads the clock.  Every function that
needs the current time takes it as a ``now`` float (seconds; use the same clock —
normally ``time.time()`` — for issuing and verifying, since nonces carry the
issue time and are meant to survive process restarts).

Header values
    :func:`parse_challenge` / :meth:`Challenge.to_header` handle
    ``WWW-Authenticate`` / ``Proxy-Authenticate`` values, :func:`parse_credentials`
    / :meth:`Credentials.to_header` handle ``Authorization`` /
    ``Proxy-Authorization`` values.  Malformed input raises :class:`DigestError`
    (a :class:`ValueError`) and nothing else.

Server side
    :class:`DigestServer` issues stateless nonces (issue time + random salt +
    HMAC-SHA256 over both, keyed with a server secret), so any nonce can be
    checked without having been stored.  Only the highest nonce-count seen per
    nonce is remembered, in a bounded LRU table, for replay protection.

Client side
    :func:`pick_challenge` chooses among the challenges of a 401/407 (SHA-256
    before MD5), :func:`answer_challenge` builds the credentials.
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ALGORITHMS",
    "AccountSecret",
    "AuthResult",
    "AuthStatus",
    "Challenge",
    "Credentials",
    "DigestError",
    "DigestServer",
    "answer_challenge",
    "compute_ha1",
    "compute_response",
    "normalize_algorithm",
    "parse_challenge",
    "parse_credentials",
    "pick_challenge",
]


class DigestError(ValueError):
    """A digest header value or parameter is malformed or unsupported."""


# --------------------------------------------------------------------------- algorithms

#: Supported algorithm names in their canonical spelling, most preferred first.
ALGORITHMS: tuple[str, ...] = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_CANONICAL = {name.upper(): name for name in ALGORITHMS}
_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256"}


def normalize_algorithm(name: str) -> str | None:
    """Return the canonical spelling of a supported algorithm (case-insensitive), else ``None``."""
    return _CANONICAL.get(name.strip().upper())


def _require_algorithm(name: str) -> str:
    canonical = normalize_algorithm(name)
    if canonical is None:
        raise DigestError(f"unsupported digest algorithm {name!r}")
    return canonical


def _base_algorithm(canonical: str) -> str:
    return canonical[:-5] if canonical.endswith("-sess") else canonical


def _hex(base: str, data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.new(_HASHLIB_NAMES[base], data).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username ":" realm ":" password)`` — the value to store instead of a plaintext password.

    For ``-sess`` algorithms this returns the same value as for the base algorithm;
    the per-session step is applied by :func:`compute_response`.
    """
    base = _base_algorithm(_require_algorithm(algorithm))
    return _hex(base, f"{username}:{realm}:{password}")


def compute_response(
    *,
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (request-digest) for the given inputs.

    ``ha1`` is the plain ``H(username:realm:password)`` from :func:`compute_ha1`
    even for ``-sess`` algorithms.  ``qop`` is ``None`` (RFC 2069 compatibility),
    ``"auth"`` or ``"auth-int"`` (``body`` is then the message body); ``nc`` is the
    8-hex-digit nonce count exactly as sent on the wire.
    """
    canonical = _require_algorithm(algorithm)
    base = _base_algorithm(canonical)
    ha1 = ha1.lower()
    if canonical.endswith("-sess"):
        if cnonce is None:
            raise DigestError(f"algorithm {canonical} requires a cnonce")
        ha1 = _hex(base, f"{ha1}:{nonce}:{cnonce}")
    if qop is None:
        return _hex(base, f"{ha1}:{nonce}:{_hex(base, f'{method}:{uri}')}")
    kind = qop.lower()
    if kind == "auth":
        ha2 = _hex(base, f"{method}:{uri}")
    elif kind == "auth-int":
        ha2 = _hex(base, f"{method}:{uri}:{_hex(base, body)}")
    else:
        raise DigestError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise DigestError(f"qop={qop} requires nc and cnonce")
    return _hex(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------- header syntax

# RFC 3261 §25.1 token characters.
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
# Unquoted parameter values are accepted a little more liberally than ``token``
# (some UAs send e.g. ``uri=sip:x@y`` unquoted): any visible ASCII except these.
_UNQUOTED_EXCLUDED = frozenset('",\\')
_WS = " \t"
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")


def _is_ctl(ch: str) -> bool:
    code = ord(ch)
    return (code < 0x20 and ch != "\t") or code == 0x7F


def _parse_digest_params(value: str, what: str) -> dict[str, str]:
    """Parse ``Digest name=value, name="quoted", ...`` into a dict with lower-cased names."""
    if not isinstance(value, str):
        raise DigestError(f"{what} must be a str, not {type(value).__name__}")
    text = _FOLD_RE.sub(" ", value)
    end = len(text)
    pos = 0

    def skip_ws(p: int) -> int:
        while p < end and text[p] in _WS:
            p += 1
        return p

    def read_token(p: int) -> int:
        while p < end and text[p] in _TOKEN_CHARS:
            p += 1
        return p

    pos = skip_ws(pos)
    stop = read_token(pos)
    scheme = text[pos:stop]
    if not scheme:
        raise DigestError(f"{what}: missing authentication scheme")
    if scheme.lower() != "digest":
        raise DigestError(f"{what}: unsupported authentication scheme {scheme!r} (expected Digest)")
    pos = stop
    if pos < end and text[pos] not in _WS:
        raise DigestError(f"{what}: unexpected character {text[pos]!r} after scheme")

    params: dict[str, str] = {}
    while True:
        pos = skip_ws(pos)
        if pos >= end:
            break
        if text[pos] == ",":  # empty list elements are allowed (RFC 7230 §7)
            pos += 1
            continue
        stop = read_token(pos)
        name = text[pos:stop]
        if not name:
            raise DigestError(f"{what}: expected a parameter name at offset {pos}, found {text[pos]!r}")
        pos = skip_ws(stop)
        if pos >= end or text[pos] != "=":
            raise DigestError(f"{what}: expected '=' after parameter {name!r}")
        pos = skip_ws(pos + 1)
        if pos < end and text[pos] == '"':
            pos, param_value = _read_quoted(text, pos, what, name)
        else:
            start = pos
            while pos < end:
                ch = text[pos]
                if ch in _UNQUOTED_EXCLUDED or not ("!" <= ch <= "~"):
                    break
                pos += 1
            param_value = text[start:pos]
            if not param_value:
                found = repr(text[pos]) if pos < end else "end of value"
                raise DigestError(f"{what}: missing value for parameter {name!r} (found {found})")
        key = name.lower()
        if key in params:
            raise DigestError(f"{what}: duplicate parameter {name!r}")
        params[key] = param_value
        pos = skip_ws(pos)
        if pos < end and text[pos] != ",":
            raise DigestError(f"{what}: expected ',' after parameter {name!r}, found {text[pos]!r}")
    if not params:
        raise DigestError(f"{what}: no parameters after Digest")
    return params


def _read_quoted(text: str, pos: int, what: str, name: str) -> tuple[int, str]:
    """Read a quoted-string starting at the opening quote; return (offset after it, unescaped text)."""
    out: list[str] = []
    pos += 1
    end = len(text)
    while pos < end:
        ch = text[pos]
        if ch == '"':
            return pos + 1, "".join(out)
        if ch == "\\":
            pos += 1
            if pos >= end:
                break
            ch = text[pos]
        if _is_ctl(ch):
            raise DigestError(f"{what}: control character {ch!r} in quoted value of {name!r}")
        out.append(ch)
        pos += 1
    raise DigestError(f"{what}: unterminated quoted string for parameter {name!r}")


def _quote(value: str, name: str) -> str:
    for ch in value:
        if _is_ctl(ch):
            raise DigestError(f"cannot serialise control character {ch!r} in {name}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(value: str, name: str) -> str:
    if not value or any(ch not in _TOKEN_CHARS for ch in value):
        raise DigestError(f"{name} must be a non-empty token, got {value!r}")
    return value


def _required(params: dict[str, str], name: str, what: str) -> str:
    try:
        return params[name]
    except KeyError:
        raise DigestError(f"{what}: missing required parameter {name!r}") from None


# --------------------------------------------------------------------------- challenge / credentials


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge (``WWW-Authenticate`` / ``Proxy-Authenticate`` value).

    ``algorithm`` is the canonical name when supported, otherwise the value as
    received (so :func:`pick_challenge` can skip it).  ``qop`` holds the offered
    quality-of-protection options, lower-cased; empty means none offered.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    @property
    def supported(self) -> bool:
        """Whether this client can answer the challenge (known algorithm and acceptable qop)."""
        if normalize_algorithm(self.algorithm) is None:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop

    def to_header(self) -> str:
        parts = [
            f"realm={_quote(self.realm, 'realm')}",
            f"nonce={_quote(self.nonce, 'nonce')}",
            f"algorithm={_token(self.algorithm, 'algorithm')}",
        ]
        if self.qop:
            for option in self.qop:
                _token(option, "qop option")
            parts.append(f"qop={_quote(','.join(self.qop), 'qop')}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque, 'opaque')}")
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain, 'domain')}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value.

    Unknown parameters are ignored (RFC 2617 §3.2.1).  Raises :class:`DigestError`.
    """
    what = "challenge"
    params = _parse_digest_params(value, what)
    algorithm_raw = params.get("algorithm", "MD5")
    qop_raw = params.get("qop")
    qop: tuple[str, ...] = ()
    if qop_raw is not None:
        qop = tuple(opt.strip().lower() for opt in qop_raw.split(",") if opt.strip())
    return Challenge(
        realm=_required(params, "realm", what),
        nonce=_required(params, "nonce", what),
        algorithm=normalize_algorithm(algorithm_raw) or algorithm_raw,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        domain=params.get("domain"),
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials (``Authorization`` / ``Proxy-Authorization`` value).

    ``qop`` and ``nc`` are kept exactly as received because the response hash is
    computed over the literal strings; ``nc`` is 8 hex digits.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    qop: str | None = None
    nc: str | None = None
    opaque: str | None = None

    @property
    def nc_value(self) -> int | None:
        """The nonce count as an integer (``None`` without qop)."""
        return None if self.nc is None else int(self.nc, 16)

    def to_header(self) -> str:
        parts = [
            f"username={_quote(self.username, 'username')}",
            f"realm={_quote(self.realm, 'realm')}",
            f"nonce={_quote(self.nonce, 'nonce')}",
            f"uri={_quote(self.uri, 'uri')}",
            f"response={_quote(self.response, 'response')}",
            f"algorithm={_token(self.algorithm, 'algorithm')}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce, 'cnonce')}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque, 'opaque')}")
        if self.qop is not None:
            parts.append(f"qop={_token(self.qop, 'qop')}")
        if self.nc is not None:
            if not _NC_RE.fullmatch(self.nc):
                raise DigestError(f"nc must be 8 hex digits, got {self.nc!r}")
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` header value.

    Requires username, realm, nonce, uri and response; when qop is present, nc
    (8 hex digits) and cnonce are required too.  Raises :class:`DigestError`.
    """
    what = "credentials"
    params = _parse_digest_params(value, what)
    algorithm_raw = params.get("algorithm", "MD5")
    qop = params.get("qop")
    nc = params.get("nc")
    cnonce = params.get("cnonce")
    if nc is not None and not _NC_RE.fullmatch(nc):
        raise DigestError(f"{what}: nc must be 8 hex digits, got {nc!r}")
    if qop is not None:
        if not qop or any(ch not in _TOKEN_CHARS for ch in qop):
            raise DigestError(f"{what}: qop must be a single token, got {qop!r}")
        if nc is None or cnonce is None:
            raise DigestError(f"{what}: qop={qop} requires both nc and cnonce")
    return Credentials(
        username=_required(params, "username", what),
        realm=_required(params, "realm", what),
        nonce=_required(params, "nonce", what),
        uri=_required(params, "uri", what),
        response=_required(params, "response", what),
        algorithm=normalize_algorithm(algorithm_raw) or algorithm_raw,
        cnonce=cnonce,
        qop=qop,
        nc=nc,
        opaque=params.get("opaque"),
    )


# --------------------------------------------------------------------------- client side


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge:
    """Choose the challenge to answer: SHA-256 before MD5, unsupported ones ignored.

    Among challenges with equally preferred algorithms the first one wins.
    Raises :class:`DigestError` if none can be answered.
    """
    best: Challenge | None = None
    best_rank = len(ALGORITHMS)
    for challenge in challenges:
        if not challenge.supported:
            continue
        rank = ALGORITHMS.index(normalize_algorithm(challenge.algorithm) or "")
        if rank < best_rank:
            best, best_rank = challenge, rank
    if best is None:
        raise DigestError("no supported digest challenge offered")
    return best


def answer_challenge(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> Credentials:
    """Build credentials answering ``challenge`` (for a 401/407 to REGISTER, INVITE, ...).

    ``uri`` is the Request-URI of the request being authenticated, ``cnonce`` a
    fresh client nonce (injected so tests are deterministic), ``nc`` how many
    times this nonce has now been used.  qop=auth is chosen when offered,
    auth-int (over ``body``) only when it is the sole known option, and no qop
    (RFC 2069) when the challenge offers none.
    """
    algorithm = _require_algorithm(challenge.algorithm)
    if not challenge.qop:
        qop: str | None = None
    elif "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    else:
        raise DigestError(f"no supported qop among {', '.join(challenge.qop)}")
    if qop is None and algorithm.endswith("-sess"):
        raise DigestError(f"algorithm {algorithm} requires qop, but the challenge offers none")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise DigestError(f"nc must be in 1..0xFFFFFFFF, got {nc}")
    nc_str = f"{nc:08x}" if qop is not None else None
    cnonce_sent = cnonce if qop is not None else None
    ha1 = compute_ha1(username, challenge.realm, password, algorithm)
    response = compute_response(
        algorithm=algorithm,
        ha1=ha1,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_str,
        cnonce=cnonce_sent,
        body=body,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        cnonce=cnonce_sent,
        qop=qop,
        nc=nc_str,
        opaque=challenge.opaque,
    )


# --------------------------------------------------------------------------- server side


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


def authorization_for(
    status: int,
    challenge_values: Iterable[str],
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    body: bytes = b"",
) -> tuple[str, str]:
    """Answer a 401 (``WWW-Authenticate`` values) or 407 (``Proxy-Authenticate`` values).

    Returns the header to add to the retried request: ``("Authorization" | "Proxy-Authorization", value)``.
    Raises :class:`DigestError` when no offered challenge can be answered.
    """
    challenge = pick_challenge(parse_challenge(v) for v in challenge_values)
    credentials = answer_challenge(
        challenge, method=method, uri=uri, username=username, password=password, cnonce=cnonce, body=body
    )
    return ("Authorization" if status == 401 else "Proxy-Authorization", credentials.to_header())


def challenge_header(status: int) -> str:
    """Where a 401 or 407 carries its challenges."""
    return "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
