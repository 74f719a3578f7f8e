"""Stream framing for SIP over TCP/TLS (RFC 3261 §18.3): cut a byte stream into whole messages.

A TCP read may carry several messages or a part of one; :class:`StreamFramer` uses each message's
Content-Length to find where it ends. Sans-I/O: bytes in, whole messages out.
"""

from __future__ import annotations

from callcenter.sip.errors import SipParseError
from callcenter.sip.message import DEFAULT_MAX_SIZE, _find_head_end


def _framing_length(head: bytes) -> int:
    """The Content-Length of a stream message's header section (RFC 3261 §18.3)."""
    values: list[str] = []
    current = False
    for line in head.decode("latin-1").replace("\r\n", "\n").split("\n")[1:]:
        if line[:1] in (" ", "\t"):
            if current:
                more = line.strip(" \t")
                values[-1] = f"{values[-1]} {more}".strip()
            continue
        name, colon, value = line.partition(":")
        current = bool(colon) and name.rstrip(" \t").lower() in ("content-length", "l")
        if current:
            values.append(value.strip(" \t"))
    if not values:
        raise SipParseError("Content-Length is required on stream transports")
    if len(set(values)) > 1:
        # Conflicting lengths: there is no safe place to cut (request smuggling); close the stream.
        raise SipParseError("conflicting Content-Length headers on stream")
    value = values[0]
    digits = value.lstrip("0") or "0"
    if not value.isascii() or not value.isdigit() or len(digits) > 20:
        raise SipParseError(f"bad Content-Length {value[:30]!r} on stream")
    return int(digits)


class StreamFramer:
    """Cuts a stream (TCP/TLS) into whole messages using Content-Length (RFC 3261 §18.3).

    Leading CRLFs (RFC 5626 keep-alives) are skipped. ``feed`` never re-scans bytes it has already
    searched for the end of the header section, so byte-at-a-time input stays linear.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._buffer = bytearray()
        self._scan = 0  # where to resume searching for the empty line
        self._total: int | None = None  # length of the message at the start of the buffer, once known
        self.max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete message now available (possibly none).

        Raises :class:`SipParseError` when the stream cannot be framed (no or conflicting
        Content-Length, or a message larger than the limit): the connection should then be closed
        (messages completed earlier in the same ``data`` are dropped with it).
        """
        self._buffer += data
        out: list[bytes] = []
        self._frame(out)
        return out

    def _frame(self, out: list[bytes]) -> None:
        buf = self._buffer
        while True:
            if self._total is None:
                skip = 0
                while buf[skip : skip + 2] == b"\r\n" or buf[skip : skip + 1] == b"\n":
                    skip += 2 if buf[skip] == 13 else 1
                if skip:
                    del buf[:skip]
                    self._scan = max(0, self._scan - skip)
                found = _find_head_end(buf, self._scan)
                if found is None:
                    self._scan = max(0, len(buf) - 2)
                    if len(buf) > self.max_size:
                        raise SipParseError("header section exceeds the size limit on stream", status=513)
                    return
                end, body = found
                if body > self.max_size:
                    raise SipParseError("header section exceeds the size limit on stream", status=513)
                total = body + _framing_length(bytes(buf[:end]))
                if total > self.max_size:
                    raise SipParseError(f"message of {total} bytes exceeds the size limit", status=413)
                self._total = total
            if len(buf) < self._total:
                return
            out.append(bytes(buf[: self._total]))
            del buf[: self._total]
            self._total = None
            self._scan = 0
