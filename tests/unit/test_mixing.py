"""Echo, Bridge (with PCMU/PCMA transcoding and hold music), Conference and RecordingTap on a hand-driven
media clock: every leg has a fake transport and a far-end peer feeding it one frame per tick."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from twisted.internet import task

from callcenter.media.clock import MediaClock
from callcenter.media.g711 import codec_for, transcode
from callcenter.media.mixing import Bridge, Conference, Echo, RecordingTap
from callcenter.media.player import Player
from callcenter.media.prompts import Prompt
from callcenter.media.session import RtpSession
from tests.unit.mediahelpers import FakeUdp, RemotePeer, const_frame, make_session, marked, peak_freqs, tone_pcm


@dataclass
class Leg:
    session: RtpSession
    udp: FakeUdp
    peer: RemotePeer
    sent: list[bytes | None] = field(default_factory=list)  # payload sent on each tick (None: nothing)
    pulled: list[bytes | None] = field(default_factory=list)  # what the leg pulled on each tick

    @property
    def codec(self) -> str:
        return self.session.codec.name


class Rig:
    """N legs on one MediaClock; ``step`` feeds each leg's peer a frame, runs one tick and records."""

    def __init__(self, *codecs: str) -> None:
        self.time = task.Clock()
        self.clock = MediaClock(self.time)
        self.legs: list[Leg] = []
        for i, codec in enumerate(codecs):
            addr = (f"192.0.2.{10 + i}", 40000)
            session, udp, _ = make_session(codec=codec, clock=self.time, role=f"leg{i}", remote=addr)
            peer = RemotePeer(session, addr, pt=codec_for(codec).payload_type, ssrc=0x1000 + i)
            self.clock.add(session)
            self.legs.append(Leg(session, udp, peer))

    def step(self, *frames: bytes | None) -> None:
        for leg, frame in zip(self.legs, frames, strict=False):
            if frame is not None:
                leg.peer.audio(frame)
        self.clock.run_once(self.time.seconds())
        self.time.advance(0.02)
        for leg in self.legs:
            packets = leg.udp.take()
            assert len(packets) <= 1
            leg.sent.append(packets[0].payload if packets else None)
            leg.pulled.append(leg.session.last_received)


def decode(codec: str, payload: bytes) -> np.ndarray:
    return codec_for(codec).decode(payload).astype(np.int32)


# ------------------------------------------------------------------------------------------------ echo


def test_echo_returns_the_callers_frames_one_tick_after_arrival():
    rig = Rig("PCMU")
    leg = rig.legs[0]
    echo = Echo(leg.session)
    rig.clock.add_handler(echo)
    frames = [marked(i) for i in range(1, 9)]
    for f in frames:
        rig.step(f)
    for _ in range(3):
        rig.step(None)
    silence = codec_for("PCMU").silence
    for sent, pulled in zip(leg.sent, leg.pulled, strict=True):
        assert sent == (pulled if pulled is not None else silence)  # sent on the tick that pulled it
    echoed = [s for s in leg.sent if s != silence]
    assert echoed == frames[-len(echoed) :] and len(echoed) >= len(frames) - 1  # in order, none lost once flowing
    first = leg.sent.index(frames[2])
    assert first <= 3  # at most the 40 ms jitter cushion behind its arrival (tick 2)


def test_echo_close_stops_echoing():
    rig = Rig("PCMU")
    leg = rig.legs[0]
    echo = Echo(leg.session)
    rig.clock.add_handler(echo)
    for i in range(4):
        rig.step(marked(i))
    echo.close()
    rig.clock.remove_handler(echo)
    assert leg.session.source is None
    rig.step(marked(9))
    assert leg.sent[-1] == codec_for("PCMU").silence


# ------------------------------------------------------------------------------------------------ bridge


