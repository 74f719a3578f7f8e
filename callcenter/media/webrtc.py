"""The browser softphone's media leg: WebRTC through aiortc, on the engine's one 20 ms media clock.

What the browser must do (agents/static/softphone.js):

* ``getUserMedia({audio: true})`` and ``new RTCPeerConnection({iceServers: []})`` (or the servers the page is
  given for a real deployment); add the microphone track so the offer has ONE audio m-line, ``sendrecv``;
* no trickle ICE: after ``setLocalDescription(offer)`` wait until ``iceGatheringState == "complete"`` (or a
  null ``icecandidate``), then POST ``pc.localDescription.sdp`` to ``/api/desk/webrtc``; apply the answer;
* prefer PCMU if it can (``transceiver.setCodecPreferences``); the engine answers PCMU whenever the offer has
  it (then PCMA, then Opus, which is resampled to 8 kHz here);
* play the remote track in an ``<audio autoplay>`` element. Keypad digits go to the API, not in-band.

:class:`WebRtcLeg` quacks like :class:`~callcenter.media.session.RtpSession` for the media clock, bridges,
conferences, recording taps and prompts once :meth:`MediaService.adopt_leg` has taken it in (codec PCMU;
``pull()`` hands out one 160-byte frame per tick):

* in: a task reads the browser's track (``av.AudioFrame`` at any rate, any layout), resamples to 8 kHz mono
  s16, cuts 160-sample frames, encodes them with our G.711 tables and queues them (bounded: beyond ~100 ms the
  oldest frame is dropped and counted; a tick with nothing queued is an underrun);
* out: every tick sends ``source()`` (or silence), decoded to an 8 kHz s16 ``av.AudioFrame`` (pts += 160,
  time base 1/8000) to an aiortc track whose ``recv()`` waits for it: the media clock paces the browser's audio.

:class:`WebRtcGateway` answers an SDP offer with an :class:`aiortc.RTCPeerConnection` that never contacts a public
STUN server (``iceServers`` come from configuration, ``[]`` by default) and whose host candidates can be pinned
to configured addresses (see :func:`pinned_host_addresses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import av
import numpy as np
import structlog
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)
from aiortc.mediastreams import MediaStreamError

from callcenter.media.dtmf import DtmfDigit
from callcenter.media.g711 import SAMPLES_PER_FRAME, codec_for
from callcenter.media.session import SILENCE_PCM, FrameSource, MediaCounters, Negotiated

log = structlog.get_logger("callcenter.media")

RATE = 8000
TIME_BASE = fractions.Fraction(1, RATE)
MAX_QUEUED = 5  # frames (100 ms) waiting in either direction; beyond, the oldest is dropped
PREBUFFER = 2  # frames received before playout starts (and restarts after an underrun): 40 ms against jitter
CODEC_PREFERENCE = ("audio/PCMU", "audio/PCMA", "audio/opus")  # what we answer, best first
CONNECT_TIMEOUT = 30.0  # seconds for ICE + DTLS to connect after the answer; then the browser counts as gone


class WebRtcError(ValueError):
    """The browser's offer cannot be answered (the message says why; the HTTP route names the field "sdp")."""


@dataclass
class WebRtcCounters(MediaCounters):
    dropped_outgoing: int = 0  # frames the browser's sender did not take in time
    resampled: int = 0  # incoming frames that were not 8 kHz mono already


# -- host candidates ---------------------------------------------------------------------------------------
# aioice gathers its host candidates from every interface except loopback (ice.get_host_addresses). On a
# closed network (tests, the demo) the browser runs on the same machine and only 127.0.0.1 reaches it; in a
# deployment an operator may want one LAN address rather than every interface. This is the one place that
# changes aioice's gathering: get_host_addresses is replaced, once, by a function that returns the addresses
# pinned for the current context (WebRtcGateway.answer sets them around its gathering) and aioice's own
# choice otherwise. A ContextVar rather than a global: two gateways (or a test's client peer) never see each
# other's choice.
_PINNED: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("webrtc_host_addresses", default=())
_aioice_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    pinned = _PINNED.get()
    if not pinned:
        return _aioice_host_addresses(use_ipv4, use_ipv6)
    return [a for a in pinned if (use_ipv6 if ":" in a else use_ipv4)]


aioice.ice.get_host_addresses = _host_addresses


