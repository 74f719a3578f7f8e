"""RTP and RTCP (RFC 3550) wire formats and reception statistics, sans-I/O (aiortc-style ``parse``/``bytes()``).

``RtpPacket.parse`` runs 50,000 times a second, so its common case (version 2, no padding, extension or CSRC)
is one ``unpack_from`` and one constructor call. ``ReceptionStats`` is RFC 3550 Appendix A.1/A.3/A.8 with
arrival times passed in; ``RtpSender`` numbers outgoing packets and counts them for sender reports.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

RTP_HEADER_SIZE = 12
RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE = 200, 201, 202, 203
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
MAX_DROPOUT, MAX_MISORDER, MIN_SEQUENTIAL = 3000, 100, 2
SEQ_MOD = 1 << 16

_HEADER = struct.Struct("!BBHII")
_unpack_header = _HEADER.unpack_from
_RTCP_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_SSRC = struct.Struct("!I")


class RtpError(ValueError):
    """A malformed RTP or RTCP packet, or a field that cannot be serialised; the message names the fault."""


def _check_payload_type(pt: int) -> int:
    if not 0 <= pt <= 127:
        raise RtpError(f"RTP payload type {pt} is outside 0-127")
    return pt


def _pack(layout: struct.Struct, what: str, *values: object) -> bytes:
    try:
        return layout.pack(*values)
    except struct.error as exc:
        raise RtpError(f"{what} field out of range: {exc}") from exc


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing: a second byte of 192–223 (RTCP packet types 192–223) means RTCP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def ntp_from_unix(seconds: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) for a Unix time in seconds."""
    whole = math.floor(seconds)
    fraction = int((seconds - whole) * (1 << 32))
    return (((whole + NTP_EPOCH_OFFSET) << 32) + fraction) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (the LSR/DLSR clock, units of 1/65536 s)."""
    return (ntp >> 16) & 0xFFFF_FFFF


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. ``padding`` counts the padding octets including the final count octet (0 = none)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    extension: tuple[int, bytes] | None = None  # (profile-defined 16 bits, data of a multiple of 4 octets)
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short: {len(data)} bytes, the fixed header needs 12")
        first, second, sequence, timestamp, ssrc = _unpack_header(data)
        if first == 0x80:  # version 2, no padding, no extension, no CSRC: the usual case
            return cls(second & 0x7F, sequence, timestamp, ssrc, data[12:], second > 0x7F, [], None, 0)
        return cls._parse_general(data, first, second, sequence, timestamp, ssrc)

    @classmethod
    def _parse_general(cls, data: bytes, first: int, second: int, seq: int, ts: int, ssrc: int) -> RtpPacket:
        if first >> 6 != 2:
            raise RtpError(f"RTP version {first >> 6} is not 2")
        end = len(data)
        count = first & 0x0F
        pos = RTP_HEADER_SIZE + 4 * count
        if pos > end:
            raise RtpError(f"RTP CSRC count {count} needs {pos} header bytes, the packet has {end}")
        csrc = list(struct.unpack_from(f"!{count}I", data, RTP_HEADER_SIZE)) if count else []
        extension = None
        if first & 0x10:
            if pos + 4 > end:
                raise RtpError("RTP header extension bit set but the extension header is missing")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if pos + 4 * words > end:
                raise RtpError(f"RTP header extension length {words} words exceeds the packet")
            extension = (profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        padding = 0
        if first & 0x20:
            padding = data[-1] if end > pos else 0
            if padding == 0:
                raise RtpError("RTP padding bit set but the padding count is zero or missing")
            if padding > end - pos:
                raise RtpError(f"RTP padding count {padding} exceeds the {end - pos} payload bytes")
            end -= padding
        return cls(second & 0x7F, seq, ts, ssrc, data[pos:end], second > 0x7F, csrc, extension, padding)

    def __bytes__(self) -> bytes:
        pt = _check_payload_type(self.payload_type)
        second = pt | 0x80 if self.marker else pt
        if not (self.csrc or self.extension or self.padding):
            return _pack(_HEADER, "RTP header", 0x80, second, self.sequence, self.timestamp, self.ssrc) + self.payload
        return self._serialise_general(second)

    def _serialise_general(self, second: int) -> bytes:
        count, padding = len(self.csrc), self.padding
        if count > 15:
            raise RtpError(f"RTP packets carry at most 15 CSRCs, not {count}")
        if not 0 <= padding <= 255:
            raise RtpError(f"RTP padding {padding} is outside 0-255")
        first = 0x80 | (0x20 if padding else 0) | (0x10 if self.extension is not None else 0) | count
        parts = [_pack(_HEADER, "RTP header", first, second, self.sequence, self.timestamp, self.ssrc)]
        if count:
            parts.append(_pack(struct.Struct(f"!{count}I"), "RTP CSRC", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4 or len(data) > 4 * 0xFFFF:
                raise RtpError(f"RTP header extension data must be a multiple of 4 octets, not {len(data)}")
            parts.append(_pack(struct.Struct("!HH"), "RTP header extension", profile, len(data) // 4) + data)
        parts.append(self.payload)
        if padding:
            parts.append(bytes(padding - 1) + bytes((padding,)))
        return b"".join(parts)


# RTCP


@dataclass(slots=True)
class ReportBlock:
    """One reception report (RFC 3550 §6.4.1); ``packets_lost`` is signed 24-bit, clamped when serialised."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        if offset + _REPORT_BLOCK.size > len(data):
            raise RtpError("RTCP report block truncated")
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        return cls(ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost)).to_bytes(3, "big", signed=True)
        values = (self.ssrc, self.fraction_lost, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr)
        return _pack(_REPORT_BLOCK, "RTCP report block", *values)


