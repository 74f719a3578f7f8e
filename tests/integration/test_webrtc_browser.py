"""The browser softphone's media path against real WebRTC peers on 127.0.0.1.

Everything runs in this process on one asyncio loop, as in the engine: a Twisted asyncio reactor (an instance on
the test's loop, not installed globally), a real MediaService (real UDP ports, the 20 ms media clock), the
WebRtcGateway with ``iceServers=[]`` and host candidates pinned to 127.0.0.1, and

* an aiortc client peer (PCMU, and Opus-only: the engine resamples 48 kHz to 8 kHz): a tone each way;
* real headless Chromium (selenium, fake microphone = a beep) on a tiny page served here: getUserMedia, offer,
  wait for ICE gathering, POST; its leg is bridged with a plain-RTP caller (a UDP socket sending PCMU): the
  caller receives the browser's microphone and Chromium's inbound-rtp shows the caller's tone arriving.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from twisted.internet.asyncioreactor import AsyncioSelectorReactor

from callcenter.media import webrtc
from callcenter.media.g711 import codec_for
from callcenter.media.prompts import PromptCache
from callcenter.media.rtp import RtpPacket, is_rtcp
from callcenter.media.service import MediaService
from callcenter.media.session import Negotiated
from callcenter.media.webrtc import WebRtcGateway, WebRtcLeg, pinned_host_addresses

pytestmark = pytest.mark.timeout(90)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PCMU = codec_for("PCMU")


def level(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(float) ** 2))) if pcm.size else 0.0


def tone_frame(freq: float, n: int, amplitude: float = 6000.0) -> np.ndarray:
    t = (n * 160 + np.arange(160)) / 8000
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


# -- the engine side: MediaService + gateway on the test's loop ---------------------------------------------------
@asynccontextmanager
async def media_engine(tmp_path: Path) -> AsyncIterator[tuple[MediaService, WebRtcGateway]]:
    reactor = AsyncioSelectorReactor(asyncio.get_running_loop())
    low = 30000 + 2 * secrets.randbelow(5000)
    media = MediaService(reactor, address="127.0.0.1", port_min=low, port_max=low + 40,
                         prompts=PromptCache(tmp_path / "prompts"), recordings_root=tmp_path / "recordings")
    gateway = WebRtcGateway(SimpleNamespace(ice_servers=[], host_addresses=["127.0.0.1"]), clock=reactor)
    media.start()
    try:
        yield media, gateway
    finally:
        await gateway.close()
        media.stop()


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Listener:
    """What the engine hears from a WebRTC leg: a tick handler keeping every received frame."""

    def __init__(self, media: MediaService, leg: WebRtcLeg) -> None:
        self.leg = leg
        self.frames: list[np.ndarray] = []
        media.clock.add_handler(self)

    def on_tick(self) -> None:
        if self.leg.last_received is not None:
            self.frames.append(self.leg.decoded().copy())


# -- an aiortc client peer ----------------------------------------------------------------------------------------
class ToneTrack(MediaStreamTrack):
    """A microphone playing a sine at ``rate`` (48 kHz stereo frames when ``stereo``), paced in real time."""

    kind = "audio"

    def __init__(self, freq: float, rate: int = 8000, stereo: bool = False) -> None:
        super().__init__()
        self.freq, self.rate, self.stereo = freq, rate, stereo
        self.pts = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = self.rate // 50
        if self.start is None:
            self.start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self.start + self.pts / self.rate - time.monotonic()))
        t = (self.pts + np.arange(n)) / self.rate
        pcm = np.round(6000 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        data = np.repeat(pcm, 2) if self.stereo else pcm
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16",
                                           layout="stereo" if self.stereo else "mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self.pts += n
        return frame


async def client_call(gateway: WebRtcGateway, *, opus_only: bool) -> tuple[RTCPeerConnection, WebRtcLeg, list]:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = client.addTransceiver(ToneTrack(700.0, 48000, stereo=True) if opus_only else ToneTrack(700.0))
    if opus_only:
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                         if c.mimeType == "audio/opus"])
    heard: list[av.AudioFrame] = []

    @client.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                try:
                    heard.append(await track.recv())
                except MediaStreamError:
                    return

        asyncio.ensure_future(read())

    with pinned_host_addresses(["127.0.0.1"]):  # this peer is on loopback too
        await client.setLocalDescription(await client.createOffer())
    answer, leg = await gateway.answer(client.localDescription.sdp, label="softphone:test")
    assert "a=candidate" in answer and " 127.0.0.1 " in answer
    assert "stun" not in answer.lower()
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return client, leg, heard


@pytest.mark.parametrize("opus_only", [False, True], ids=["pcmu", "opus"])
def test_an_aiortc_peer_and_the_engine_hear_each_other(tmp_path: Path, opus_only: bool) -> None:
    async def scenario() -> None:
        async with media_engine(tmp_path) as (media, gateway):
            client, leg, heard = await client_call(gateway, opus_only=opus_only)
            assert leg.browser_codec == ("opus" if opus_only else "PCMU")
            media.adopt_leg(leg)
            listener = Listener(media, leg)
            frames = iter(range(10**6))
            leg.source = lambda: PCMU.encode(tone_frame(1000.0, next(frames)))
            await wait_for(lambda: len(listener.frames) >= 50 and len(heard) >= 50, 20, "audio both ways")
            engine_heard = np.concatenate(listener.frames[-25:])
            assert level(engine_heard) > 2000 and dominant(engine_heard) == pytest.approx(700, abs=40)
            last = heard[-25:]
            client_pcm = np.concatenate([f.to_ndarray().reshape(-1)[:: len(f.layout.channels)] for f in last])
            assert level(client_pcm) > 2000
            assert dominant(client_pcm, last[0].sample_rate) == pytest.approx(1000, abs=40)
            if opus_only:
                assert leg.counters.resampled > 0
            print(f"codec={leg.browser_codec} engine level={level(engine_heard):.0f} "
                  f"client level={level(client_pcm):.0f} counters={leg.counters}")
            media.close_leg(leg)  # the engine ends the leg: its peer connection closes
            await wait_for(lambda: client.connectionState == "closed", 20, "the client seeing the close")

    asyncio.run(scenario())


def test_the_browser_leaving_is_reported_once_and_closes_the_leg(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with media_engine(tmp_path) as (media, gateway):
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver(ToneTrack(500.0))
            with pinned_host_addresses(["127.0.0.1"]):
                await client.setLocalDescription(await client.createOffer())
            gone: list[WebRtcLeg] = []
            answer, leg = await gateway.answer(client.localDescription.sdp, label="softphone:op1",
                                               on_gone=gone.append)
            await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            media.adopt_leg(leg)
            await wait_for(lambda: leg.counters.received > 10, 20, "audio from the client")
            await client.close()
            await wait_for(lambda: gone == [leg], 20, "the engine noticing the browser left")
            assert leg.closed and id(leg) not in gateway.connections
            with pytest.raises(webrtc.WebRtcError):
                await gateway.answer("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", label="bad")
            with pytest.raises(webrtc.WebRtcError):  # audio, but nothing we can decode
                await gateway.answer(G729_ONLY_OFFER, label="bad")

    asyncio.run(scenario())


def test_a_browser_that_never_connects_counts_as_gone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with media_engine(tmp_path) as (media, gateway):
            gateway.connect_timeout = 1.0
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver(ToneTrack(500.0))
            with pinned_host_addresses(["127.0.0.1"]):
                await client.setLocalDescription(await client.createOffer())
            gone: list[WebRtcLeg] = []
            _, leg = await gateway.answer(client.localDescription.sdp, label="softphone:op1", on_gone=gone.append)
            started = time.monotonic()
            await wait_for(lambda: gone == [leg], 10, "the watchdog")  # the client never applies the answer
            assert leg.closed and time.monotonic() - started < 5
            await client.close()

    asyncio.run(scenario())


G729_ONLY_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 18\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtpmap:18 G729/8000\r\n"
)


# -- real Chromium ---------------------------------------------------------------------------------------------------
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>softphone probe</title></head><body>
<audio id="remote" autoplay></audio>
<script>
window.result = {state: 'starting'};
(async () => {
  try {
    const mic = await navigator.mediaDevices.getUserMedia({audio: true});
    const pc = new RTCPeerConnection({iceServers: []});
    window.pc = pc;
    const transceiver = pc.addTransceiver(mic.getAudioTracks()[0], {direction: 'sendrecv', streams: [mic]});
    const codecs = RTCRtpSender.getCapabilities('audio').codecs;
    const only = new URLSearchParams(location.search).get('only');  // e.g. opus: offer nothing else
    transceiver.setCodecPreferences(only ? codecs.filter((c) => c.mimeType === 'audio/' + only)
      : [...codecs.filter((c) => c.mimeType === 'audio/PCMU'), ...codecs.filter((c) => c.mimeType !== 'audio/PCMU')]);
    pc.ontrack = (event) => {
      document.getElementById('remote').srcObject = event.streams[0] || new MediaStream([event.track]);
    };
    pc.onconnectionstatechange = () => { window.result.connection = pc.connectionState; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    });
    const response = await fetch('/offer', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                            body: JSON.stringify({type: 'offer', sdp: pc.localDescription.sdp})});
    if (!response.ok) throw new Error('offer refused: ' + response.status + ' ' + await response.text());
    await pc.setRemoteDescription(await response.json());
    window.result.state = 'answered';
  } catch (error) {
    window.result = {state: 'error', error: String(error)};
  }
})();
</script></body></html>"""

