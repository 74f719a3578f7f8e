"""SIP messages: parse and serialise requests and responses (RFC 3261 §7, §18.3, §20, §25).

Sans-I/O: ``parse_message(bytes) -> Request | Response`` or :class:`SipParseError`;
``bytes(message)`` serialises with canonical header names and an exact Content-Length.
:class:`~callcenter.sip.stream.StreamFramer` cuts a TCP byte stream into messages by Content-Length.

Status codes carried by :class:`SipParseError`: 400 for malformed messages, 505 for an unknown
SIP version, 513 for a message over the size limit or with too many header lines, 413 when a
stream's Content-Length announces a body over the size limit.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from callcenter.sip.errors import SipParseError
from callcenter.sip.headers import _FAST, MULTI_VALUE, CSeq, Via, canonical_name, is_token, split_values
from callcenter.sip.uri import NameAddr, SipUri, Uri, UriError, parse_name_addr, parse_uri

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

_METHOD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I)
_TAG_PARAM_RE = re.compile(r";[ \t]*tag[ \t]*=", re.I)
# Single-valued headers that must hold an unsigned integer no larger than the limit (RFC 3261 §20).
_SCALARS = {"Content-Length": 2**32 - 1, "Max-Forwards": 255, "Expires": 2**32 - 1, "Min-Expires": 2**32 - 1}
# Headers that may appear at most once: a second From/To/Call-ID/CSeq/Content-Length makes the
# message ambiguous (RFC 4475 §3.3.8 multi01, §3.3.9 mcl01) and is rejected with 400.
_SINGLE_VALUE = frozenset({"Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type",
                           "Expires", "Min-Expires"})
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_MIRRORED = ("From", "To", "Call-ID", "CSeq")


def _check_header_field(name: str, value: str) -> None:
    if _FAST.get(name) is None and _HEADER_NAME_RE.fullmatch(name) is None:
        raise ValueError(f"header name {name!r} is not a token")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} value contains CR or LF (header injection)")


class Headers:
    """An ordered, case-insensitive multi-map of header fields with canonical names.

    Values may not contain CR or LF: adding one raises :class:`ValueError` (it would inject header
    lines when serialised).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for k, v in items:
            self.add(k, v)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

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
        _check_header_field(name, value)
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        _check_header_field(name, value)
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one value, keeping the position of the first."""
        _check_header_field(name, value)
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
        out: list[Via] = []
        for k, value in self.headers:
            if k == "Via":
                for part in split_values(value):
                    if not part:  # "Via: a,,b" or an empty Via (RFC 4475 badinv01)
                        raise SipParseError("empty Via header value")
                    out.append(Via.parse(part))
        return out

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
        if "\r" in lines[0] or "\n" in lines[0]:
            raise ValueError(f"start line {lines[0][:80]!r} contains CR or LF")
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
        addr = parse_name_addr(value)
    except UriError as exc:
        raise SipParseError(f"bad {name}: {exc.reason}") from None
    if "tag" in addr.params and not addr.params["tag"]:
        raise SipParseError(f"bad {name}: tag parameter without a value")  # tag-param = "tag" EQUAL token
    return addr


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


# --------------------------------------------------------------------------------------------
# Parsing


def _find_head_end(data: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """``(end of header section, start of body)`` or None: the first empty line at/after ``start``.

    Lines end with CRLF or (leniently) bare LF, so the empty line is ``\\n\\r\\n`` or ``\\n\\n``.
    The returned end excludes the last line's terminator.
    """
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf + 2 if crlf >= 0 else len(data))
    if lf >= 0:
        end, body = lf, lf + 2
    elif crlf >= 0:
        end, body = crlf, crlf + 3
    else:
        return None
    if end > 0 and data[end - 1] == 13:  # the CR of the last header line's CRLF
        end -= 1
    return end, body


def _skip_leading_crlf(data: bytes) -> int:
    # RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives).
    i, n = 0, len(data)
    while i < n and data[i] in (13, 10):
        i += 1
    return i


def _split_head(data: bytes) -> tuple[bytes, bytes] | None:
    start = _skip_leading_crlf(data)
    found = _find_head_end(data, start)
    if found is not None:
        end, body = found
        return data[start:end], data[body:]
    # No empty line: accepted only when the datagram ends with a complete header line.
    if data.endswith(b"\n"):
        return data[start:].rstrip(b"\r\n"), b""
    return None


def _looks_like_response(head: str | bytes) -> bool:
    return head[:4].upper() in ("SIP/", b"SIP/")


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
    On failure the :class:`SipParseError` carries ``status``, ``is_request`` and the salvaged
    header lines (``partial``) for :func:`error_response_from_partial`.
    """
    data = bytes(data)
    if len(data) > max_size:
        raise _oversize_error(data, max_size)
    split = _split_head(data)
    if split is None:
        raise _error_with_salvage(SipParseError("incomplete header section (no empty line)"), data)
    head_bytes, body = split
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise _error_with_salvage(SipParseError("header section is not valid UTF-8"), head_bytes) from None
    try:
        return _parse(head, body, max_headers, stream)
    except SipParseError as exc:
        if exc.is_request is None:
            exc.is_request = not _looks_like_response(head)
        if exc.is_request and exc.method is None:
            exc.method = head.partition(" ")[0][:32] or None
        if not exc.partial:
            exc.partial = _salvage(head)
        raise