@contextlib.contextmanager
def pinned_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Within the block, ICE gathering in this context uses exactly ``addresses`` (empty: aioice's choice)."""
    token = _PINNED.set(tuple(addresses))
    try:
        yield
    finally:
        _PINNED.reset(token)


# -- the leg ----------------------------------------------------------------------------------------------------
class _OutgoingTrack(MediaStreamTrack):
    """What the browser hears: frames pushed by the media clock's tick, handed to aiortc's sender on recv()."""

    kind = "audio"

    def __init__(self, counters: WebRtcCounters) -> None:
        super().__init__()
        self._frames: deque[np.ndarray] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._pts = 0
        self._counters = counters

    def push(self, pcm: np.ndarray) -> None:
        if self.readyState != "live":
            return
        if len(self._frames) >= MAX_QUEUED:  # the sender is not running (yet) or is late: keep the newest
            self._frames.popleft()
            self._counters.dropped_outgoing += 1
        self._frames.append(pcm)
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> av.AudioFrame:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self.readyState != "live":
            raise MediaStreamError
        pcm = self._frames.popleft()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        self._pts += SAMPLES_PER_FRAME
        return frame

    def stop(self) -> None:
        super().stop()
        self._frames.clear()
        self._wake()


class WebRtcLeg:
    """One browser softphone's audio, as a media leg (see the module docstring). ``close()`` also ends the
    peer connection (through ``on_close``, set by the gateway)."""

    def __init__(self, call_id: str, role: str = "operator", *, clock: Any = None) -> None:
        self.call_id = call_id
        self.role = role
        self.port = 0  # no UDP port of ours (ICE has its own): MediaService.adopt_leg takes it in
        self.clock = clock  # the reactor (MediaService's per-leg bookkeeping reads seconds())
        self.codec = codec_for("PCMU")
        self.negotiated = Negotiated(codec="PCMU", payload_type=0, direction="sendrecv")
        self.counters = WebRtcCounters()
        self.source: FrameSource | None = None
        self.digit_listeners: list[Callable[[DtmfDigit], None]] = []
        self.sending = True
        self.closed = False
        self.peer: tuple[str, int] | None = None  # ICE decides; nothing for RTCP reports here
        self.rtcp_peer: tuple[str, int] | None = None
        self.last_received: bytes | None = None
        self.last_pcm: np.ndarray | None = None
        self.last_sent: bytes | None = None
        self.browser_codec: str | None = None  # what SDP settled with the browser (PCMU, PCMA, opus)
        self.connection_state = "new"  # the peer connection's: new, connecting, connected, failed, closed
        self.on_close: Callable[[], None] | None = None
        self.track = _OutgoingTrack(self.counters)
        self._queue: deque[tuple[bytes, np.ndarray]] = deque()  # (PCMU payload, its PCM) per 20 ms
        self._pending = np.zeros(0, dtype=np.int16)  # resampled samples not yet a whole frame
        self._resampler: av.AudioResampler | None = None
        self._resampler_input: tuple[str, str, int] | None = None
        self._primed = False
        self._heard = False  # something arrived once: from then on an empty tick is an underrun
        self._reader: asyncio.Task[None] | None = None

    # -- incoming: the browser's microphone ---------------------------------------------------------------
    def read_from(self, track: MediaStreamTrack) -> None:
        """Start the task that reads the browser's track into the queue (one per leg; a new track replaces)."""
        if self._reader is not None:
            self._reader.cancel()
        self._reader = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while not self.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                self.feed(frame)  # type: ignore[arg-type]
            except Exception:  # an odd frame must not end the leg
                self.counters.malformed += 1
                log.exception("media.webrtc.bad_frame", call_id=self.call_id)

    def feed(self, frame: av.AudioFrame) -> None:
        """One decoded frame from the browser (any rate and layout) → 20 ms PCMU frames in the queue."""
        if self.closed:
            return
        pcm = self._to_8k_mono(frame)
        if pcm.size:
            self._pending = np.concatenate((self._pending, pcm)) if self._pending.size else pcm
        while self._pending.size >= SAMPLES_PER_FRAME:
            chunk = np.ascontiguousarray(self._pending[:SAMPLES_PER_FRAME])
            self._pending = self._pending[SAMPLES_PER_FRAME:]
            payload = self.codec.encode(chunk)
            self._queue.append((payload, self.codec.decode(payload)))
            self.counters.received += 1
            self._heard = True
            if len(self._queue) > MAX_QUEUED:
                self._queue.popleft()
                self.counters.dropped_late += 1

    def _to_8k_mono(self, frame: av.AudioFrame) -> np.ndarray:
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if shape == ("s16", "mono", RATE):
            return np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1)
        self.counters.resampled += 1
        if self._resampler is None or self._resampler_input != shape:  # the browser changed codec: start over
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            self._resampler_input = shape
        out = [np.asarray(f.to_ndarray(), dtype=np.int16).reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)

    # -- the 20 ms tick ---------------------------------------------------------------------------------------
    def pull(self) -> bytes | None:
        """This tick's frame from the browser (None before the cushion is built or on an underrun)."""
        self.last_received = self.last_pcm = None
        if self.closed:
            return None
        if not self._primed and len(self._queue) >= PREBUFFER:
            self._primed = True
        if self._primed and self._queue:
            self.last_received, self.last_pcm = self._queue.popleft()
        elif self._heard:
            self.counters.underruns += 1
            self._primed = False  # build up the cushion again before playing on
        return self.last_received

    def decoded(self) -> np.ndarray:
        """This tick's received audio as PCM (silence when nothing arrived)."""
        if self.last_pcm is None:
            self.last_pcm = self.codec.decode(self.last_received) if self.last_received else SILENCE_PCM
        return self.last_pcm

    def tick(self, now: float) -> None:
        """Send this tick's frame to the browser: the source's, else silence (the browser's jitter buffer
        and level meters expect a steady stream)."""
        self.last_sent = None
        if self.closed:
            return
        frame = self.source() if self.source is not None and self.sending else None
        self.last_sent = frame
        self.track.push(self.codec.decode(frame) if frame is not None else SILENCE_PCM)
        self.counters.sent += 1

    # -- what an RtpSession also offers ----------------------------------------------------------------------
    def send_dtmf(self, digits: str, duration_ms: int = 100) -> bool:
        return False  # the operator types digits into the API; nothing goes back to the browser

    def rtcp_report(self, now: float) -> bytes | None:
        return None  # aiortc sends the browser its own RTCP

    def _digit(self, digit: DtmfDigit) -> None:
        """A digit by signalling (MediaService.inject_digit): to the listeners, like a received one."""
        self.counters.digits += 1
        for listener in list(self.digit_listeners):
            listener(digit)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.source = None
        self.digit_listeners.clear()
        self._queue.clear()
        self.track.stop()
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()