@pytest.mark.parametrize(("codec_a", "codec_b"), [("PCMU", "PCMU"), ("PCMU", "PCMA"), ("PCMA", "PCMU")])
def test_bridge_carries_frames_both_ways_and_transcodes(codec_a, codec_b):
    rig = Rig(codec_a, codec_b)
    a, b = rig.legs
    bridge = Bridge(a.session, b.session)
    rig.clock.add_handler(bridge)
    for i in range(8):
        fa = codec_for(codec_a).encode(tone_pcm((440.0,), 160, 6000, start=160 * i))
        fb = codec_for(codec_b).encode(tone_pcm((1000.0,), 160, 9000, start=160 * i))
        rig.step(fa, fb)
    carried = 0
    for tick in range(8):
        if a.pulled[tick] is not None:
            assert b.sent[tick] == transcode(a.pulled[tick], codec_a, codec_b)
            carried += 1
        if b.pulled[tick] is not None:
            assert a.sent[tick] == transcode(b.pulled[tick], codec_b, codec_a)
    assert carried >= 6
    if codec_a != codec_b:
        assert b.sent[-1] != a.pulled[-1]  # really re-encoded, not passed through


def test_bridge_hold_plays_music_to_the_other_side_and_unhold_restores_it():
    rig = Rig("PCMU", "PCMA")
    a, b = rig.legs
    bridge = Bridge(a.session, b.session)
    rig.clock.add_handler(bridge)
    music = Prompt.from_pcm(np.repeat((np.arange(5) + 1) * 1000, 160).astype(np.int16), "music")
    player = Player("PCMA")
    player.play(music, barge_in=False, loop=True)
    feed = [const_frame(500 * (i + 1), "PCMU") for i in range(14)]
    feed_b = [const_frame(-700 * (i + 1), "PCMA") for i in range(14)]
    for i in range(3):
        rig.step(feed[i], feed_b[i])
    bridge.hold(a.session, player)  # the caller put the call on hold: the other side hears music
    for i in range(3, 10):
        rig.step(feed[i], feed_b[i])
    assert b.sent[3:10] == [music.frames("PCMA")[k % 5] for k in range(7)]  # looping music, not the caller
    for tick in range(3, 10):  # the holder still hears the other side
        if b.pulled[tick] is not None:
            assert a.sent[tick] == transcode(b.pulled[tick], "PCMA", "PCMU")
    bridge.unhold(a.session)
    for i in range(10, 14):
        rig.step(feed[i], feed_b[i])
    for tick in range(10, 14):
        assert b.pulled[tick] is not None and a.pulled[tick] is not None
        assert b.sent[tick] == transcode(a.pulled[tick], "PCMU", "PCMA")
    bridge.hold(b.session, None)  # no music given: nothing changes
    assert bridge.hold_sources == {}


def test_bridge_close_leaves_no_stale_audio_behind():
    """A prompt wrapper that falls back to the bridge's source must not repeat the last frame forever."""
    rig = Rig("PCMU", "PCMU")
    a, b = rig.legs
    bridge = Bridge(a.session, b.session)
    rig.clock.add_handler(bridge)
    player = Player("PCMU")
    player.play(Prompt.from_pcm(np.full(1600, 3000, dtype=np.int16), "music"), barge_in=False, loop=True)
    bridge.hold(b.session, player)
    fallback = a.session.source
    assert fallback is not None
    a.session.source = lambda: fallback()  # e.g. MediaService.play() while bridged
    for i in range(4):
        rig.step(marked(i), marked(0x80 + i))
    rig.clock.remove_handler(bridge)
    bridge.close()
    assert b.session.source is None
    for _ in range(3):
        rig.step(None, None)
    silence = codec_for("PCMU").silence
    assert a.sent[-3:] == [silence] * 3 and b.sent[-3:] == [silence] * 3


# ------------------------------------------------------------------------------------------------ conference