def _parse(head: str, body: bytes, max_headers: int, stream: bool) -> Request | Response:
    if "\r" in head:
        head = head.replace("\r\n", "\n")
        if "\r" in head:
            raise SipParseError("bare CR in header section")
    lines = head.split("\n")
    if len(lines) - 1 > max_headers:
        raise SipParseError(f"more than {max_headers} header lines", status=513)
    msg = _parse_start_line(lines[0])
    headers = Headers()
    items = headers._items
    seen: set[str] = set()
    has_via = False
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # Folded continuation (RFC 3261 §7.3.1): replace the line break and leading LWS by one SP.
            if not items:
                raise SipParseError("continuation line before the first header field")
            name, value = items[-1]
            more = line.strip(" \t")
            items[-1] = (name, f"{value} {more}" if value and more else value or more)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        cname = _FAST.get(name)
        if cname is None:
            if not colon or _HEADER_NAME_RE.fullmatch(name) is None:
                raise SipParseError(f"malformed header line {line[:60]!r}")
            cname = canonical_name(name)
        elif not colon:
            raise SipParseError(f"malformed header line {line[:60]!r}")
        if cname in _SINGLE_VALUE:
            if cname in seen:
                raise SipParseError(f"more than one {cname} header")
            seen.add(cname)
        elif cname == "Via":
            has_via = True
        items.append((cname, value.strip(" \t")))
    msg.headers = headers
    if not has_via:
        raise SipParseError("missing Via header")
    for name in _MIRRORED:
        if name not in seen:
            raise SipParseError(f"missing {name} header")
    cseq = msg.cseq
    msg.vias  # noqa: B018 - parse to validate
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    msg.contacts  # noqa: B018
    if isinstance(msg, Request) and cseq.method != msg.method:
        raise SipParseError(f"CSeq method {cseq.method[:32]} does not match request method {msg.method[:32]}")
    length: int | None = None
    for name, limit in _SCALARS.items():
        if name in seen:
            number = _scalar(headers.get(name) or "", name, limit)
            if name == "Content-Length":
                length = number
    if length is not None:
        if length > len(body):
            raise SipParseError(f"Content-Length {length} is larger than the {len(body)}-byte body")
        body = body[:length]
    elif stream:
        raise SipParseError("Content-Length is required on stream transports")
    msg.body = body
    return msg


def _scalar(value: str, name: str, limit: int) -> int:
    # ASCII digits only (isdigit() accepts '²', which int() rejects) and a length bound before
    # int() (which refuses strings of more than 4300 digits).
    digits = value.lstrip("0") or "0"
    if not value.isascii() or not value.isdigit() or len(digits) > 20 or int(digits) > limit:
        raise SipParseError(f"{name} value {value[:30]!r} is not an integer between 0 and {limit}")
    return int(digits)


def _parse_start_line(start: str) -> Request | Response:
    if _looks_like_response(start):
        parts = start.split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        if len(code) != 3 or not code.isascii() or not code.isdigit():
            raise SipParseError(f"malformed status line {start[:80]!r}", is_request=False)
        if parts[0].upper() != "SIP/2.0":
            status = 505 if _VERSION_RE.fullmatch(parts[0]) else 400
            raise SipParseError(f"unsupported version {parts[0][:20]!r}", status=status, is_request=False)
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"status code {status} out of range", is_request=False)
        return Response(status=status, reason=parts[2] if len(parts) > 2 else "")
    # Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces. This rejects
    # RFC 4475 lwsstart (several SPs), lwsruri (SP inside the URI) and also trws (trailing SP after
    # the version): the RFC lists trws among the invalid messages, and accepting trailing SP while
    # rejecting doubled SP would make the grammar we enforce inconsistent. A sender of such a request
    # still gets a 400 mirroring its Via/From/To/Call-ID/CSeq, so the failure is visible to it.
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(
            "malformed request line (expected 'METHOD URI SIP/2.0' with single spaces)", is_request=True
        )
    method, uri_text, version = parts
    if _METHOD_RE.fullmatch(method) is None:
        raise SipParseError(f"bad method {method[:32]!r}", is_request=True)
    if version.upper() != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise SipParseError(f"unsupported version {version!r}", status=505, is_request=True, method=method)
        raise SipParseError(f"malformed version {version[:20]!r}", is_request=True, method=method)
    if uri_text.startswith("<"):
        raise SipParseError("Request-URI must not be enclosed in <>", is_request=True, method=method)
    try:
        uri = parse_uri(uri_text)
    except UriError as exc:
        raise SipParseError(f"bad Request-URI: {exc.reason}", is_request=True, method=method) from None
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 escruri).
        raise SipParseError("headers are not allowed in a Request-URI", is_request=True, method=method)
    return Request(method=method, uri=uri)


