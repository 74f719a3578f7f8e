"""WebRtcLeg without a network: frames in (any rate → 8 kHz PCMU, bounded queue, prebuffer, underruns), frames out
(the aiortc track paced by the media clock), and the leg inside a real MediaService (bridge with an RTP leg,
prompts, conference, recording tap, replacing a leg mid-call). Peer connections are in the integration tests."""

from __future__ import annotations

import asyncio
import fractions
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from callcenter.media import webrtc
from callcenter.media.g711 import codec_for, transcode
from callcenter.media.mixing import Bridge, Conference
from callcenter.media.prompts import Prompt, PromptCache
from callcenter.media.service import MediaService
from callcenter.media.session import Negotiated
from callcenter.media.webrtc import MAX_QUEUED, PREBUFFER, WebRtcLeg, pinned_host_addresses
from tests.unit.mediahelpers import TE_PT, FakeReactor, RemotePeer, const_frame, peak_freqs, tone_pcm

PCMU = codec_for("PCMU")
PCMA_SILENCE = int(codec_for("PCMA").decode(codec_for("PCMA").silence)[0])  # A-law has no exact zero


def frame_of(pcm: np.ndarray, rate: int = 8000, layout: str = "mono", pts: int = 0) -> av.AudioFrame:
    data = pcm.reshape(1, -1) if layout == "mono" else np.repeat(pcm, 2).reshape(1, -1)  # packed stereo: L R L R
    frame = av.AudioFrame.from_ndarray(data.astype(np.int16), format="s16", layout=layout)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame


def browser_to_pcma(value: int) -> int:
    """What a PCMA caller hears of a browser's sample: our PCMU encoding, transcoded to A-law."""
    return int(codec_for("PCMA").decode(transcode(PCMU.encode(const(value)), "PCMU", "PCMA"))[0])


def const(value: int, samples: int = 160) -> np.ndarray:
    return np.full(samples, value, dtype=np.int16)


def drain(leg: WebRtcLeg) -> list[av.AudioFrame]:
    """Every frame the outgoing track holds, as aiortc's sender would take them."""
    async def take() -> list[av.AudioFrame]:
        frames = []
        while leg.track._frames:
            frames.append(await leg.track.recv())
        return frames

    return asyncio.run(take())


# -- in: the browser's microphone ------------------------------------------------------------------------------
def test_8khz_frames_come_out_as_pcmu_one_per_tick_after_the_prebuffer() -> None:
    leg = WebRtcLeg("softphone:op1")
    leg.feed(frame_of(const(1000)))
    assert leg.pull() is None  # 20 ms queued: still building the cushion
    assert leg.counters.underruns == 1
    leg.feed(frame_of(const(2000)))
    leg.feed(frame_of(const(3000)))
    first = leg.pull()
    assert first == PCMU.encode(const(1000))
    assert np.array_equal(leg.decoded(), PCMU.decode(first))
    assert leg.pull() == PCMU.encode(const(2000))
    assert leg.pull() == PCMU.encode(const(3000))
    assert leg.pull() is None and leg.decoded().any() == False  # noqa: E712  # silence on an underrun
    assert leg.counters.received == 3 and leg.counters.underruns == 2 and leg.counters.resampled == 0


def test_nothing_heard_yet_is_not_an_underrun() -> None:
    leg = WebRtcLeg("softphone:op1")
    for _ in range(10):
        assert leg.pull() is None
    assert leg.counters.underruns == 0


def test_any_frame_size_is_cut_into_20ms_frames() -> None:
    leg = WebRtcLeg("softphone:op1")
    pcm = np.arange(480, dtype=np.int16) * 8  # 60 ms in frames of 10 ms (80) and 30 ms (240) and 20 ms (160)
    for chunk in (pcm[:80], pcm[80:320], pcm[320:]):
        leg.feed(frame_of(chunk))
    out = [leg.pull() for _ in range(3)]
    assert b"".join(p for p in out if p is not None) == PCMU.encode(pcm)


