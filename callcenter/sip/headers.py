"""Header names, multi-value splitting and the structured headers (Via, CSeq) of RFC 3261 §7.3, §20."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from callcenter.sip.errors import SipParseError
from callcenter.sip.uri import UriError, check_host, parse_header_params

COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "b": "Referred-By",  # RFC 3892
    "u": "Allow-Events",  # RFC 6665
    "x": "Session-Expires",  # RFC 4028
    "a": "Accept-Contact",  # RFC 3841
    "j": "Reject-Contact",  # RFC 3841
    "d": "Request-Disposition",  # RFC 3841
    "y": "Identity",  # RFC 8224
    "n": "Identity-Info",  # RFC 4474
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-ID", "Content-Language", "Content-Length",
        "Content-Type", "CSeq", "Date", "Diversion", "Error-Info", "Event", "Expires", "From",
        "History-Info", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires",
        "Min-SE", "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
        "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
        "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server", "Service-Route",
        "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported",
        "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
    )
}

# Exact spellings seen on the wire → canonical name: a dict hit avoids lower()/title-casing for the
# common cases (canonical, lower-case, upper-case and compact forms). Bounded: built once here.
_FAST: dict[str, str] = {}
for _canon in _CANONICAL.values():
    _FAST[_canon] = _FAST[_canon.lower()] = _FAST[_canon.upper()] = _canon
    _FAST[_canon.title()] = _canon
for _short, _canon in COMPACT_FORMS.items():
    _FAST[_short] = _FAST[_short.upper()] = _canon
del _short, _canon

# Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). Authorization-style headers,
# Date and the like contain commas inside a single value and must never be split.
MULTI_VALUE: frozenset[str] = frozenset(
    {
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Diversion",
        "Error-Info", "History-Info", "In-Reply-To", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Request-Disposition", "Require",
        "Route", "Service-Route", "Supported", "Unsupported", "Via", "Warning",
    }
)

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN_RE = re.compile(rf"[{_TOKEN_CHARS}]+")
_VIA_RE = re.compile(
    rf"[ \t]*([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)"
    r"[ \t]+(\[[^\]]*\]|[^;:\[\] \t]+)(?:[ \t]*:[ \t]*([^; \t]*))?[ \t]*(.*)",
    re.S,
)
_LWS_SPLIT_RE = re.compile(r"[ \t]+")


def canonical_name(name: str) -> str:
    """``call-id`` → ``Call-ID``, ``i`` → ``Call-ID``; unknown names are title-cased per word."""
    known = _FAST.get(name)
    if known is not None:
        return known
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    known = _CANONICAL.get(lower)
    if known is not None:
        return known
    return "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <URIs>.

    Elements are stripped; empty elements are kept (as ``""``) so callers can decide whether the
    header's grammar allows them.
    """
    if '"' not in value and "<" not in value:
        if "," not in value:
            return [value.strip()]
        return [part.strip() for part in value.split(",")]
    out: list[str] = []
    in_angle = False
    in_quote = False
    start = 0
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value[:80]!r}")
    out.append(value[start:].strip())
    return out


def parse_port(text: str, source: str) -> int:
    """A port: 1-5 ASCII digits, at most 65535 (``str.isdigit`` alone accepts ``'²'`` and ``'٣'``)."""
    if not text or len(text) > 5 or not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise SipParseError(f"bad port {text[:20]!r} in {source[:80]!r}")
    return int(text)


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Via:
        m = _VIA_RE.fullmatch(value)
        if not m:
            raise SipParseError(f"malformed Via {value[:80]!r}")
        proto, version, transport, host, port_text, rest = m.groups()
        if proto.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"unsupported protocol {proto}/{version} in Via")
        port = parse_port(port_text, value) if port_text is not None else None
        try:
            host = check_host(host, value)
        except UriError:
            raise SipParseError(f"bad host in Via {value[:80]!r}") from None
        params: dict[str, str | None] = {}
        if rest:
            if rest[0] != ";":
                raise SipParseError(f"junk after sent-by in Via {value[:80]!r}")
            try:
                params = parse_header_params(rest, value)
            except UriError as exc:
                raise SipParseError(f"malformed Via parameters: {exc.reason}") from None
        return cls(transport=transport.upper(), host=host.lower(), port=port, params=params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def bare_host(self) -> str:
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"SIP/2.0/{self.transport} {self.host}{port}{params}"


MAX_CSEQ = 2**31 - 1


@dataclass(slots=True, frozen=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = _LWS_SPLIT_RE.split(value.strip(" \t"))
        if len(parts) != 2 or not is_token(parts[1]):
            raise SipParseError(f"malformed CSeq {value[:80]!r}")
        digits = parts[0]
        # Length check first: int() of a 5000-digit string raises ValueError (CPython's digit limit).
        if not digits.isascii() or not digits.isdigit() or len(digits.lstrip("0")) > 10:
            raise SipParseError(f"malformed CSeq number {digits[:30]!r}")
        number = int(digits.lstrip("0") or "0")
        if number > MAX_CSEQ:
            raise SipParseError(f"CSeq number {digits} is larger than 2**31-1")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