def _rtcp_packet(packet_type: int, count: int, body: bytes, reports: Iterable[ReportBlock] = ()) -> bytes:
    if count > 31:
        raise RtpError(f"RTCP packets carry at most 31 items, not {count}")
    body += b"".join(bytes(block) for block in reports)
    return _RTCP_HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        values = (self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count)
        return _rtcp_packet(RTCP_SR, len(self.reports), _pack(_SR_INFO, "RTCP SR", *values), self.reports)


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        return _rtcp_packet(RTCP_RR, len(self.reports), _pack(_SSRC, "RTCP RR", self.ssrc), self.reports)


@dataclass(slots=True)
class Bye:
    ssrcs: list[int]
    reason: str = ""

    def __bytes__(self) -> bytes:
        body = _pack(struct.Struct(f"!{len(self.ssrcs)}I"), "RTCP BYE", *self.ssrcs)
        if self.reason:
            text = self.reason.encode()[:255]
            body += bytes((len(text),)) + text
            body += bytes(-len(body) % 4)
        return _rtcp_packet(RTCP_BYE, len(self.ssrcs), body)


RtcpPacket = SenderReport | ReceiverReport | Bye


def _report_blocks(body: bytes, offset: int, count: int, kind: str) -> list[ReportBlock]:
    if offset + 24 * count > len(body):
        raise RtpError(f"RTCP {kind} with {count} report blocks is too short ({len(body)} bytes after the header)")
    return [ReportBlock.parse(body, offset + 24 * i) for i in range(count)]


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet into SR, RR and BYE packets; SDES, APP and unknown types are skipped."""
    if len(data) < 4:
        raise RtpError(f"RTCP packet too short: {len(data)} bytes")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise RtpError(f"RTCP compound packet has {len(data) - pos} trailing bytes")
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtpError(f"RTCP version {first >> 6} is not 2")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtpError(f"RTCP packet type {packet_type} length {words} words exceeds the buffer")
        body = data[pos + 4 : end]
        if first & 0x20:
            padding = body[-1] if body else 0
            if padding == 0 or padding > len(body):
                raise RtpError(f"RTCP padding count {padding} is invalid")
            body = body[:-padding]
        count = first & 0x1F
        if packet_type == RTCP_SR:
            blocks = _report_blocks(body, _SR_INFO.size, count, "sender report")
            packets.append(SenderReport(*_SR_INFO.unpack_from(body), blocks))
        elif packet_type == RTCP_RR:
            blocks = _report_blocks(body, 4, count, "receiver report")
            packets.append(ReceiverReport(_SSRC.unpack_from(body)[0], blocks))
        elif packet_type == RTCP_BYE:
            if len(body) < 4 * count:
                raise RtpError(f"RTCP BYE announces {count} SSRCs but is too short")
            rest = body[4 * count :]
            reason = rest[1 : 1 + rest[0]].decode("utf-8", "replace") if rest else ""
            packets.append(Bye(list(struct.unpack_from(f"!{count}I", body)), reason))
        pos = end
    return packets


class ReceptionStats:
    """Sequence validation, loss and jitter for one received SSRC (RFC 3550 Appendix A.1, A.3, A.8)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Forget everything (the SSRC changed): the next packet starts a new probation."""
        self._valid, self._probation, self._jitter, self._clock_rate, self._last_timestamp = False, 0, 0.0, 8000, 0
        self._init_seq(0)

    def _init_seq(self, seq: int) -> None:
        self._base_seq = self._max_seq = seq
        self._bad_seq = SEQ_MOD + 1
        self._cycles = self._received = self._received_prior = self._expected_prior = 0
        self._last_arrival: float | None = None  # the timeline restarted too: no transit difference across it

    def update(self, seq: int, rtp_timestamp: int, arrival: float, clock_rate: int = 8000) -> bool:
        """Account for one packet; False means drop it (source on probation or an unexplained jump)."""
        if not self._valid and self._probation == 0:  # first packet ever (or after restart)
            self._init_seq(seq)
            self._max_seq = (seq - 1) & 0xFFFF
            self._probation = MIN_SEQUENTIAL
        max_seq = self._max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if self._probation:
            if seq == (max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._valid = True
                    self._received += 1
                    self._jitter_update(rtp_timestamp, arrival, clock_rate)
                    return True
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
            return False
        if udelta < MAX_DROPOUT:  # in order, with a permissible gap
            if seq < max_seq:
                self._cycles += SEQ_MOD
            self._max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:  # a very large jump
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
            self._init_seq(seq)  # two sequential packets: the sender restarted, resynchronise
        # else: duplicate or reordered packet, counted as received
        self._received += 1
        self._jitter_update(rtp_timestamp, arrival, clock_rate)
        return True

    def _jitter_update(self, rtp_timestamp: int, arrival: float, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        last_arrival, self._last_arrival = self._last_arrival, arrival
        last_timestamp, self._last_timestamp = self._last_timestamp, rtp_timestamp
        if last_arrival is None:
            return
        ts_delta = ((rtp_timestamp - last_timestamp + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000
        d = abs((arrival - last_arrival) * clock_rate - ts_delta)  # D(i-1, i) in timestamp units
        self._jitter += (d - self._jitter) / 16

    @property
    def valid(self) -> bool:  # the source has passed probation
        return self._valid

    @property
    def received(self) -> int:
        return self._received

    @property
    def extended_max(self) -> int:  # highest sequence number received, with 65536 per wrap (0 before valid)
        return self._cycles + self._max_seq if self._valid else 0

    @property
    def expected(self) -> int:
        return self._cycles + self._max_seq - self._base_seq + 1 if self._valid else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost; negative when duplicates outnumber losses."""
        return self.expected - self._received

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000 / self._clock_rate

    def report_block(self, ssrc: int, now_ntp_middle32: int, last_sr: int = 0, last_sr_arrival: int = 0) -> ReportBlock:
        """The report block for ``ssrc`` and start a new reporting interval (fraction lost is per interval).

        ``last_sr`` is the middle 32 bits of the NTP timestamp in the last SR from this source (0: none) and
        ``last_sr_arrival`` the middle 32 bits of our NTP clock when it arrived; DLSR is in 1/65536 s.
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior, self._received_prior = expected, self._received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval == 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        dlsr = (now_ntp_middle32 - last_sr_arrival) & 0xFFFF_FFFF if last_sr else 0
        lost, jitter = max(-0x800000, min(0x7FFFFF, self.lost)), int(self._jitter) & 0xFFFF_FFFF  # timestamp units
        return ReportBlock(ssrc, min(fraction, 255), lost, self.extended_max & 0xFFFF_FFFF, jitter, last_sr, dlsr)


class RtpSender:
    """Numbers outgoing RTP packets (sequence +1, timestamp +samples, both wrapping) and counts them."""

    __slots__ = ("octet_count", "packet_count", "payload_type", "sequence", "ssrc", "timestamp")

    def __init__(self, ssrc: int, payload_type: int, initial_sequence: int, initial_timestamp: int) -> None:
        self.ssrc = ssrc & 0xFFFF_FFFF
        self.payload_type = _check_payload_type(payload_type)
        self.sequence = initial_sequence & 0xFFFF  # of the next packet
        self.timestamp = initial_timestamp & 0xFFFF_FFFF  # of the next packet
        self.packet_count = self.octet_count = 0

    def packet(
        self, payload: bytes, samples: int = 160, marker: bool = False, payload_type: int | None = None
    ) -> bytes:
        """Serialise the next packet, then advance the sequence by 1 and the timestamp by ``samples``."""
        pt = self.payload_type if payload_type is None else _check_payload_type(payload_type)
        data = _HEADER.pack(0x80, pt | 0x80 if marker else pt, self.sequence, self.timestamp, self.ssrc) + payload
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFF_FFFF
        self.packet_count += 1
        self.octet_count += len(payload)
        return data

    def skip(self, samples: int) -> None:
        """Advance the timestamp without sending (time passed with nothing to send)."""
        self.timestamp = (self.timestamp + samples) & 0xFFFF_FFFF

    def sender_report(self, now_unix: float, reports: list[ReportBlock] | None = None) -> SenderReport:
        """An SR for now; its RTP timestamp is that of the next packet, which the 20 ms tick sends now."""
        packets, octets = self.packet_count & 0xFFFF_FFFF, self.octet_count & 0xFFFF_FFFF
        return SenderReport(self.ssrc, ntp_from_unix(now_unix), self.timestamp, packets, octets, list(reports or []))
