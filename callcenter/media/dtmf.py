"""DTMF out of band: RFC 4733 telephone-events (receive and send) and SIP INFO bodies.

Sans-I/O: the RTP layer hands over the payload, RTP timestamp, marker bit and the current time; the receiver
hands back :class:`DtmfDigit` values. In-band tones are detected in :mod:`callcenter.media.inband`.

RFC 4733 receive rules (§2.5.1): an event is identified by its RTP timestamp, and a digit is reported once
per event, at the first of

* the first end packet (the retransmitted end packets, usually three, are then ignored),
* a packet of a new event (another timestamp) while the previous event never ended,
* :meth:`Rfc4733Receiver.expire` from the media tick, when no packet of the event came for more than
  :data:`EVENT_TIMEOUT` seconds (all end packets lost).

The last :data:`FINISHED_HISTORY` finished timestamps are remembered, so a late or retransmitted packet of a
finished event is dropped rather than starting a second digit. Packets that arrive late, after a newer event
started, for an event never seen before are taken as a new event (the digit is reported late, not lost).
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass, field

DIGITS = "0123456789*#ABCD"
"""RFC 4733 §3.2 event codes 0-15, in code order."""

SOURCES = ("rfc4733", "info", "inband")
EVENT_TIMEOUT = 1.0
"""Seconds without a packet after which an event that never ended is reported."""
FINISHED_HISTORY = 16
DEFAULT_INFO_DURATION_MS = 100
MAX_INFO_DURATION_MS = 60_000

INFO_CONTENT_TYPES = frozenset({"application/dtmf-relay", "application/dtmf"})
"""Content types :func:`parse_dtmf_info` understands (the value of an ``Accept`` header on a 415)."""


class DtmfError(ValueError):
    """A malformed telephone-event payload or an impossible DTMF request."""


@dataclass(frozen=True)
class DtmfDigit:
    """One key press, whatever way it arrived."""

    digit: str
    duration_ms: int
    source: str

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in DIGITS:
            raise DtmfError(f"not a DTMF digit: {self.digit!r}")
        if self.source not in SOURCES:
            raise DtmfError(f"unknown DTMF source: {self.source!r}")
        if self.duration_ms < 0:
            raise DtmfError(f"negative DTMF duration: {self.duration_ms}")


# --- RFC 4733 payload ------------------------------------------------------------------------------------

_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True)
class TelephoneEvent:
    """The 4-byte RFC 4733 §2.3 payload: event, E bit, volume (-dBm0, 0-63) and duration (clock units)."""

    event: int
    end: bool
    volume: int
    duration: int

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise DtmfError(f"event code out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"volume out of range: {self.volume}")
        if not 0 <= self.duration <= 0xFFFF:
            raise DtmfError(f"duration out of range: {self.duration}")

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse a payload; a longer payload carries several events (§2.5.1.5) and the first one is taken."""
        if len(payload) < _EVENT.size:
            raise DtmfError(f"telephone-event payload too short: {len(payload)} bytes")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def __bytes__(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        """The DTMF digit for events 0-15, None for the other events (flash, tones...)."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None


# --- RFC 4733 receiver -----------------------------------------------------------------------------------


@dataclass
class _Event:
    timestamp: int
    event: int
    duration: int
    last_seen: float


@dataclass
class ReceiverStats:
    """Counters for logs and metrics."""

    digits: int = 0
    ignored_events: int = 0
    """Events above 15 (flash, modem tones...), counted once per event."""
    duplicates: int = 0
    """Packets of an already finished event (retransmitted end packets, late packets)."""
    lost_start: int = 0
    """Events whose first packet seen had no marker bit."""
    lost_end: int = 0
    """Events reported by :meth:`Rfc4733Receiver.expire` (no end packet arrived)."""
    interrupted: int = 0
    """Events ended by the start of a new event."""
    malformed: int = 0
    mismatched: int = 0
    """Packets with the timestamp of the current event but another event code (dropped)."""


@dataclass
class Rfc4733Receiver:
    """Turns the telephone-event packets of one RTP stream into digits (one receiver per stream/SSRC)."""

    clock_rate: int = 8000
    timeout: float = EVENT_TIMEOUT
    history: int = FINISHED_HISTORY
    stats: ReceiverStats = field(default_factory=ReceiverStats)
    _current: _Event | None = field(default=None, init=False, repr=False)
    _finished: deque[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.clock_rate <= 0:
            raise DtmfError(f"bad clock rate: {self.clock_rate}")
        self._finished = deque(maxlen=self.history)

    def feed(self, payload: bytes, rtp_timestamp: int, marker: bool, now: float) -> list[DtmfDigit]:
        """One telephone-event RTP packet; returns the digits it completes (zero, one, or two)."""
        try:
            packet = TelephoneEvent.parse(payload)
        except DtmfError:
            self.stats.malformed += 1
            return []
        if rtp_timestamp in self._finished:
            self.stats.duplicates += 1
            return []
        out: list[DtmfDigit] = []
        current = self._current
        if current is not None and current.timestamp != rtp_timestamp:
            self.stats.interrupted += 1
            out += self._finish()
            current = None
        if current is None:
            if not marker:
                self.stats.lost_start += 1
            if packet.digit is None:
                self.stats.ignored_events += 1
            current = self._current = _Event(rtp_timestamp, packet.event, packet.duration, now)
        elif packet.event != current.event:
            self.stats.mismatched += 1
            return out
        current.duration = max(current.duration, packet.duration)
        current.last_seen = now
        if packet.end:
            out += self._finish()
        return out

    def expire(self, now: float) -> list[DtmfDigit]:
        """Call from the media tick: reports an event whose packets stopped without an end bit."""
        current = self._current
        if current is None or now - current.last_seen <= self.timeout:
            return []
        self.stats.lost_end += 1
        return self._finish()

    def reset(self) -> None:
        """Forget everything (new SSRC, re-INVITE to another stream)."""
        self._current = None
        self._finished.clear()

    def _finish(self) -> list[DtmfDigit]:
        current = self._current
        assert current is not None
        self._current = None
        self._finished.append(current.timestamp)
        if current.event >= len(DIGITS):
            return []
        self.stats.digits += 1
        duration_ms = round(current.duration * 1000 / self.clock_rate)
        return [DtmfDigit(DIGITS[current.event], duration_ms, "rfc4733")]


# --- RFC 4733 sender -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rfc4733Sender:
    """Builds the packet sequence of one digit; the caller stamps them all with one RTP timestamp."""

    clock_rate: int = 8000
    end_repeats: int = 3

    def packets(
        self, digit: str, duration_ms: int = 100, volume: int = 10, interval_ms: int = 20
    ) -> list[tuple[bytes, bool, int]]:
        """(payload, marker, duration so far in clock units) for each packet, one every ``interval_ms``.

        The first packet has the marker bit; the duration grows by one interval per packet; the final
        duration is sent ``end_repeats`` times with the end bit.
        """
        if len(digit) != 1 or digit.upper() not in DIGITS:
            raise DtmfError(f"not a DTMF digit: {digit!r}")
        if duration_ms <= 0 or interval_ms <= 0:
            raise DtmfError(f"duration and interval must be positive: {duration_ms}, {interval_ms}")
        event = DIGITS.index(digit.upper())
        total = round(duration_ms * self.clock_rate / 1000)
        step = max(1, round(interval_ms * self.clock_rate / 1000))
        if total > 0xFFFF:
            raise DtmfError(f"duration too long for one event: {duration_ms} ms")
        durations = list(range(step, total, step))
        packets = [(bytes(TelephoneEvent(event, False, volume, d)), False, d) for d in durations]
        packets += [(bytes(TelephoneEvent(event, True, volume, total)), False, total)] * self.end_repeats
        first, _, first_duration = packets[0]
        packets[0] = (first, True, first_duration)
        return packets


# --- SIP INFO --------------------------------------------------------------------------------------------

_LINE = re.compile(r"^\s*([A-Za-z-]+)\s*=\s*(\S*)\s*$")


def is_dtmf_info_type(content_type: str) -> bool:
    """True for the Content-Types :func:`parse_dtmf_info` reads (parameters and case ignored)."""
    return _media_type(content_type) in INFO_CONTENT_TYPES


def parse_dtmf_info(content_type: str, body: bytes) -> DtmfDigit | None:
    """The digit of a SIP INFO body, or None.

    ``application/dtmf-relay``: ``Signal=5`` and optional ``Duration=160`` (ms, default 100) lines, keys in
    any case. ``application/dtmf``: the body is the signal alone. A signal is a digit, ``*``, ``#``, ``A``-``D``
    or an event number 0-15 (10 = ``*``, 11 = ``#``).

    The caller answers an INFO for which this returns None with **415 Unsupported Media Type** (and
    ``Accept: application/dtmf-relay, application/dtmf``) when :func:`is_dtmf_info_type` is false, and with
    **400 Bad Request** otherwise (known type, bad body). Events above 15 (flash) are a 400 too.
    """
    media_type = _media_type(content_type)
    if media_type not in INFO_CONTENT_TYPES:
        return None
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if media_type == "application/dtmf":
        digit = _signal(text.strip())
        return None if digit is None else DtmfDigit(digit, DEFAULT_INFO_DURATION_MS, "info")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            return None
        fields.setdefault(match.group(1).lower(), match.group(2))
    digit = _signal(fields.get("signal", ""))
    if digit is None:
        return None
    duration_text = fields.get("duration")
    if duration_text is None:
        return DtmfDigit(digit, DEFAULT_INFO_DURATION_MS, "info")
    if not duration_text.isdigit() or len(duration_text) > 6 or int(duration_text) > MAX_INFO_DURATION_MS:
        return None
    return DtmfDigit(digit, int(duration_text), "info")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _signal(text: str) -> str | None:
    if len(text) == 1 and text.upper() in DIGITS:
        return text.upper()
    if text.isdigit() and len(text) <= 2 and int(text) < len(DIGITS):
        return DIGITS[int(text)]
    return None
