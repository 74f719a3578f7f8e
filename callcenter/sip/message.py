"""SIP messages: parse and serialise requests and responses (RFC 3261 §7, §18.3, §20, §25).

Sans-I/O: ``parse_message(bytes) -> Request | Response`` or :class:`SipParseError`;
``bytes(message)`` serialises with canonical header names and an exact Content-Length.
:class:`StreamFramer` cuts a TCP byte stream into messages by Content-Length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from callcenter.sip.errors import SipParseError
from callcenter.sip.headers import MULTI_VALUE, CSeq, Via, canonical_name, is_token, split_values
from callcenter.sip.uri import NameAddr, Uri, UriError, parse_name_addr, parse_uri

DEFAULT_MAX_SIZE = 65535
DEFAULT_MAX_HEADERS = 256

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_METHOD_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
# Single-valued headers that must hold a 32-bit unsigned integer (RFC 3261 §20).
_SCALARS = {"Content-Length": 2**32 - 1, "Max-Forwards": 255, "Expires": 2**32 - 1, "Min-Expires": 2**32 - 1}


class Headers:
    """An ordered, case-insensitive multi-map of header fields with canonical names."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(k), v) for k, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        cname = canonical_name(name)
        return any(k == cname for k, _ in self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        cname = canonical_name(name)
        for k, v in self._items:
            if k == cname:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of a header; list-valued headers are split at commas (RFC 3261 §7.3.1)."""
        cname = canonical_name(name)
        values = [v for k, v in self._items if k == cname]
        if cname in MULTI_VALUE:
            return [part for v in values for part in split_values(v) if part]
        return values

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one value, keeping the position of the first."""
        cname = canonical_name(name)
        for i, (k, _) in enumerate(self._items):
            if k == cname:
                self._items[i] = (cname, value)
                self._items = [kv for j, kv in enumerate(self._items) if j <= i or kv[0] != cname]
                return
        self._items.append((cname, value))

    def remove(self, name: str) -> None:
        cname = canonical_name(name)
        self._items = [kv for kv in self._items if kv[0] != cname]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h


@dataclass(eq=False)
class Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # Structured views of the common headers, parsed on first use.
    @cached_property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via header")
        return vias[0]

    @cached_property
    def from_(self) -> NameAddr:
        return _name_addr_header(self.headers, "From")

    @cached_property
    def to(self) -> NameAddr:
        return _name_addr_header(self.headers, "To")

    @cached_property
    def cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq header")
        return CSeq.parse(value)

    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if value is None:
            raise SipParseError("missing Call-ID header")
        return value

    @cached_property
    def contacts(self) -> list[NameAddr]:
        try:
            return [parse_name_addr(v) for v in self.headers.get_all("Contact")]
        except UriError as exc:
            raise SipParseError(f"bad Contact: {exc.reason}") from None

    def name_addrs(self, name: str) -> list[NameAddr]:
        try:
            return [parse_name_addr(v) for v in self.headers.get_all(name)]
        except UriError as exc:
            raise SipParseError(f"bad {canonical_name(name)}: {exc.reason}") from None

    def _head_lines(self) -> list[str]:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        lines = self._head_lines()
        for k, v in self.headers:
            if k != "Content-Length":
                lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def invalidate(self) -> None:
        """Forget cached structured views after headers were edited."""
        for name in ("vias", "from_", "to", "cseq", "contacts"):
            self.__dict__.pop(name, None)


def _name_addr_header(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    try:
        return parse_name_addr(value)
    except UriError as exc:
        raise SipParseError(f"bad {name}: {exc.reason}") from None


@dataclass(eq=False)
class Request(Message):
    method: str = "OPTIONS"
    uri: Uri | None = None
    version: str = "SIP/2.0"

    def _head_lines(self) -> list[str]:
        return [f"{self.method} {self.uri} {self.version}"]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call_id={self.headers.get('Call-ID')}>"


@dataclass(eq=False)
class Response(Message):
    status: int = 200
    reason: str = "OK"
    version: str = "SIP/2.0"

    def _head_lines(self) -> list[str]:
        return [f"{self.version} {self.status} {self.reason}"]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call_id={self.headers.get('Call-ID')}>"


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    # RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives); accept bare LF as well.
    data = data.lstrip(b"\r\n")
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep)
        if idx >= 0:
            return data[:idx], data[idx + len(sep) :]
    return data, b""


def _unfold(head: str) -> list[str]:
    lines = head.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return out


def parse_message(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_headers: int = DEFAULT_MAX_HEADERS,
    stream: bool = False,
) -> Request | Response:
    """Parse one whole SIP message.

    For datagrams (``stream=False``) a body longer than Content-Length is truncated and a shorter
    one is an error (RFC 3261 §18.3); streams must be framed first with :class:`StreamFramer`.
    """
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit", status=513)
    head_bytes, body = _split_head(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        head = head_bytes.decode("latin-1")
        raise SipParseError("header section is not valid UTF-8", partial=_salvage(head)) from None
    lines = _unfold(head)
    start = lines[0]
    partial = _salvage_lines(lines[1:])
    is_request = not start.startswith("SIP/")
    if len(lines) - 1 > max_headers:
        raise SipParseError(f"more than {max_headers} header lines", partial=partial, is_request=is_request)
    msg = _parse_start_line(start, partial)
    headers = Headers()
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _HEADER_NAME_RE.match(name):
            raise SipParseError(f"malformed header line {line[:60]!r}", partial=partial, is_request=is_request)
        headers.add(name, value.strip(" \t"))
    msg.headers = headers
    _check_mandatory(msg, partial)
    _check_scalars(msg, partial)
    length_text = headers.get("Content-Length")
    if length_text is not None:
        length = int(length_text)
        if length > len(body):
            raise SipParseError(
                f"Content-Length {length} is larger than the {len(body)}-byte body",
                partial=partial,
                is_request=is_request,
            )
        body = body[:length]
    elif stream:
        raise SipParseError("Content-Length is required on stream transports", partial=partial)
    msg.body = body
    return msg


def _salvage(head: str) -> list[tuple[str, str]]:
    return _salvage_lines(_unfold(head)[1:])


def _salvage_lines(lines: list[str]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and _HEADER_NAME_RE.match(name.strip()):
            out.append((canonical_name(name.strip()), value.strip()))
    return out


def _parse_start_line(start: str, partial: list[tuple[str, str]]) -> Request | Response:
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipParseError(f"malformed status line {start[:80]!r}", partial=partial, is_request=False)
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipParseError(f"status code {status} out of range", partial=partial, is_request=False)
        if parts[0] != "SIP/2.0":
            raise SipParseError(f"unsupported version {parts[0]!r}", status=505, partial=partial, is_request=False)
        return Response(status=status, reason=parts[2] if len(parts) > 2 else "")
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(
            "malformed request line (expected 'METHOD URI SIP/2.0' with single spaces)",
            partial=partial,
            is_request=True,
        )
    method, uri_text, version = parts
    if not _METHOD_RE.match(method):
        raise SipParseError(f"bad method {method!r}", partial=partial, is_request=True)
    if version.upper() != "SIP/2.0":
        if re.match(r"^SIP/\d+\.\d+$", version, re.I):
            raise SipParseError(f"unsupported version {version!r}", status=505, partial=partial, is_request=True)
        raise SipParseError(f"malformed version {version!r}", partial=partial, is_request=True)
    if uri_text.startswith("<"):
        raise SipParseError("Request-URI must not be enclosed in <>", partial=partial, is_request=True)
    try:
        uri = parse_uri(uri_text)
    except UriError as exc:
        status = 416 if ":" in uri_text and exc.reason.startswith("not a") else 400
        raise SipParseError(f"bad Request-URI: {exc.reason}", status=status, partial=partial, is_request=True) from None
    return Request(method=method, uri=uri)


def _check_mandatory(msg: Request | Response, partial: list[tuple[str, str]]) -> None:
    is_request = isinstance(msg, Request)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in msg.headers:
            raise SipParseError(f"missing {name} header", partial=partial, is_request=is_request)
    try:
        cseq = msg.cseq
        msg.vias  # noqa: B018 - parse to validate
        msg.from_  # noqa: B018
        msg.to  # noqa: B018
        if is_request:
            msg.name_addrs("Contact") if msg.method in ("INVITE", "REGISTER") else None  # type: ignore[attr-defined]
    except SipParseError as exc:
        raise SipParseError(exc.reason, partial=partial, is_request=is_request) from None
    if isinstance(msg, Request) and cseq.method != msg.method:
        raise SipParseError(
            f"CSeq method {cseq.method} does not match request method {msg.method}",
            partial=partial,
            is_request=True,
        )


def _check_scalars(msg: Request | Response, partial: list[tuple[str, str]]) -> None:
    for name, limit in _SCALARS.items():
        for value in msg.headers.get_all(name):
            if not value.isdigit() or int(value) > limit:
                raise SipParseError(
                    f"{name} value {value[:30]!r} is not an integer between 0 and {limit}",
                    partial=partial,
                    is_request=isinstance(msg, Request),
                )
    if len(msg.headers.get_all("Content-Length")) > 1:
        raise SipParseError("more than one Content-Length header", partial=partial)


class StreamFramer:
    """Cuts a stream (TCP/TLS) into whole messages using Content-Length (RFC 3261 §18.3)."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._buffer = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete message now available (possibly none).

        Raises :class:`SipParseError` when the stream cannot be framed (no Content-Length, or a
        header section larger than the limit): the connection should then be closed.
        """
        self._buffer += data
        out: list[bytes] = []
        while True:
            # Skip keep-alive CRLFs between messages (RFC 5626 §3.5.1).
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            idx = self._buffer.find(b"\r\n\r\n")
            if idx < 0:
                if len(self._buffer) > self.max_size:
                    raise SipParseError("header section exceeds the size limit on stream", status=513)
                return out
            head = bytes(self._buffer[:idx])
            m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", head)
            if not m:
                raise SipParseError("Content-Length is required on stream transports")
            total = idx + 4 + int(m.group(1))
            if total > self.max_size:
                raise SipParseError(f"message of {total} bytes exceeds the size limit", status=513)
            if len(self._buffer) < total:
                return out
            out.append(bytes(self._buffer[:total]))
            del self._buffer[:total]


def response_for(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
    """Build a response mirroring Via, From, To, Call-ID and CSeq of ``request`` (RFC 3261 §8.2.6)."""
    headers = Headers()
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            headers.add(name, value)
        elif name == "To":
            if to_tag and status != 100 and "tag=" not in _params_text(value):
                value = f"{value};tag={to_tag}"
            headers.add(name, value)
        elif name == "Record-Route" and 100 < status < 300:
            headers.add(name, value)
    return Response(status=status, reason=reason or REASONS.get(status, "Unknown"), headers=headers)


def _params_text(value: str) -> str:
    gt = value.rfind(">")
    return value[gt + 1 :] if gt >= 0 else value.partition(";")[2]


def error_response_from_partial(err: SipParseError) -> bytes | None:
    """A 400/505 response for a request that failed to parse, if enough headers survived to route it."""
    if not err.is_request:
        return None
    have = {k: v for k, v in reversed(err.partial)}
    if not all(k in have for k in ("Via", "From", "To", "Call-ID", "CSeq")):
        return None
    headers = Headers(kv for kv in err.partial if kv[0] in ("Via", "From", "To", "Call-ID", "CSeq"))
    reason = err.reason.replace("\r", " ").replace("\n", " ")[:120]
    reason = "".join(ch if ch.isprintable() else "?" for ch in reason)
    status = err.status if err.status in (400, 413, 416, 505, 513) else 400
    return bytes(Response(status=status, reason=f"{REASONS.get(status, 'Bad Request')} ({reason})", headers=headers))


__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "StreamFramer",
    "error_response_from_partial",
    "is_token",
    "parse_message",
    "response_for",
]