def test_the_queue_keeps_the_newest_100ms_and_counts_what_it_drops() -> None:
    leg = WebRtcLeg("softphone:op1")
    for n in range(12):
        leg.feed(frame_of(const(100 * (n + 1))))
    assert leg.counters.dropped_late == 12 - MAX_QUEUED
    got = [leg.pull() for _ in range(MAX_QUEUED)]
    assert got == [PCMU.encode(const(100 * (n + 1))) for n in range(12 - MAX_QUEUED, 12)]
    assert leg.pull() is None


def test_after_an_underrun_playout_waits_for_the_cushion_again() -> None:
    leg = WebRtcLeg("softphone:op1")
    for value in (1, 2):
        leg.feed(frame_of(const(value * 1000)))
    assert leg.pull() is not None and leg.pull() is not None
    assert leg.pull() is None  # underrun
    leg.feed(frame_of(const(5000)))
    assert leg.pull() is None  # one frame is not a cushion
    leg.feed(frame_of(const(6000)))
    assert leg.pull() == PCMU.encode(const(5000))
    assert PREBUFFER == 2


@pytest.mark.parametrize(("rate", "layout"), [(48000, "stereo"), (48000, "mono"), (16000, "mono")])
def test_opus_rates_are_resampled_to_8khz(rate: int, layout: str) -> None:
    """Opus arrives decoded at 48 kHz stereo (aiortc): a 1 kHz tone stays a 1 kHz tone at the same level."""
    leg = WebRtcLeg("softphone:op1")
    per_frame = rate // 50
    t = np.arange(per_frame * 25) / rate
    tone = np.round(8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    pulled = []
    for n in range(25):
        leg.feed(frame_of(tone[n * per_frame:(n + 1) * per_frame], rate, layout, pts=n * per_frame))
        pulled.append(leg.pull())
    assert leg.counters.resampled == 25
    assert leg.counters.received >= 23  # the resampler's filter delay may hold back a few samples
    frames = [p for p in pulled if p is not None]
    assert len(frames) >= 20 and all(len(p) == 160 for p in frames)
    pcm = PCMU.decode(b"".join(frames[-10:]))
    assert peak_freqs(pcm, 1) == [pytest.approx(1000, abs=60)]
    rms = np.sqrt(np.mean(pcm.astype(float) ** 2))
    assert rms == pytest.approx(8000 / np.sqrt(2), rel=0.1)


def test_a_change_of_codec_mid_call_restarts_the_resampler() -> None:
    leg = WebRtcLeg("softphone:op1")
    leg.feed(frame_of(const(1000, 960), 48000, "stereo"))
    leg.feed(frame_of(const(1000, 320), 16000, "mono"))
    leg.feed(frame_of(const(1000, 160)))
    assert leg.counters.resampled == 2 and leg.counters.received >= 2


# -- out: what the browser hears ---------------------------------------------------------------------------------
def test_each_tick_sends_the_source_as_an_8khz_frame_with_running_pts() -> None:
    leg = WebRtcLeg("softphone:op1")
    frames = iter([const_frame(1000), None, const_frame(-2000)])
    leg.source = lambda: next(frames)
    for _ in range(3):
        leg.tick(0.0)
    assert leg.last_sent == const_frame(-2000)
    out = drain(leg)
    assert [f.pts for f in out] == [0, 160, 320]
    assert all(f.sample_rate == 8000 and f.format.name == "s16" and f.layout.name == "mono" and f.samples == 160
               and f.time_base == fractions.Fraction(1, 8000) for f in out)
    values = [int(f.to_ndarray()[0, 0]) for f in out]
    assert values == [int(PCMU.decode(const_frame(1000))[0]), 0, int(PCMU.decode(const_frame(-2000))[0])]
    assert leg.counters.sent == 3


def test_frames_the_sender_does_not_take_are_dropped_oldest_first() -> None:
    leg = WebRtcLeg("softphone:op1")
    values = iter(range(1, 100))
    leg.source = lambda: const_frame(next(values) * 100)
    for _ in range(8):
        leg.tick(0.0)
    assert leg.counters.dropped_outgoing == 8 - MAX_QUEUED
    out = drain(leg)
    assert [int(f.to_ndarray()[0, 0]) for f in out] == [int(PCMU.decode(const_frame(v * 100))[0])
                                                         for v in range(9 - MAX_QUEUED, 9)]


def test_recv_waits_for_the_next_tick_and_close_ends_it() -> None:
    async def scenario() -> None:
        leg = WebRtcLeg("softphone:op1")
        waiting = asyncio.ensure_future(leg.track.recv())
        await asyncio.sleep(0)
        assert not waiting.done()
        leg.tick(0.0)
        frame = await asyncio.wait_for(waiting, 1)
        assert frame.samples == 160 and not frame.to_ndarray().any()  # silence: no source
        blocked = asyncio.ensure_future(leg.track.recv())
        await asyncio.sleep(0)
        closed: list[bool] = []
        leg.on_close = lambda: closed.append(True)
        leg.close()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(blocked, 1)
        assert closed == [True] and leg.closed
        leg.close()  # twice is harmless
        assert closed == [True]
        leg.tick(0.0)
        leg.feed(frame_of(const(1000)))
        assert leg.pull() is None and leg.last_sent is None

    asyncio.run(scenario())


def test_the_reader_task_feeds_the_queue_from_a_track() -> None:
    class Track:
        def __init__(self, frames: list[av.AudioFrame]) -> None:
            self.frames = frames

        async def recv(self) -> av.AudioFrame:
            if not self.frames:
                raise MediaStreamError
            return self.frames.pop(0)

    async def scenario() -> WebRtcLeg:
        leg = WebRtcLeg("softphone:op1")
        leg.read_from(Track([frame_of(const(500 * n)) for n in range(1, 4)]))  # type: ignore[arg-type]
        for _ in range(10):
            await asyncio.sleep(0)
        return leg

    leg = asyncio.run(scenario())
    assert leg.counters.received == 3
    assert leg.pull() == PCMU.encode(const(500))


# -- inside the media service --------------------------------------------------------------------------------------
class Rig:
    def __init__(self, root: Path) -> None:
        self.reactor = FakeReactor()
        self.service = MediaService(self.reactor, address="127.0.0.1", port_min=20000, port_max=20010,
                                    prompts=PromptCache(root / "prompts"), recordings_root=root / "recordings")

    def rtp_leg(self, n: int = 0, codec: str = "PCMA") -> tuple[object, RemotePeer]:
        session = self.service.open_leg(f"caller-{n}@example", "caller")
        addr = (f"192.0.2.{10 + n}", 40000 + 2 * n)
        pt = codec_for(codec).payload_type
        session.configure(Negotiated(codec=codec, payload_type=pt, telephone_event_pt=TE_PT, remote=addr))
        return session, RemotePeer(session, addr, pt=pt, ssrc=0x7000 + n)

    def browser(self, name: str = "op1") -> WebRtcLeg:
        leg = WebRtcLeg(f"softphone:{name}")
        self.service.adopt_leg(leg)
        return leg

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.service.clock.run_once(self.reactor.seconds())
            self.reactor.advance(0.02)


def sent_values(session: object) -> list[int]:
    return [int(codec_for(session.codec.name).decode(p.payload)[0])  # type: ignore[attr-defined]
            for p in session.transport.take()]  # type: ignore[attr-defined]


def test_a_bridge_carries_audio_both_ways_between_an_rtp_caller_and_the_browser(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    caller, peer = rig.rtp_leg(codec="PCMA")  # transcoded PCMA ↔ PCMU on the way
    browser = rig.browser()
    bridge = rig.service.bridge(caller, browser)  # type: ignore[arg-type]
    assert isinstance(bridge, Bridge)
    for _ in range(6):
        peer.audio(const_frame(4000, "PCMA"))
        browser.feed(frame_of(const(-3000)))
        rig.tick()
    heard_by_browser = [int(f.to_ndarray()[0, 0]) for f in drain(browser)]
    assert heard_by_browser[-1] == int(PCMU.decode(const_frame(4000, "PCMU"))[0])
    heard_by_caller = sent_values(caller)
    assert heard_by_caller[-1] == browser_to_pcma(-3000)
    assert rig.service.stats()["legs"] == 2
    ports = rig.service.pool.in_use
    rig.service.close_leg(browser)  # the browser's leg ends: the caller hears silence, the service forgets it
    assert rig.service.pool.in_use == ports == 1  # no RTP port was the browser's: the caller keeps its own
    rig.tick(2)
    assert sent_values(caller)[-1] == PCMA_SILENCE and browser.closed and rig.service.stats()["legs"] == 1


def test_prompts_and_a_recording_tap_work_on_the_browser_leg(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    browser = rig.browser()
    rig.service.play(browser, Prompt.from_pcm(np.repeat(np.array([1000, 2000], dtype=np.int16), 160), "p"))
    rig.tick(3)
    values = [int(f.to_ndarray()[0, 0]) for f in drain(browser)]
    assert values[:2] == [int(PCMU.decode(const_frame(v))[0]) for v in (1000, 2000)] and values[2] == 0
    path = rig.service.start_recording(browser)
    for _ in range(3):
        browser.feed(frame_of(const(1500)))
        rig.tick()
    info = rig.service.stop_recording(browser)
    assert info is not None and info.path == path and info.seconds > 0


def test_a_conference_mixes_the_browser_with_two_rtp_legs(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (elder, elder_peer), (ambulance, ambulance_peer) = rig.rtp_leg(1, "PCMU"), rig.rtp_leg(2, "PCMU")
    browser = rig.browser()
    conference = rig.service.conference([elder, ambulance, browser])  # type: ignore[list-item]
    assert isinstance(conference, Conference)
    for _ in range(5):
        elder_peer.audio(const_frame(1000))
        ambulance_peer.audio(const_frame(2000))
        browser.feed(frame_of(const(4000)))
        rig.tick()
    heard = int(drain(browser)[-1].to_ndarray()[0, 0])
    assert heard == pytest.approx(1000 + 2000, abs=120)
    assert sent_values(elder)[-1] == pytest.approx(2000 + 4000, abs=250)


def test_a_new_browser_leg_takes_over_the_bridge_with_its_hold_state(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    caller, peer = rig.rtp_leg()
    old = rig.browser()
    bridge = rig.service.bridge(caller, old)  # type: ignore[arg-type]
    music = object()
    bridge.hold_sources[id(old)] = music
    new = rig.browser()
    assert rig.service.replace_leg(old, new)
    rig.service.close_leg(old)
    handler = rig.service._legs[id(new)].handler
    assert isinstance(handler, Bridge) and handler.caller is caller and handler.other is new
    assert handler.hold_sources == {id(new): music}
    del handler.hold_sources[id(new)]
    for _ in range(4):
        peer.audio(const_frame(3000, "PCMA"))
        new.feed(frame_of(const(-1000)))
        rig.tick()
    assert int(drain(new)[-1].to_ndarray()[0, 0]) == int(PCMU.decode(const_frame(3000))[0])  # PCMA → PCMU
    assert sent_values(caller)[-1] == browser_to_pcma(-1000)
    assert not rig.service.replace_leg(rig.browser("op2"), rig.browser("op3"))  # in no bridge: nothing


def test_a_new_browser_leg_takes_over_a_conference_seat(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (a, _), (b, _) = rig.rtp_leg(1), rig.rtp_leg(2)
    old = rig.browser()
    conference = rig.service.conference([a, b, old])  # type: ignore[list-item]
    new = rig.browser()
    assert rig.service.replace_leg(old, new)
    rig.service.close_leg(old)
    assert conference.members == [a, b, new]


def test_a_new_browser_leg_stays_muted_and_on_the_operators_hold(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    caller, peer = rig.rtp_leg()
    old = rig.browser()
    rig.service.adopt_leg(old)  # adopting twice changes nothing
    rig.service.bridge(caller, old)  # type: ignore[arg-type]
    rig.service.mute(old, True)  # type: ignore[arg-type]
    assert rig.service.hold_leg(old, True)  # type: ignore[arg-type]
    new = rig.browser()
    assert rig.service.replace_leg(old, new)  # type: ignore[arg-type]
    rig.service.close_leg(old)  # type: ignore[arg-type]
    bridge = rig.service._legs[id(new)].handler
    assert isinstance(bridge, Bridge) and bridge.deaf == {id(new)} and set(bridge.hold_sources) == {id(new)}
    assert rig.service.is_muted(new) and not rig.service.is_muted(old)  # type: ignore[arg-type]
    for _ in range(3):
        peer.audio(const_frame(3000, "PCMA"))
        new.feed(frame_of(const(2000)))
        rig.tick()
    assert not any(f.to_ndarray().any() for f in drain(new))  # on hold: the operator hears silence
    assert rig.service.hold_leg(new, False)  # type: ignore[arg-type]
    for _ in range(3):
        peer.audio(const_frame(3000, "PCMA"))
        new.feed(frame_of(const(2000)))
        rig.tick()
    assert set(sent_values(caller)[-2:]) == {PCMA_SILENCE}  # still muted: the caller does not hear the operator
    assert int(drain(new)[-1].to_ndarray()[0, 0]) != 0
    assert rig.service.stats()["legs"] == 2 and rig.service.pool.in_use == 1


def test_detach_leaves_the_caller_in_silence_and_the_leg_open(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    caller, peer = rig.rtp_leg()
    browser = rig.browser()
    rig.service.bridge(caller, browser)  # type: ignore[arg-type]
    rig.service.detach_leg(browser)  # type: ignore[arg-type]
    for _ in range(3):
        peer.audio(const_frame(3000, "PCMA"))
        browser.feed(frame_of(const(2000)))
        rig.tick()
    assert set(sent_values(caller)) == {PCMA_SILENCE}
    assert not any(f.to_ndarray().any() for f in drain(browser))
    assert rig.service.is_open(browser)  # type: ignore[arg-type]


def test_pinned_host_addresses_replace_aioices_choice_in_their_context_only() -> None:
    import aioice.ice

    default = aioice.ice.get_host_addresses(True, False)
    assert "127.0.0.1" not in default
    with pinned_host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    assert aioice.ice.get_host_addresses(True, False) == default
    with pinned_host_addresses([]):
        assert aioice.ice.get_host_addresses(True, False) == default


def test_tone_helper_sanity() -> None:  # the peak finder the resampling test relies on
    assert peak_freqs(tone_pcm((1000.0,), 800, 5000), 1) == [pytest.approx(1000, abs=20)]


def test_the_gateway_takes_its_ice_servers_and_host_addresses_from_configuration(tmp_path: Path) -> None:
    from callcenter.config import load_config

    path = tmp_path / "webrtc.yaml"
    path.write_text("webrtc:\n  host_addresses: [192.0.2.2]\n  ice_servers:\n    - urls: stun:stun.example.org:3478\n"
                    "    - {urls: [turn:turn.example.org:3478], username: u, credential: p}\n")
    gateway = webrtc.WebRtcGateway(load_config(path, env={}).webrtc)
    assert [(s.urls, s.username, s.credential) for s in gateway.ice_servers] == [
        (["stun:stun.example.org:3478"], None, None), (["turn:turn.example.org:3478"], "u", "p")]
    assert gateway.host_addresses == ("192.0.2.2",)
    default = webrtc.WebRtcGateway(None)
    assert default.ice_servers == [] and default.host_addresses == ()  # never Google's STUN server by default