STATS_JS = """
const done = arguments[arguments.length - 1];
if (!window.pc) { done(null); return; }
window.pc.getStats().then((stats) => {
  const out = {connection: window.pc.connectionState, result: window.result};
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      out.inbound = {packets: r.packetsReceived, energy: r.totalAudioEnergy, level: r.audioLevel};
    }
    if (r.type === 'outbound-rtp' && r.kind === 'audio') out.outbound = {packets: r.packetsSent};
    if (r.type === 'codec') (out.codecs = out.codecs || []).push(r.mimeType);
  });
  done(out);
});
"""


def chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
                 "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
                 "--no-first-run", "--disable-background-networking", "--disable-sync", "--disable-component-update",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(10)
    return driver


class RtpCaller(asyncio.DatagramProtocol):
    """A plain RTP phone on 127.0.0.1: sends a 440 Hz PCMU tone every 20 ms, keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[np.ndarray] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.sequence = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not is_rtcp(data):
            self.received.append(PCMU.decode(RtpPacket.parse(data).payload))

    async def talk(self, to: tuple[str, int]) -> None:
        start = time.monotonic()
        while True:
            n = self.sequence
            packet = RtpPacket(0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0x1234ABCD, PCMU.encode(tone_frame(440.0, n)))
            assert self.transport is not None
            self.transport.sendto(bytes(packet), to)
            self.sequence += 1
            await asyncio.sleep(max(0.0, start + self.sequence * 0.02 - time.monotonic()))


@pytest.mark.parametrize("only", ["", "opus"], ids=["pcmu-preferred", "opus-only"])
def test_chromium_talks_through_the_engine_with_a_plain_rtp_caller(tmp_path: Path, only: str) -> None:
    async def scenario() -> None:
        async with media_engine(tmp_path) as (media, gateway):
            legs: list[WebRtcLeg] = []

            async def offer(request: web.Request) -> web.Response:
                body = await request.json()
                try:
                    answer, leg = await gateway.answer(body["sdp"], label="softphone:chromium")
                except webrtc.WebRtcError as exc:
                    return web.json_response({"error": str(exc), "field": "sdp"}, status=422)
                media.adopt_leg(leg)
                legs.append(leg)
                return web.json_response({"type": "answer", "sdp": answer})

            async def page(request: web.Request) -> web.Response:
                return web.Response(text=PAGE, content_type="text/html")

            app = web.Application()
            app.router.add_get("/", page)
            app.router.add_post("/offer", offer)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

            # the caller: an RTP leg of the engine, and a plain UDP phone talking to it
            caller_leg = media.open_leg("caller@test", "caller")
            loop = asyncio.get_running_loop()
            phone_transport, phone = await loop.create_datagram_endpoint(RtpCaller, local_addr=("127.0.0.1", 0))
            phone_addr = phone_transport.get_extra_info("sockname")
            caller_leg.configure(Negotiated(codec="PCMU", payload_type=0, remote=phone_addr))
            talking = asyncio.ensure_future(phone.talk(("127.0.0.1", caller_leg.port)))

            driver = await asyncio.to_thread(chromium, tmp_path / "profile")
            try:
                await asyncio.to_thread(driver.get, f"http://127.0.0.1:{port}/?only={only}")
                await wait_for(lambda: bool(legs), 30, "Chromium's offer")
                leg = legs[0]
                assert leg.browser_codec == (only or "PCMU")
                media.bridge(caller_leg, leg)
                listener = Listener(media, leg)
                stats: dict[str, Any] = {}

                async def browser_heard_tone() -> bool:
                    stats.update(await asyncio.to_thread(driver.execute_async_script, STATS_JS) or {})
                    inbound = stats.get("inbound") or {}
                    return inbound.get("packets", 0) > 100 and (inbound.get("energy") or 0) > 0.01

                deadline = time.monotonic() + 30
                while not await browser_heard_tone():
                    assert time.monotonic() < deadline, f"Chromium did not hear the caller: {json.dumps(stats)}"
                    await asyncio.sleep(0.3)
                assert stats["result"]["state"] == "answered" and stats["connection"] == "connected"
                assert f"audio/{only or 'PCMU'}" in stats.get("codecs", [])

                def caller_heard_the_beep() -> bool:
                    return any(level(f) > 500 for f in phone.received[-150:])

                await wait_for(caller_heard_the_beep, 20, "the caller hearing Chromium's microphone")
                beep = next(f for f in reversed(phone.received) if level(f) > 500)
                assert abs(dominant(beep) - 440) > 100  # the browser's beep, not the caller's own tone back
                assert any(level(f) > 500 for f in listener.frames)  # the engine saw the browser's audio
                assert leg.counters.received > 50 and leg.counters.sent > 50
                if only == "opus":
                    assert leg.counters.resampled > 0
                print(f"beep at {dominant(beep):.0f} Hz; chromium stats={json.dumps(stats)} caller max level="
                      f"{max(level(f) for f in phone.received):.0f} engine max level="
                      f"{max(level(f) for f in listener.frames):.0f} counters={leg.counters}")
            finally:
                talking.cancel()
                phone_transport.close()
                await asyncio.to_thread(driver.quit)
                await runner.cleanup()

    asyncio.run(scenario())