def _salvage(head: str) -> list[tuple[str, str]]:
    """Header fields that can still be read from a header section that failed to parse.

    Works on text decoded with ``surrogateescape`` too: values with undecodable bytes or a bare CR
    are left out (they could not be mirrored faithfully).
    """
    out: list[tuple[str, str]] = []
    last_ok = False
    for line in head.replace("\r\n", "\n").split("\n")[1:]:
        if line[:1] in (" ", "\t"):
            if last_ok:
                more = line.strip(" \t")
                if _mirrorable(more):
                    name, value = out[-1]
                    out[-1] = (name, f"{value} {more}" if value and more else value or more)
                else:
                    out.pop()
                    last_ok = False
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        value = value.strip(" \t")
        last_ok = bool(colon) and _HEADER_NAME_RE.fullmatch(name) is not None and _mirrorable(value)
        if last_ok:
            out.append((canonical_name(name), value))
    return out


def _mirrorable(value: str) -> bool:
    if "\r" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _error_with_salvage(err: SipParseError, head_bytes: bytes) -> SipParseError:
    start = _skip_leading_crlf(head_bytes)
    err.is_request = not _looks_like_response(head_bytes[start : start + 4])
    text = head_bytes[start:].decode("utf-8", "surrogateescape")
    if err.is_request:
        err.method = text.partition(" ")[0][:32] or None
    err.partial = _salvage(text)
    return err


def _oversize_error(data: bytes, max_size: int) -> SipParseError:
    """513 for an oversized message, with whatever header fields fit in the first ``max_size`` bytes."""
    prefix = data[:max_size]
    found = _find_head_end(prefix, 0)
    head = prefix[: found[0]] if found else prefix[: prefix.rfind(b"\n") + 1]  # drop a cut-off line
    err = SipParseError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit", status=513)
    return _error_with_salvage(err, head)


# --------------------------------------------------------------------------------------------
# Responses


def _has_to_tag(request: Request) -> bool:
    try:
        return request.to.tag is not None
    except SipParseError:
        return bool(_TAG_PARAM_RE.search(request.headers.get("To") or ""))


def response_for(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
    """Build a response mirroring Via, From, To, Call-ID and CSeq of ``request`` (RFC 3261 §8.2.6).

    ``to_tag`` is added to To unless the request already has a To tag (in-dialog) or the response
    is a 100 Trying. Record-Route is copied into 101-299 responses (RFC 3261 §12.1.1).
    """
    add_tag = bool(to_tag) and status != 100 and not _has_to_tag(request)
    headers = Headers()
    items = headers._items
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            items.append((name, value))
        elif name == "To":
            items.append((name, f"{value};tag={to_tag}" if add_tag else value))
        elif name == "Record-Route" and 100 < status < 300:
            items.append((name, value))
    return Response(status=status, reason=reason or REASONS.get(status, "Unknown"), headers=headers)


def error_response_from_partial(err: SipParseError) -> bytes | None:
    """A 400/505/513 response for a request that failed to parse, if enough headers survived to route it.

    Mirrors every Via and the first From, To, Call-ID and CSeq (a message with two CSeqs must not
    produce a response with two), adds a To tag when there is none (RFC 3261 §8.2.6.2), and never
    answers a response or an ACK.
    """
    if err.is_request is not True or err.method == "ACK":
        return None
    vias: list[str] = []
    first: dict[str, str] = {}
    for name, value in err.partial:
        if name == "Via":
            vias.append(value)
        elif name in _MIRRORED and name not in first:
            first[name] = value
    if not vias or len(first) < len(_MIRRORED):
        return None
    cseq_words = first["CSeq"].split()
    if cseq_words and cseq_words[-1] == "ACK":
        return None
    to = first["To"]
    try:
        if parse_name_addr(to).tag is None:
            to = f"{to};tag={secrets.token_hex(4)}"
    except SipParseError:
        pass  # mirror a malformed To as it is
    headers = Headers()
    for value in vias:
        headers._items.append(("Via", value))
    for name in _MIRRORED:
        headers._items.append((name, to if name == "To" else first[name]))
    reason = err.reason.replace("\r", " ").replace("\n", " ")[:120]
    reason = "".join(ch if ch.isprintable() else "?" for ch in reason)
    status = err.status if err.status in (400, 413, 416, 505, 513) else 400
    return bytes(Response(status=status, reason=f"{REASONS.get(status, 'Bad Request')} ({reason})", headers=headers))


__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "error_response_from_partial",
    "is_token",
    "parse_message",
    "response_for",
]