# -- the gateway ------------------------------------------------------------------------------------------------
class WebRtcGateway:
    """Answers browsers' SDP offers: one RTCPeerConnection and one :class:`WebRtcLeg` per offer.

    ``config`` is the ``webrtc`` configuration section (``ice_servers``: url lists with optional username and
    credential; ``host_addresses``: pinned host candidates, empty for aioice's choice); None means neither."""

    def __init__(self, config: Any = None, *, clock: Any = None) -> None:
        servers = getattr(config, "ice_servers", None) or []
        self.ice_servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                            for s in servers]
        self.host_addresses: tuple[str, ...] = tuple(getattr(config, "host_addresses", None) or ())
        self.clock = clock
        self.connect_timeout = CONNECT_TIMEOUT
        self.connections: dict[int, RTCPeerConnection] = {}  # id(leg) → its peer connection
        self._closing: set[asyncio.Task[None]] = set()

    async def answer(self, offer_sdp: str, *, label: str = "webrtc",
                     on_gone: Callable[[WebRtcLeg], None] | None = None) -> tuple[str, WebRtcLeg]:
        """The answer SDP (every candidate gathered: no trickle) and the new leg. ``on_gone(leg)`` is called
        once if the browser goes away (connection failed or closed from its side); the leg is closed by then.
        Raises :class:`WebRtcError` for an offer we cannot answer."""
        if not isinstance(offer_sdp, str) or "m=audio" not in offer_sdp:
            raise WebRtcError("the offer has no audio (m=audio) section")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers)))
        leg = WebRtcLeg(label, clock=self.clock)
        transceiver = pc.addTransceiver(leg.track, direction="sendrecv")
        capabilities = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for name in CODEC_PREFERENCE for c in capabilities
                                         if c.mimeType.lower() == name.lower()])

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                leg.read_from(track)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = leg.connection_state = pc.connectionState
            log.info("media.webrtc.state", call_id=label, state=state)
            if state == "connected":
                watchdog.cancel()
            if state in ("failed", "closed") and not leg.closed:
                self._gone(leg, on_gone)

        def never_connected() -> None:
            if not leg.closed and pc.connectionState != "connected":
                log.warning("media.webrtc.connect_timeout", call_id=label, state=pc.connectionState)
                self._gone(leg, on_gone)

        watchdog = asyncio.get_running_loop().call_later(self.connect_timeout, never_connected)

        def closing() -> None:
            watchdog.cancel()
            self._close_pc(leg, pc)

        leg.on_close = closing
        self.connections[id(leg)] = pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            with pinned_host_addresses(self.host_addresses):
                await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            leg.close()
            log.warning("media.webrtc.offer_refused", call_id=label, error=str(exc))
            raise WebRtcError(f"cannot answer the offer: {exc or type(exc).__name__}") from exc
        leg.browser_codec = _answered_codec(pc.localDescription.sdp)
        log.info("media.webrtc.answered", call_id=label, codec=leg.browser_codec,
                 candidates=sum(1 for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")))
        return pc.localDescription.sdp, leg

    @staticmethod
    def _gone(leg: WebRtcLeg, on_gone: Callable[[WebRtcLeg], None] | None) -> None:
        leg.close()
        if on_gone is not None:
            try:
                on_gone(leg)
            except Exception:  # the owner's trouble must not stay inside aiortc's event emitter
                log.exception("media.webrtc.gone_failed", call_id=leg.call_id)

    def _close_pc(self, leg: WebRtcLeg, pc: RTCPeerConnection) -> None:
        self.connections.pop(id(leg), None)
        try:
            task = asyncio.get_running_loop().create_task(pc.close())
        except RuntimeError:  # no loop running (a test tearing down): nothing left to close with
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every peer connection (engine shutdown)."""
        for pc in list(self.connections.values()):
            await pc.close()
        self.connections.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _answered_codec(answer_sdp: str) -> str | None:
    """The codec our answer puts first (the one both sides send)."""
    for media in sdp.SessionDescription.parse(answer_sdp).media:
        if media.kind == "audio" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType.split("/", 1)[1]
    return None
