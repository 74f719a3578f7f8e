"""MediaService on a fake reactor: ports, prompts and music on hold, digit collection, echo/bridge/conference
handlers, recordings, RTCP reports and stats. The media clock is stepped by hand with ``run_once``."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from twisted.internet.error import InvalidAddressError

from callcenter.media.dtmf import DtmfDigit
from callcenter.media.g711 import codec_for, transcode
from callcenter.media.mixing import Bridge, Conference, Echo
from callcenter.media.ports import PortsExhausted
from callcenter.media.prompts import Prompt, PromptCache, hold_music
from callcenter.media.recorder import RecordingInfo
from callcenter.media.rtp import SenderReport, parse_rtcp
from callcenter.media.service import DigitResult, MediaService
from callcenter.media.session import Negotiated, RtpSession
from tests.unit.mediahelpers import TE_PT, FakeReactor, FakeUdp, RemotePeer, const_frame, marked

STARTED = datetime(2026, 11, 23, 15, 4, 5, tzinfo=UTC)


@dataclass
class Leg:
    session: RtpSession
    udp: FakeUdp
    peer: RemotePeer


class Rig:
    def __init__(self, root: Path, port_min: int = 20000, port_max: int = 20010, busy: set[int] | None = None) -> None:
        self.reactor = FakeReactor(busy)
        self.root = root / "recordings"
        self.service = MediaService(
            self.reactor, address="127.0.0.1", port_min=port_min, port_max=port_max,
            prompts=PromptCache(root / "prompt-cache"), recordings_root=self.root,
        )  # fmt: skip
        self.count = 0

    def leg(self, call_id: str = "call-1@example", role: str = "caller", codec: str = "PCMU") -> Leg:
        session = self.service.open_leg(call_id, role)
        addr = (f"192.0.2.{10 + self.count}", 40000 + 2 * self.count)
        self.count += 1
        pt = codec_for(codec).payload_type
        session.configure(Negotiated(codec=codec, payload_type=pt, telephone_event_pt=TE_PT, remote=addr))
        assert isinstance(session.transport, FakeUdp)
        return Leg(session, session.transport, RemotePeer(session, addr, pt=pt, ssrc=0x7000 + self.count))

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.service.clock.run_once(self.reactor.seconds())
            self.reactor.advance(0.02)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def sent_payloads(leg: Leg) -> list[bytes]:
    return [p.payload for p in leg.udp.take()]


def ramp(name: str, frames: int, base: int = 0) -> Prompt:
    """Frame i holds the constant (base + i + 1) * 100: every frame is recognisable."""
    return Prompt.from_pcm(np.repeat((base + np.arange(frames) + 1) * 100, 160).astype(np.int16), name)


def collect(rig: Rig, leg: Leg, **kwargs: object) -> list[DigitResult]:
    results: list[DigitResult] = []
    rig.service.collect_digits(leg.session, **kwargs).addCallback(results.append)  # type: ignore[arg-type]
    return results


def press(rig: Rig, leg: Leg, digits: str) -> None:
    for d in digits:
        rig.service.inject_digit(leg.session, DtmfDigit(d, 100, "info"))


# ------------------------------------------------------------------------------------------------ ports


def test_open_leg_binds_rtp_and_rtcp_and_close_leg_releases_them(rig):
    a = rig.leg()
    b = rig.leg(role="operator")
    assert (a.session.port, b.session.port) == (20000, 20002)
    assert sorted(rig.reactor.bound) == [20000, 20001, 20002, 20003]
    assert set(rig.reactor.interfaces) == {"127.0.0.1"}
    assert rig.reactor.bound[20000].protocol is a.session
    assert a.session.clock is rig.reactor and a.session in rig.service.clock.sessions.values()
    assert rig.service.pool.in_use == 2
    # the RTCP port hands reports to its session
    rig.reactor.bound[20001].protocol.datagramReceived(bytes(SenderReport(1, 0, 0, 0, 0)), a.peer.addr)
    assert a.session.counters.rtcp_received == 1
    rtp_port, rtcp_port = rig.reactor.bound[20000], rig.reactor.bound[20001]
    rig.service.close_leg(a.session)
    assert rtp_port.stopped and rtcp_port.stopped
    assert sorted(rig.reactor.bound) == [20002, 20003]
    assert rig.service.pool.in_use == 1 and a.session.closed
    assert a.session not in rig.service.clock.sessions.values()
    rig.service.close_leg(a.session)  # twice is harmless
    with pytest.raises(KeyError):
        rig.service.play(a.session, ramp("p", 1))


def test_ports_exhausted_when_the_pool_is_empty(tmp_path):
    rig = Rig(tmp_path, port_min=20000, port_max=20002)  # one RTP/RTCP pair
    a = rig.leg()
    with pytest.raises(PortsExhausted):
        rig.service.open_leg("call-2", "caller")
    rig.service.close_leg(a.session)
    assert rig.leg("call-3").session.port == 20000


def test_a_port_taken_by_another_process_is_skipped(tmp_path):
    rig = Rig(tmp_path, port_min=20000, port_max=20006, busy={20000, 20003})
    a = rig.leg()
    assert a.session.port == 20002  # 20000 belongs to someone else
    assert 20003 not in rig.reactor.bound  # RTCP is best effort: the leg works without it
    assert rig.service.pool.in_use == 1  # the busy port went back to the pool
    rig.tick()
    assert len(a.udp.rtp()) == 1
    rig.service.close_leg(a.session)
    assert rig.reactor.bound == {} and rig.service.pool.in_use == 0


# ------------------------------------------------------------------------------------------------ prompts


def test_play_sends_the_prompt_then_falls_back_to_the_previous_source(rig):
    leg = rig.leg()
    leg.session.source = lambda: marked(0x55)
    prompt = ramp("welcome", 3)
    playback = rig.service.play(leg.session, prompt)
    rig.tick(5)
    assert sent_payloads(leg) == prompt.frames("PCMU") + [marked(0x55)] * 2
    assert playback.done and playback.reason == "finished"
    again = rig.service.play(leg.session, prompt)  # a second prompt falls back to the same source
    rig.tick(4)
    assert sent_payloads(leg) == prompt.frames("PCMU") + [marked(0x55)]
    assert again.reason == "finished"


def test_play_in_the_legs_codec(rig):
    leg = rig.leg(codec="PCMA")
    prompt = ramp("p", 2)
    rig.service.play(leg.session, prompt)
    rig.tick(3)
    assert sent_payloads(leg) == prompt.frames("PCMA") + [codec_for("PCMA").silence]


def test_many_prompts_do_not_nest_sources(rig):
    """An IVR replaying its menu for an hour: each play() must not wrap the previous wrapper again."""
    leg = rig.leg()
    leg.session.source = lambda: marked(0x55)
    prompt = ramp("beep", 1)
    for _ in range(1100):
        rig.service.play(leg.session, prompt)
        rig.tick()
    leg.udp.take()
    rig.tick()
    assert sent_payloads(leg) == [marked(0x55)]


def test_stop_playing_falls_back_at_once(rig):
    leg = rig.leg()
    leg.session.source = lambda: marked(0x55)
    playback = rig.service.play(leg.session, ramp("long", 50))
    rig.tick(2)
    rig.service.stop_playing(leg.session)
    rig.tick()
    assert sent_payloads(leg)[-1] == marked(0x55) and playback.reason == "stopped"


def test_music_on_hold_loops(rig):
    leg = rig.leg()
    playback = rig.service.music_on_hold(leg.session)
    frames = hold_music().frames("PCMU")
    rig.tick(len(frames) + 2)
    sent = sent_payloads(leg)
    assert sent == frames + frames[:2]
    assert not playback.done and playback.loop and not playback.barge_in


# ------------------------------------------------------------------------------------------------ digits


def test_collect_max_digits_from_rtp_events(rig):
    leg = rig.leg()
    leg.peer.audio(marked(1))
    leg.peer.audio(marked(2))
    results = collect(rig, leg, max_digits=3)
    for d in "123":
        leg.peer.event(d)
    leg.peer.event("4")  # after the collector is done: type-ahead for the next one
    assert results == [DigitResult("123", "max_digits")]
    assert collect(rig, leg, max_digits=1) == [DigitResult("4", "max_digits")]


def test_collect_terminator_is_reported_not_included(rig):
    leg = rig.leg()
    results = collect(rig, leg, max_digits=10, terminators="#*")
    press(rig, leg, "12*")
    assert results == [DigitResult("12", "terminator", "*")]


def test_collect_first_digit_timeout(rig):
    leg = rig.leg()
    results = collect(rig, leg, max_digits=4, timeout=5.0, inter_digit_timeout=3.0)
    rig.reactor.advance(4.9)
    assert results == []
    rig.reactor.advance(0.2)
    assert results == [DigitResult("", "timeout")]


def test_collect_inter_digit_timeout(rig):
    leg = rig.leg()
    results = collect(rig, leg, max_digits=4, timeout=5.0, inter_digit_timeout=3.0)
    rig.reactor.advance(4.0)
    press(rig, leg, "1")
    rig.reactor.advance(2.9)  # past the first-digit timeout of 5 s: that timer was replaced
    press(rig, leg, "2")
    rig.reactor.advance(2.9)
    assert results == []
    rig.reactor.advance(0.2)
    assert results == [DigitResult("12", "timeout")]
    assert rig.reactor.clock.getDelayedCalls() == []


def test_type_ahead_digits_are_used_and_flush_discards_them(rig):
    leg = rig.leg()
    press(rig, leg, "42")  # pressed during the prompt, before anyone collects
    assert collect(rig, leg, max_digits=2) == [DigitResult("42", "max_digits")]
    press(rig, leg, "7#9")
    assert collect(rig, leg, max_digits=5) == [DigitResult("7", "terminator", "#")]
    results = collect(rig, leg, max_digits=1, flush=True)  # "9" is forgotten
    assert results == []
    press(rig, leg, "3")
    assert results == [DigitResult("3", "max_digits")]


def test_barge_in_stops_a_prompt_but_not_music_on_hold(rig):
    leg = rig.leg()
    leg.session.source = lambda: marked(0x55)
    menu = rig.service.play(leg.session, ramp("menu", 100))
    rig.tick(2)
    results = collect(rig, leg, max_digits=1)
    press(rig, leg, "2")
    assert menu.done and menu.reason == "interrupted"
    assert results == [DigitResult("2", "max_digits")]
    leg.udp.take()
    rig.tick()
    assert sent_payloads(leg) == [marked(0x55)]
    moh = rig.service.music_on_hold(leg.session)
    rig.tick(2)
    press(rig, leg, "5")
    assert not moh.done
    rig.tick()
    assert sent_payloads(leg)[-1] == hold_music().frames("PCMU")[2]
    notice = rig.service.play(leg.session, ramp("legal notice", 10), barge_in=False)
    press(rig, leg, "6")
    assert not notice.done


def test_inject_digit_behaves_like_an_rtp_digit(rig):
    via_rtp, via_info = rig.leg(), rig.leg("call-2")
    via_rtp.peer.audio(marked(1))
    via_rtp.peer.audio(marked(2))
    results: list[list[DigitResult]] = []
    playbacks = []
    for leg in (via_rtp, via_info):
        playbacks.append(rig.service.play(leg.session, ramp("menu", 100)))
        results.append(collect(rig, leg, max_digits=1))
    via_rtp.peer.event("8")
    press(rig, via_info, "8")
    assert results[0] == results[1] == [DigitResult("8", "max_digits")]
    assert [p.reason for p in playbacks] == ["interrupted", "interrupted"]
    assert via_rtp.session.counters.digits == via_info.session.counters.digits == 1


def test_a_new_collection_ends_the_previous_one_and_hangup_ends_any(rig):
    leg = rig.leg()
    first = collect(rig, leg, max_digits=4)
    press(rig, leg, "1")
    second = collect(rig, leg, max_digits=4)
    assert first == [DigitResult("1", "timeout")] and second == []
    press(rig, leg, "2")
    rig.service.close_leg(leg.session)
    assert second == [DigitResult("2", "hangup")]
    assert rig.reactor.clock.getDelayedCalls() == []


# ------------------------------------------------------------------------------------------------ handlers


def feed_and_tick(rig: Rig, legs: list[Leg], frames: list[bytes], n: int = 1) -> None:
    for _ in range(n):
        for leg, frame in zip(legs, frames, strict=True):
            leg.peer.audio(frame)
        rig.tick()


def test_a_leg_bridged_after_being_echoed_stops_echoing(rig):
    a, b = rig.leg(), rig.leg(role="operator", codec="PCMA")
    echo = rig.service.echo(a.session)
    assert isinstance(echo, Echo) and rig.service.clock.handlers == [echo]
    feed_and_tick(rig, [a], [const_frame(1000)], n=4)
    assert sent_payloads(a)[-1] == const_frame(1000)  # echoing
    bridge = rig.service.bridge(a.session, b.session)
    assert isinstance(bridge, Bridge) and rig.service.clock.handlers == [bridge]
    feed_and_tick(rig, [a, b], [const_frame(1000), const_frame(-3000, "PCMA")], n=3)
    assert sent_payloads(a)[-1] == transcode(const_frame(-3000, "PCMA"), "PCMA", "PCMU")  # the operator
    assert sent_payloads(b)[-1] == transcode(const_frame(1000), "PCMU", "PCMA")
    echo_again = rig.service.echo(b.session)  # the bridge ends for both legs
    assert rig.service.clock.handlers == [echo_again]
    assert a.session.source is None
    feed_and_tick(rig, [a, b], [const_frame(1000), const_frame(-3000, "PCMA")], n=2)
    assert sent_payloads(a)[-1] == codec_for("PCMU").silence
    assert sent_payloads(b)[-1] == const_frame(-3000, "PCMA")


def test_hanging_up_one_side_of_a_bridge_silences_the_other_even_after_a_prompt(rig):
    caller, operator = rig.leg(), rig.leg(role="operator")
    rig.service.bridge(caller.session, operator.session)
    rig.service.play(caller.session, ramp("recorded-call notice", 2))
    feed_and_tick(rig, [caller, operator], [const_frame(1000), const_frame(2000)], n=4)
    assert sent_payloads(caller)[-1] == const_frame(2000)
    rig.service.close_leg(operator.session)
    assert rig.service.clock.handlers == []
    feed_and_tick(rig, [caller], [const_frame(1000)], n=3)
    assert sent_payloads(caller) == [codec_for("PCMU").silence] * 3  # not the operator's last frame, forever


def test_conference_survives_one_member_hanging_up(rig):
    a, b, c = rig.leg(), rig.leg(role="operator"), rig.leg(role="family")
    rig.service.bridge(a.session, b.session)
    conference = rig.service.conference([a.session, b.session, c.session])
    assert isinstance(conference, Conference) and rig.service.clock.handlers == [conference]
    frames = [const_frame(1000), const_frame(2000), const_frame(4000)]
    feed_and_tick(rig, [a, b, c], frames, n=4)
    heard = [int(codec_for("PCMU").decode(sent_payloads(leg)[-1])[0]) for leg in (a, b, c)]
    assert [round(h, -3) for h in heard] == [6000, 5000, 3000]
    rig.service.close_leg(c.session)  # the family member hangs up: the elder and the operator go on talking
    assert conference.members == [a.session, b.session]
    assert rig.service.clock.handlers == [conference]
    feed_and_tick(rig, [a, b], frames[:2], n=3)
    assert sent_payloads(a)[-1] == const_frame(2000) and sent_payloads(b)[-1] == const_frame(1000)
    rig.service.echo(b.session)  # the operator leaves for an echo test: the elder is alone in the conference
    assert conference.members == [a.session]
    rig.service.close_leg(a.session)
    assert conference.members == [] and conference not in rig.service.clock.handlers


def test_join_and_leave_a_conference(rig):
    a, b, c = rig.leg(), rig.leg(role="operator"), rig.leg(role="family")
    conference = rig.service.conference([a.session, b.session])
    rig.service.echo(c.session)
    rig.service.join(conference, c.session)
    assert conference.members == [a.session, b.session, c.session]
    assert rig.service.clock.handlers == [conference]  # c's echo is gone
    rig.service.leave(conference, c.session)
    assert c.session.source is None and conference.members == [a.session, b.session]
    rig.service.echo(c.session)  # c is free again: nothing else is touched
    assert conference.members == [a.session, b.session]


def test_remote_hold_plays_music_to_the_other_side(rig):
    a, b = rig.leg(), rig.leg(role="operator", codec="PCMA")
    rig.service.bridge(a.session, b.session)
    feed_and_tick(rig, [a, b], [const_frame(1000), const_frame(2000, "PCMA")], n=3)
    rig.service.remote_hold(a.session, True)
    b.udp.take()
    rig.tick(3)
    assert sent_payloads(b) == hold_music().frames("PCMA")[:3]
    rig.service.remote_hold(a.session, False)
    feed_and_tick(rig, [a, b], [const_frame(1000), const_frame(2000, "PCMA")], n=3)
    assert sent_payloads(b)[-1] == transcode(const_frame(1000), "PCMU", "PCMA")


# ------------------------------------------------------------------------------------------------ recording


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


def test_recording_path_never_contains_the_call_id(rig):
    call_id = "../../etc/passwd evil call@198.51.100.1"
    caller = rig.leg(call_id)
    path = rig.service.start_recording(caller.session, STARTED)
    assert path.parent == rig.root / "2026" / "11" / "23"
    assert path.name.startswith("150405-") and path.suffix == ".wav"
    assert ".." not in path.parts and " " not in path.name and "passwd" not in str(path) and "@" not in path.name
    assert path.resolve().is_relative_to(rig.root.resolve())
    assert path.exists()
    assert rig.service.start_recording(caller.session, STARTED) == path  # already recording: same file
    other = rig.service.recording_path("another call", STARTED)
    assert other != path and other.parent == path.parent


def test_start_and_stop_recording_writes_caller_left_heard_right(rig):
    caller, operator = rig.leg(), rig.leg(role="operator", codec="PCMA")
    rig.service.bridge(caller.session, operator.session)
    path = rig.service.start_recording(caller.session, STARTED)
    feed_and_tick(rig, [caller, operator], [const_frame(1000), const_frame(-2000, "PCMA")], n=10)
    info = rig.service.stop_recording(caller.session)
    assert info == RecordingInfo(path, 1600, 0.2, 44 + 1600 * 4)
    assert rig.service.clock.after_tick == []
    data = read_wav(path)
    left, right = data[:, 0], data[:, 1]
    assert set(np.unique(left[-160:])) == {int(codec_for("PCMU").decode(const_frame(1000))[0])}
    heard = transcode(const_frame(-2000, "PCMA"), "PCMA", "PCMU")
    assert set(np.unique(right[-160:])) == {int(codec_for("PCMU").decode(heard)[0])}
    assert rig.service.stop_recording(caller.session) is None


def test_close_leg_finalises_the_recording(rig):
    caller = rig.leg()
    rig.service.echo(caller.session)
    path = rig.service.start_recording(caller.session, STARTED)
    feed_and_tick(rig, [caller], [const_frame(500)], n=5)
    rig.service.close_leg(caller.session)
    assert rig.service.clock.after_tick == []
    assert len(read_wav(path)) == 5 * 160
    rig.tick(3)  # nothing writes to the finished file any more
    assert len(read_wav(path)) == 5 * 160


def test_recording_again_within_the_same_second_gets_a_new_file(rig):
    caller = rig.leg()
    first = rig.service.start_recording(caller.session, STARTED)
    rig.tick(2)
    rig.service.stop_recording(caller.session)
    second = rig.service.start_recording(caller.session, STARTED)  # e.g. resumed after a consent question
    rig.tick(3)
    info = rig.service.stop_recording(caller.session)
    assert second != first and second.parent == first.parent and "call-1" not in second.name
    assert info is not None and info.frames == 3 * 160
    assert len(read_wav(first)) == 2 * 160


def test_stop_closes_every_leg_and_its_recording(rig):
    a = rig.leg()
    rig.leg("call-2")
    path = rig.service.start_recording(a.session, STARTED)
    rig.service.start()
    rig.reactor.advance(0.1)
    rig.service.stop()
    assert rig.service.stats()["legs"] == 0 and rig.service.pool.in_use == 0 and rig.reactor.bound == {}
    assert rig.service.clock.after_tick == [] and read_wav(path).shape[1] == 2


# ------------------------------------------------------------------------------------------------ RTCP, stats


def test_rtcp_reports_go_to_the_peer_every_five_seconds(rig):
    a = rig.leg()
    rig.service.start()
    for _ in range(5):
        a.peer.audio(marked(1))
        rig.reactor.advance(0.02)
    assert a.session.counters.sent > 0
    rtcp = rig.reactor.bound[a.session.port + 1]
    rig.reactor.advance(5.0)
    assert len(rtcp.sent) == 1
    data, addr = rtcp.sent[0]
    assert addr == (a.peer.addr[0], a.peer.addr[1] + 1)
    [sr] = parse_rtcp(data)
    assert isinstance(sr, SenderReport) and sr.ssrc == a.session.sender.ssrc
    assert [block.ssrc for block in sr.reports] == [a.peer.ssrc]
    rtcp.fail = InvalidAddressError("pbx.example.com", "not an IP address")  # must not stop the report loop
    rig.reactor.advance(5.0)
    rtcp.fail = None
    rig.reactor.advance(5.0)
    assert len(rtcp.sent) == 2
    rig.service.stop()


def test_stats_sum_the_counters_of_all_legs(rig):
    a, b = rig.leg(), rig.leg("call-2")
    for _ in range(4):
        a.peer.audio(marked(1))
        b.peer.audio(marked(2))
        rig.tick()
    b.peer.deliver(b"\x80")
    stats = rig.service.stats()
    assert stats["legs"] == 2 and stats["ports_in_use"] == 2 and stats["ticks"] == 4
    for name in ("received", "sent", "malformed", "underruns"):
        assert stats[name] == getattr(a.session.counters, name) + getattr(b.session.counters, name)
    assert stats["sent"] == 8 and stats["malformed"] == 1 and stats["received"] >= 6
    rig.service.close_leg(b.session)
    after = rig.service.stats()
    assert after["legs"] == 1 and after["sent"] == 8  # what ended legs did is not forgotten
