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
    :class:`~callcenter.sip.digest_server.DigestServer` (in its own module).

Client side
    :func:`pick_challenge` chooses among the challenges of a 401/407 (SHA-256
    before MD5), :func:`answer_challenge` builds the credentials.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestError",
    "answer_challenge",
    "authorization_for",
    "challenge_header",
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
