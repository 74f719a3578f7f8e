"""Header names, multi-value splitting and the structured headers (Via, CSeq) of RFC 3261 §7.3, §20."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from callcenter.sip.errors import SipParseError
from callcenter.sip.uri import UriError, parse_header_params

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
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
        "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
        "Error-Info", "Event", "Expires", "From", "In-Reply-To", "Max-Forwards", "Min-Expires",
        "Min-SE", "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity",
        "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
        "Reason", "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After",
        "Route", "RSeq", "Server", "Session-Expires", "Subject", "Subscription-State", "Supported",
        "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
    )
}

# Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). Authorization-style headers,
# Date and the like contain commas inside a single value and must never be split.
MULTI_VALUE: frozenset[str] = frozenset(
    {
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To",
        "Proxy-Require", "Record-Route", "Require", "Route", "Supported", "Unsupported", "Via",
        "Warning", "P-Asserted-Identity", "Reason",
    }
)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def canonical_name(name: str) -> str:
    """``call-id`` → ``Call-ID``, ``i`` → ``Call-ID``; unknown names are title-cased per word."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    known = _CANONICAL.get(lower)
    if known is not None:
        return known
    return "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))


def is_token(text: str) -> bool:
    return bool(_TOKEN_RE.match(text))


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <URIs>."""
    out: list[str] = []
    depth_angle = False
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
            depth_angle = True
        elif ch == ">":
            depth_angle = False
        elif ch == "," and not depth_angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value!r}")
    out.append(value[start:].strip())
    return out


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Via:
        m = re.match(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;\s]+)\s*(.*)$", value, re.S)
        if not m:
            raise SipParseError(f"malformed Via {value!r}")
        transport, hostport, rest = m.group(1).upper(), m.group(2), m.group(3)
        port: int | None = None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise SipParseError(f"malformed Via host {hostport!r}")
            host, tail = hostport[: end + 1], hostport[end + 1 :]
        else:
            host, _, tail = hostport.partition(":")
            tail = ":" + tail if _ else ""
        if tail:
            if not tail.startswith(":") or not tail[1:].isdigit() or int(tail[1:]) > 65535:
                raise SipParseError(f"bad port in Via {value!r}")
            port = int(tail[1:])
        if not host or not re.match(r"^[A-Za-z0-9\-.\[\]:]+$", host):
            raise SipParseError(f"bad host in Via {value!r}")
        try:
            params = parse_header_params(rest, value) if rest.strip() else {}
        except UriError as exc:
            raise SipParseError(f"malformed Via parameters: {exc.reason}") from None
        return cls(transport=transport, host=host.lower(), port=port, params=params)

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
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
            raise SipParseError(f"malformed CSeq {value!r}")
        number = int(parts[0])
        if number > MAX_CSEQ:
            raise SipParseError(f"CSeq number {parts[0]} is larger than 2**31-1")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
