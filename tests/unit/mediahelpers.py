"""Sans-network helpers for the media tests: a fake UDP port/reactor, a far-end RTP peer, test audio.

No sockets: an :class:`RtpSession` gets a :class:`FakeUdp` as its transport (it records every datagram), time
comes from ``twisted.internet.task.Clock`` and the media clock is stepped by hand with ``run_once``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.internet import task
from twisted.internet.error import CannotListenError

from callcenter.media.dtmf import DIGITS, TelephoneEvent
from callcenter.media.g711 import codec_for
from callcenter.media.rtp import RtpPacket, is_rtcp
from callcenter.media.session import Negotiated, RtpSession

PEER = ("192.0.2.10", 40000)
TE_PT = 101


class FakeUdp:
    """A listening UDP port and transport in one: ``write`` records, ``stopListening`` unbinds."""

    def __init__(self, reactor: FakeReactor | None = None, port: int = 0, protocol: Any = None) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False
        self.fail: Exception | None = None  # raised by write (an unroutable address, a full socket buffer)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((bytes(data), addr))

    def stopListening(self) -> None:
        self.stopped = True
        if self.reactor is not None:
            self.reactor.bound.pop(self.port, None)

    # what was sent
    def rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for d, _ in self.sent if not is_rtcp(d)]

    def addresses(self) -> list[tuple[str, int]]:
        return [a for _, a in self.sent]

    def take(self) -> list[RtpPacket]:
        """The RTP packets sent since the last take."""
        out = self.rtp()
        self.sent.clear()
        return out


class FakeReactor:
    """``listenUDP`` binds a :class:`FakeUdp` and attaches it as the protocol's transport; time is a task.Clock."""

    def __init__(self, busy: set[int] | None = None) -> None:
        self.clock = task.Clock()
        self.bound: dict[int, FakeUdp] = {}
        self.busy = set(busy or ())
        self.interfaces: list[str] = []
        self.in_thread: list[str] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> FakeUdp:
        if port in self.bound or port in self.busy:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        udp = FakeUdp(self, port, protocol)
        protocol.transport = udp
        self.bound[port] = udp
        self.interfaces.append(interface)
        return udp

    def callLater(self, delay: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.clock.callLater(delay, fn, *args, **kwargs)

    def seconds(self) -> float:
        return self.clock.seconds()

    def callInThread(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Work the engine hands to a thread (fsync) runs at once here."""
        self.in_thread.append(fn.__name__)
        fn(*args, **kwargs)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class RemotePeer:
    """The far end of one leg: numbers its RTP packets (sequence +1, timestamp +160) and delivers them."""

    def __init__(
        self, session: RtpSession, addr: tuple[str, int] = PEER, *, ssrc: int = 0x5EED5EED, pt: int = 0,
        seq: int = 1000, ts: int = 80_000,
    ) -> None:  # fmt: skip
        self.session = session
        self.addr = addr
        self.ssrc = ssrc
        self.pt = pt
        self.seq = seq
        self.ts = ts

    def packet(self, payload: bytes, *, seq: int | None = None, ts: int | None = None, pt: int | None = None,
               marker: bool = False, ssrc: int | None = None) -> bytes:  # fmt: skip
        return bytes(
            RtpPacket(
                self.pt if pt is None else pt, (self.seq if seq is None else seq) & 0xFFFF,
                (self.ts if ts is None else ts) & 0xFFFF_FFFF, self.ssrc if ssrc is None else ssrc, payload, marker,
            )
        )  # fmt: skip

    def deliver(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        self.session.datagramReceived(data, addr or self.addr)

    def audio(self, payload: bytes, addr: tuple[str, int] | None = None) -> int:
        """Send the next audio packet; returns its sequence number."""
        seq = self.seq
        self.deliver(self.packet(payload), addr)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFF_FFFF
        return seq

    def event(self, digit: str, duration_ms: int = 100, end_repeats: int = 3) -> None:
        """One RFC 4733 key press as a phone sends it: marker first, one timestamp, end packet three times."""
        code = DIGITS.index(digit)
        total = duration_ms * 8
        durations = list(range(160, total, 160))
        for i, d in enumerate(durations):
            self.deliver(self.packet(bytes(TelephoneEvent(code, False, 10, d)), pt=TE_PT, marker=i == 0))
            self.seq = (self.seq + 1) & 0xFFFF
        for _ in range(end_repeats):
            self.deliver(self.packet(bytes(TelephoneEvent(code, True, 10, total)), pt=TE_PT))
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + total) & 0xFFFF_FFFF


def make_session(
    *, codec: str = "PCMU", remote: tuple[str, int] | None = PEER, telephone_event_pt: int | None = TE_PT,
    direction: str = "sendrecv", clock: task.Clock | None = None, role: str = "caller", inband_dtmf: bool = True,
) -> tuple[RtpSession, FakeUdp, task.Clock]:  # fmt: skip
    session = RtpSession("call-1@example", role, 20000, inband_dtmf=inband_dtmf)
    clock = clock or task.Clock()
    session.clock = clock
    udp = FakeUdp()
    session.transport = udp
    pt = codec_for(codec).payload_type
    session.configure(
        Negotiated(
            codec=codec, payload_type=pt, telephone_event_pt=telephone_event_pt, remote=remote, direction=direction
        )
    )
    return session, udp, clock


def const_frame(value: int, codec: str = "PCMU") -> bytes:
    """One 20 ms frame of a constant sample value (exact after decoding: use values G.711 represents)."""
    return codec_for(codec).encode(np.full(160, value, dtype=np.int16))


def marked(n: int) -> bytes:
    """A recognisable 160-byte payload (the bytes are not meant to be listened to)."""
    return bytes([n & 0xFF]) * 160


def tone_pcm(freqs: tuple[float, ...], samples: int, amplitude: float, start: int = 0) -> np.ndarray:
    t = (start + np.arange(samples)) / 8000
    return np.round(sum(amplitude * np.sin(2 * np.pi * f * t) for f in freqs)).astype(np.int16)


def peak_freqs(pcm: np.ndarray, count: int) -> list[float]:
    """The ``count`` strongest frequencies (Hz, ascending) of 8 kHz PCM."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm))))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    picked: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        f = float(freqs[index])
        if all(abs(f - p) > 60 for p in picked):
            picked.append(f)
        if len(picked) == count:
            break
    return sorted(picked)