def test_conference_each_hears_the_sum_of_the_others_exactly():
    rig = Rig("PCMU", "PCMU", "PCMA")
    conference = Conference([leg.session for leg in rig.legs])
    rig.clock.add_handler(conference)
    values = (1000, 2000, -4000)
    for _ in range(6):
        rig.step(*(const_frame(v, leg.codec) for v, leg in zip(values, rig.legs, strict=True)))
    tick = 5
    heard = [decode(leg.codec, leg.pulled[tick]) for leg in rig.legs]  # type: ignore[arg-type]
    for i, leg in enumerate(rig.legs):
        others = sum(h for j, h in enumerate(heard) if j != i)
        expected = codec_for(leg.codec).encode(np.clip(others, -32768, 32767).astype(np.int16))
        assert leg.sent[tick] == expected
        mean = decode(leg.codec, leg.sent[tick]).mean()  # type: ignore[arg-type]
        assert abs(mean - sum(v for j, v in enumerate(values) if j != i)) < 200  # never itself
    assert decode("PCMA", rig.legs[2].sent[tick]).mean() > 2500  # 1000 + 2000, without its own -4000


def test_conference_with_distinct_tones_nobody_hears_themselves():
    rig = Rig("PCMU", "PCMA", "PCMU")
    conference = Conference([leg.session for leg in rig.legs])
    rig.clock.add_handler(conference)
    freqs = (440.0, 1000.0, 1800.0)
    for i in range(20):
        rig.step(*(codec_for(leg.codec).encode(tone_pcm((f,), 160, 5000, start=160 * i))
                   for f, leg in zip(freqs, rig.legs, strict=True)))  # fmt: skip
    for i, leg in enumerate(rig.legs):
        pcm = np.concatenate([codec_for(leg.codec).decode(p) for p in leg.sent[6:] if p is not None])
        others = sorted(f for j, f in enumerate(freqs) if j != i)
        peaks = peak_freqs(pcm, 2)
        assert all(abs(p - o) < 20 for p, o in zip(peaks, others, strict=True)), (peaks, others)
        spectrum = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm))))
        bins = np.fft.rfftfreq(len(pcm), 1 / 8000)
        own = spectrum[np.abs(bins - freqs[i]) < 15].max()
        assert own < spectrum.max() / 100  # its own tone is at least 40 dB down


def test_conference_clips_to_16_bits():
    rig = Rig("PCMU", "PCMU", "PCMU")
    conference = Conference([leg.session for leg in rig.legs])
    rig.clock.add_handler(conference)
    for _ in range(4):
        rig.step(const_frame(20000), const_frame(20000), const_frame(-30000))
    tick = 3
    assert rig.legs[2].sent[tick] == const_frame(32767)  # 20000 + 20000 clips high
    low = decode("PCMU", const_frame(20000))[0] + decode("PCMU", const_frame(-30000))[0]
    assert rig.legs[0].sent[tick] == const_frame(low)  # no clipping needed: the exact sum
    for _ in range(3):
        rig.step(const_frame(-30000), const_frame(-30000), const_frame(0))
    assert rig.legs[2].sent[-1] == const_frame(-32768)  # and low


def test_conference_silent_members_and_membership_changes():
    rig = Rig("PCMU", "PCMU", "PCMU")
    a, b, c = rig.legs
    conference = Conference([a.session, b.session])
    rig.clock.add_handler(conference)
    for _ in range(4):
        rig.step(const_frame(1000), None, const_frame(3000))
    silence = codec_for("PCMU").silence
    assert a.sent[-1] == silence  # b says nothing: a hears silence, not itself
    assert b.sent[-1] == const_frame(1000)
    assert c.sent[-1] == silence  # c is not in the conference yet
    conference.add(c.session)
    conference.add(c.session)  # twice is once
    assert conference.members == [a.session, b.session, c.session]
    for _ in range(2):
        rig.step(const_frame(1000), None, const_frame(3000))
    assert b.sent[-1] == codec_for("PCMU").encode(
        np.full(160, decode("PCMU", const_frame(1000))[0] + decode("PCMU", const_frame(3000))[0], dtype=np.int16)
    )
    conference.remove(a.session)
    assert a.session.source is None
    rig.step(const_frame(1000), None, const_frame(3000))
    assert b.sent[-1] == const_frame(3000) and c.sent[-1] == silence
    conference.close()
    assert conference.members == [] and b.session.source is None and c.session.source is None


# ------------------------------------------------------------------------------------------------ recording tap


