"""One RTP session per call leg: a UDP socket pair (RTP, RTCP), symmetric RTP, a small jitter buffer,
DTMF from RFC 4733 and in-band tones, and counters for everything that was refused.

Packets come in from Twisted; outgoing frames leave only from :meth:`RtpSession.tick`, which the media
clock calls for every session every 20 ms (see :mod:`callcenter.media.clock`).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
from twisted.internet import protocol

from callcenter.media.dtmf import DtmfDigit, Rfc4733Receiver, Rfc4733Sender
from callcenter.media.g711 import Codec, codec_for
from callcenter.media.inband import InbandDetector
from callcenter.media.rtp import (
    MAX_MISORDER,
    ReceiverReport,
    ReceptionStats,
    RtpError,
    RtpPacket,
    RtpSender,
    SenderReport,
    is_rtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
)

log = structlog.get_logger("callcenter.media")

FRAME_BYTES = 160  # one 20 ms G.711 frame
PREBUFFER = 2 * FRAME_BYTES  # 40 ms of cushion against arrival jitter before playout starts
JITTER_DEPTH = 6  # frames kept before the oldest is dropped (120 ms: clock drift or a burst)
DUPLICATE_WINDOW = 0.5  # seconds: the same digit by another path (tone and RFC 4733) is one key press
RELATCH_AFTER = 2.0  # seconds of silence from the latched source before another source may take over


@dataclass
class MediaCounters:
    received: int = 0
    sent: int = 0
    malformed: int = 0
    strangers: int = 0  # packets from an address that is not our peer
    wrong_payload_type: int = 0
    ssrc_changes: int = 0
    dropped_late: int = 0  # jitter buffer overflow
    invalid_sequence: int = 0
    underruns: int = 0  # a frame was needed and none had arrived
    digits: int = 0
    rtcp_received: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Negotiated:
    """What SDP offer/answer settled for this leg."""

    codec: str = "PCMU"
    payload_type: int = 0
    telephone_event_pt: int | None = None
    remote: tuple[str, int] | None = None  # from SDP; the latched source wins (symmetric RTP)
    direction: str = "sendrecv"


FrameSource = Callable[[], bytes | None]  # returns an encoded 20 ms payload in the leg's codec, or None


@dataclass
class _JitterBuffer:
    """Reorders packets by sequence and hands out exactly one 20 ms frame (160 G.711 bytes) per tick,
    whatever the peer's packet time (10, 20, 30, 40 ms): G.711 is one byte per sample, so payloads are
    joined into a byte stream and cut into frames."""

    frames: deque[tuple[int, bytes]] = field(default_factory=deque)  # (extended sequence, payload)
    next_seq: int | None = None
    pending: bytearray = field(default_factory=bytearray)  # bytes taken from packets, not yet handed out
    primed: bool = False  # playout starts (and restarts after an underrun) once PREBUFFER bytes wait

    def push(self, seq: int, payload: bytes, counters: MediaCounters) -> None:
        newest = self.frames[-1][0] if self.frames else self.next_seq
        if newest is not None and newest - seq > MAX_MISORDER:
            # ReceptionStats accepts a packet this far back only after resynchronising to a sender that
            # restarted its sequence (RFC 3550 A.1): follow it, or every packet would be "late" from now on.
            self.reset()
        elif self.next_seq is not None and seq < self.next_seq:
            counters.dropped_late += 1
            return
        frames = self.frames
        if not frames or seq > frames[-1][0]:
            frames.append((seq, payload))
        else:  # out of order inside the window: insert in place, drop duplicates
            items = list(frames)
            if any(s == seq for s, _ in items):
                return
            items.append((seq, payload))
            items.sort(key=lambda item: item[0])
            frames.clear()
            frames.extend(items)
        while len(frames) > JITTER_DEPTH:
            frames.popleft()
            counters.dropped_late += 1

    def pop(self) -> bytes | None:
        pending, frames = self.pending, self.frames
        if not self.primed:
            if len(pending) + sum(len(p) for _, p in frames) < PREBUFFER:
                return None
            self.primed = True
        if not pending and frames and len(frames[0][1]) == FRAME_BYTES:
            seq, payload = frames.popleft()  # the common case: one 20 ms packet per tick, no copying
            self.next_seq = seq + 1
            return payload
        while len(pending) < FRAME_BYTES and frames:
            seq, payload = frames.popleft()
            self.next_seq = seq + 1
            pending += payload
        if len(pending) < FRAME_BYTES:
            self.primed = False  # underrun: build up the cushion again before playing on
            return None
        out = bytes(pending[:FRAME_BYTES])
        del pending[:FRAME_BYTES]
        if len(pending) > JITTER_DEPTH * FRAME_BYTES:  # a sender faster than our clock: drop the backlog
            del pending[: len(pending) - FRAME_BYTES]
        return out

    def reset(self) -> None:
        self.frames.clear()
        self.pending.clear()
        self.next_seq = None
        self.primed = False


class RtpSession(protocol.DatagramProtocol):
    """RTP for one leg. ``source`` decides what we send each tick; ``consumers`` see what we receive."""

    def __init__(self, call_id: str, role: str, port: int, *, inband_dtmf: bool = True) -> None:
        self.call_id = call_id
        self.role = role
        self.port = port
        self.negotiated = Negotiated()
        self.codec: Codec = codec_for("PCMU")
        self.counters = MediaCounters()
        self.stats = ReceptionStats()
        self.sender = RtpSender(
            ssrc=secrets.randbits(32),
            payload_type=0,
            initial_sequence=secrets.randbelow(2**16),
            initial_timestamp=secrets.randbits(32),
        )
        self._dtmf_sender: Rfc4733Sender | None = None
        self._pending_dtmf: deque[deque[tuple[bytes, bool, int]]] = deque()  # events, each its packets
        self._dtmf_elapsed = 0  # samples of wall-clock time the current outgoing event has taken so far
        self.jitter = _JitterBuffer()
        self.peer: tuple[str, int] | None = None  # latched source (symmetric RTP)
        self._peer_seen = 0.0
        self._remote_ssrc: int | None = None
        self.rfc4733 = Rfc4733Receiver()
        self.inband: InbandDetector | None = InbandDetector() if inband_dtmf else None
        self.source: FrameSource | None = None
        self._raw_peer: tuple[str, int] | None = None  # the peer _raw_ok was computed for
        self._raw_ok = False
        self._last_digit: tuple[str, str, float] | None = None  # (digit, source, time) of the last one reported
        self.digit_listeners: list[Callable[[DtmfDigit], None]] = []
        self.sending = True
        self.closed = False
        self.clock: Any = None  # the reactor, for arrival times
        self.last_received: bytes | None = None  # the payload pulled on the last tick (for taps)
        self.last_pcm: np.ndarray | None = None
        self.last_sent: bytes | None = None  # the audio payload sent on the last tick (None: silence, DTMF)
        self.rtcp_peer: tuple[str, int] | None = None
        self._last_sr: tuple[int, int] | None = None  # middle 32 bits of the peer's last SR, and of our arrival

    # -- configuration -----------------------------------------------------------------------------
    def configure(self, negotiated: Negotiated) -> None:
        """Apply an offer/answer result (initial or re-INVITE)."""
        self.negotiated = negotiated
        self.codec = codec_for(negotiated.codec)
        self.sender.payload_type = negotiated.payload_type
        self._dtmf_sender = Rfc4733Sender() if negotiated.telephone_event_pt is not None else None
        if self._dtmf_sender is None and self._pending_dtmf:  # no telephone-event any more: nothing to send on
            self._pending_dtmf.clear()
            self.sender.skip(self._dtmf_elapsed)
            self._dtmf_elapsed = 0
        self.sending = negotiated.direction in ("sendrecv", "sendonly")
        if self.peer is None and negotiated.remote is not None and negotiated.remote[1] > 0:
            self.peer = negotiated.remote  # until the peer's own packets tell us better

    # -- receive -----------------------------------------------------------------------------------
    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if self.closed:
            return
        now = self.clock.seconds() if self.clock is not None else 0.0
        if is_rtcp(datagram):  # RTCP multiplexed on the RTP port (RFC 5761)
            self.on_rtcp(datagram, addr)
            return
        try:
            packet = RtpPacket.parse(datagram)
        except RtpError:
            self.counters.malformed += 1
            return
        neg = self.negotiated
        pt = packet.payload_type
        if pt != neg.payload_type and pt != neg.telephone_event_pt:
            # A stranger's junk must not latch us; a known peer sending an odd type is just counted.
            self.counters.wrong_payload_type += 1
            return
        if addr != self.peer:
            latched_by_media = self._remote_ssrc is not None
            if latched_by_media and now - self._peer_seen < RELATCH_AFTER:
                self.counters.strangers += 1
                return
            if latched_by_media:
                log.info("media.peer.moved", call_id=self.call_id, old=self.peer, new=addr)
            self.peer = addr
        self._peer_seen = now
        if packet.ssrc != self._remote_ssrc:
            if self._remote_ssrc is not None:
                self.counters.ssrc_changes += 1
            self._remote_ssrc = packet.ssrc
            self.stats.restart()
            self.jitter.reset()
        if not self.stats.update(packet.sequence, packet.timestamp, now) and self.stats.valid:
            # A known source jumped or went backwards too far (RFC 3550 A.1): drop until it resyncs.
            # (Packets of a new source on probation are kept: an elder's first words matter.)
            self.counters.invalid_sequence += 1
            return
        self.counters.received += 1
        if pt == neg.telephone_event_pt and pt is not None:
            for digit in self.rfc4733.feed(packet.payload, packet.timestamp, packet.marker, now):
                self._digit(digit)
            return
        high = self.stats.extended_max
        delta = (packet.sequence - high) & 0xFFFF
        self.jitter.push(high + (delta - 0x10000 if delta >= 0x8000 else delta), packet.payload, self.counters)

    # -- RTCP ----------------------------------------------------------------------------------------
    def on_rtcp(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """A report from the peer (on our RTCP port, or muxed on RTP): remember its SR for our RR."""
        if self.closed:
            return
        if self.peer is not None and addr[0] != self.peer[0]:
            self.counters.strangers += 1
            return
        try:
            packets = parse_rtcp(datagram)
        except RtpError:
            self.counters.malformed += 1
            return
        self.counters.rtcp_received += 1
        self.rtcp_peer = addr
        now = self.clock.seconds() if self.clock is not None else 0.0
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._last_sr = (ntp_middle32(packet.ntp_timestamp), ntp_middle32(ntp_from_unix(now)))

    def rtcp_report(self, now: float) -> bytes | None:
        """Our periodic report: an SR when we have sent, with a reception block when we have received."""
        blocks = []
        if self._remote_ssrc is not None:
            lsr, arrival = self._last_sr if self._last_sr is not None else (0, 0)
            blocks.append(self.stats.report_block(self._remote_ssrc, ntp_middle32(ntp_from_unix(now)), lsr, arrival))
        if self.sender.packet_count:
            report: SenderReport | ReceiverReport = self.sender.sender_report(now, reports=blocks)
        elif blocks:
            report = ReceiverReport(ssrc=self.sender.ssrc, reports=blocks)
        else:
            return None
        return bytes(report)

    def _digit(self, digit: DtmfDigit) -> None:
        # Phones that send RFC 4733 often leave the tones in the audio too: once a leg has sent a real
        # telephone-event, stop listening for tones; and drop a tone that repeats the digit just reported.
        now = self.clock.seconds() if self.clock is not None else 0.0
        last = self._last_digit
        if last is not None and last[0] == digit.digit and last[1] != digit.source:
            if now - last[2] < DUPLICATE_WINDOW:
                return
        if digit.source == "rfc4733":
            self.inband = None
        self._last_digit = (digit.digit, digit.source, now)
        self.counters.digits += 1
        log.info("media.dtmf", call_id=self.call_id, digit=digit.digit, source=digit.source, leg=self.role)
        for listener in list(self.digit_listeners):
            listener(digit)

    # -- the 20 ms tick ------------------------------------------------------------------------------
    def pull(self) -> bytes | None:
        """Take this tick's received frame (None when nothing arrived in time)."""
        payload = self.jitter.pop()
        if payload is None and self._remote_ssrc is not None:
            self.counters.underruns += 1
        self.last_received = payload
        self.last_pcm = None
        if payload is not None and self.inband is not None and self.digit_listeners:
            for digit in self.inband.feed(self.decoded()):
                self._digit(digit)
        return payload

    def decoded(self) -> np.ndarray:
        """This tick's received audio as PCM (silence when nothing arrived), decoded once."""
        if self.last_pcm is None:
            payload = self.last_received
            self.last_pcm = self.codec.decode(payload) if payload else SILENCE_PCM
        return self.last_pcm

    def tick(self, now: float) -> None:
        """Send this tick's frame: pending DTMF first, then the source, else silence."""
        self.last_sent = None
        if self.closed or self.transport is None or self.peer is None:
            return
        for digit in self.rfc4733.expire(now):
            self._digit(digit)
        if not self.sending:
            self.sender.skip(160)
            return
        if self._pending_dtmf:
            # RFC 4733 §2.5.1: every packet of one event carries the event's start timestamp. Afterwards the
            # timestamp jumps to where the wall clock is (RFC 3550 §5.1: linear in time): over the event's
            # duration and its retransmitted end packets, one tick each.
            event = self._pending_dtmf[0]
            payload, marker, _duration = event.popleft()
            assert self.negotiated.telephone_event_pt is not None
            event_pt = self.negotiated.telephone_event_pt
            data = self.sender.packet(payload, samples=0, marker=marker, payload_type=event_pt)
            self._dtmf_elapsed += 160
            if not event:
                self._pending_dtmf.popleft()
                self.sender.skip(self._dtmf_elapsed)
                self._dtmf_elapsed = 0
        else:
            frame = self.source() if self.source is not None else None
            self.last_sent = frame
            data = self.sender.packet(frame if frame is not None else self.codec.silence)
        try:
            # The hot path (50 packets/s per leg): straight to the socket once the peer is a known IP
            # address; Twisted's write() re-validates the address on every packet.
            sock = self._raw_socket()
            if sock is not None:
                sock.sendto(data, self.peer)
            else:
                self.transport.write(data, self.peer)
            self.counters.sent += 1
        except (OSError, ValueError):  # ValueError: Twisted's InvalidAddressError (a host name in SDP c=)
            pass

    def _raw_socket(self) -> Any:
        peer = self.peer
        if peer is None:
            return None
        if peer != self._raw_peer:
            self._raw_peer = peer
            self._raw_ok = _is_ip_literal(peer[0])
        return getattr(self.transport, "socket", None) if self._raw_ok else None

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> bool:
        """Queue RFC 4733 events for ``digits``; False when the peer did not negotiate telephone-event."""
        if self._dtmf_sender is None:
            return False
        for digit in digits:
            self._pending_dtmf.append(deque(self._dtmf_sender.packets(digit, duration_ms)))
        return True

    def close(self) -> None:
        self.closed = True
        self.source = None
        self.digit_listeners.clear()


SILENCE_PCM = np.zeros(160, dtype=np.int16)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
