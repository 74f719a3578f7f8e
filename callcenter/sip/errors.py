"""Errors raised by the sans-I/O SIP layer."""

from __future__ import annotations


class SipError(Exception):
    """Base class for SIP protocol errors."""


class SipParseError(SipError, ValueError):
    """A message (or part of one) could not be parsed.

    ``status`` is the response a server should send (400 by default, 505 for an unknown SIP version,
    513 for a message over the size limit or with too many header lines, 413 when a stream's
    Content-Length announces a body over the limit); ``partial`` holds the raw header lines that
    *could* be read so a transport can still build that response (Via, From, To, Call-ID, CSeq).
    ``is_request`` is ``None`` when not even the start line was understood; ``method`` is the
    request's method when the request line could be split (no response is ever sent to an ACK).
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int = 400,
        partial: list[tuple[str, str]] | None = None,
        is_request: bool | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial or []
        self.is_request = is_request
        self.method = method


class UriError(SipParseError):
    """A SIP, SIPS or tel URI is malformed."""