class FakeRecorder:
    def __init__(self) -> None:
        self.writes: list[tuple[np.ndarray | None, np.ndarray | None]] = []

    def write(self, left: np.ndarray | None, right: np.ndarray | None) -> None:
        self.writes.append((None if left is None else left.copy(), None if right is None else right.copy()))


def test_recording_tap_caller_left_what_the_caller_heard_right():
    rig = Rig("PCMA", "PCMU")
    caller, operator = rig.legs
    bridge = Bridge(caller.session, operator.session)
    rig.clock.add_handler(bridge)
    recorder = FakeRecorder()
    tap = RecordingTap(caller.session, recorder)
    rig.clock.after_tick.append(tap.after_tick)
    for i in range(8):
        rig.step(const_frame(1000 + 100 * i, "PCMA"), const_frame(-2000 - 100 * i, "PCMU"))
    assert len(recorder.writes) == 8
    for tick, (left, right) in enumerate(recorder.writes):
        pulled, sent = caller.pulled[tick], caller.sent[tick]
        if pulled is None:
            assert left is None
        else:
            assert np.array_equal(left, codec_for("PCMA").decode(pulled))
        if operator.pulled[tick] is None:
            assert right is None  # the caller heard silence
        else:
            assert sent is not None
            assert np.array_equal(right, codec_for("PCMA").decode(sent))
            assert right.mean() < 0 < (left.mean() if left is not None else 1)  # the operator's voice, not the caller's
    tap.paused = True
    rig.step(const_frame(1000, "PCMA"), const_frame(1000, "PCMU"))
    assert len(recorder.writes) == 8


def test_recording_tap_hears_dtmf_ticks_as_silence():
    rig = Rig("PCMU")
    leg = rig.legs[0]
    leg.session.source = lambda: const_frame(4000)
    recorder = FakeRecorder()
    rig.clock.after_tick.append(RecordingTap(leg.session, recorder).after_tick)
    rig.step(None)
    assert leg.session.send_dtmf("1")
    rig.step(None)
    (_, right_audio), (_, right_dtmf) = recorder.writes
    assert right_audio is not None and right_audio.mean() > 3000
    assert right_dtmf is None


# ------------------------------------------------------------------------------------------------ media clock


def test_clock_runs_pull_handlers_send_then_taps_in_that_order():
    rig = Rig("PCMU")
    leg = rig.legs[0]
    order: list[str] = []

    class Handler:
        def on_tick(self) -> None:
            order.append(f"handler saw pulled={leg.session.last_received is not None}")

    leg.session.source = lambda: order.append("send") or None  # type: ignore[func-returns-value]
    rig.clock.add_handler(Handler())
    rig.clock.after_tick.append(lambda: order.append("tap"))
    for i in range(3):
        rig.step(marked(i))
    assert order[-3:] == ["handler saw pulled=True", "send", "tap"]
    assert rig.clock.ticks == 3


def test_one_failing_leg_or_handler_does_not_stop_the_clock():
    rig = Rig("PCMU", "PCMU")
    bad, good = rig.legs

    def explode() -> bytes:
        raise RuntimeError("a bug in one call's flow")

    class BadHandler:
        def on_tick(self) -> None:
            raise RuntimeError("handler bug")

    bad.session.source = explode
    rig.clock.add_handler(BadHandler())
    rig.clock.after_tick.append(lambda: 1 / 0)
    good.session.source = lambda: marked(7)
    rig.step(None, None)
    rig.step(None, None)
    assert good.sent == [marked(7), marked(7)]
    assert rig.clock.ticks == 2


def test_clock_start_stop_on_a_fake_reactor():
    time = task.Clock()
    clock = MediaClock(time)
    session, udp, _ = make_session(clock=time)
    clock.add(session)
    clock.start()
    clock.start()  # idempotent
    time.advance(0.02)
    time.advance(0.02)
    assert clock.ticks >= 2 and len(udp.rtp()) == clock.ticks
    clock.stop()
    clock.stop()
    ticks = clock.ticks
    time.advance(0.1)
    assert clock.ticks == ticks
    clock.remove(session)
    clock.remove(session)
    assert clock.sessions == {}
