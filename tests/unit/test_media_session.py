"""RtpSession without sockets: receive path (jitter buffer, latching, SSRC changes, DTMF), send path, RTCP."""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet.error import InvalidAddressError

from callcenter.media.dtmf import DtmfDigit, TelephoneEvent
from callcenter.media.g711 import codec_for, ulaw_encode
from callcenter.media.inband import COL_FREQS, ROW_FREQS
from callcenter.media.rtp import (
    ReceiverReport,
    RtpPacket,
    SenderReport,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
)
from callcenter.media.session import JITTER_DEPTH, RELATCH_AFTER, Negotiated, RtpSession
from tests.unit.mediahelpers import PEER, TE_PT, RemotePeer, make_session, marked

STRANGER = ("198.51.100.7", 5555)
WARM_UP = marked(0xEE)


def drain(session: RtpSession, limit: int = 100) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < limit and (payload := session.pull()) is not None:
        out.append(payload)
    return out


def start_stream(session: RtpSession, peer: RemotePeer) -> None:
    """Two in-order packets: the source passes RFC 3550 probation and latches; the buffer is emptied."""
    peer.audio(WARM_UP)
    peer.audio(WARM_UP)
    assert set(drain(session)) <= {WARM_UP}


def digits_of(session: RtpSession) -> list[DtmfDigit]:
    got: list[DtmfDigit] = []
    session.digit_listeners.append(got.append)
    return got


# ------------------------------------------------------------------------------------------------ receive


def test_frames_come_out_one_per_pull_in_order():
    s, _, _ = make_session()
    peer = RemotePeer(s)
    start_stream(s, peer)
    received = s.counters.received
    frames = [marked(i) for i in range(1, 5)]
    for f in frames:
        peer.audio(f)
    assert s.counters.received == received + 4
    assert [s.pull() for _ in range(4)] == frames
    assert s.last_received == frames[-1]
    assert s.pull() is None and s.last_received is None
    assert s.counters.underruns >= 1


def test_reordering_inside_the_window_is_undone():
    s, _, _ = make_session()
    peer = RemotePeer(s)
    start_stream(s, peer)
    base = peer.seq
    for k in (0, 2, 1, 4, 3):
        peer.deliver(peer.packet(marked(k), seq=base + k, ts=peer.ts + 160 * k))
    assert drain(s) == [marked(k) for k in range(5)]
    assert s.counters.dropped_late == 0


def test_duplicates_are_dropped_and_late_packets_counted():
    s, _, _ = make_session()
    peer = RemotePeer(s)
    start_stream(s, peer)
    base = peer.seq
    for k in (0, 1, 1, 2, 0):
        peer.deliver(peer.packet(marked(k), seq=base + k, ts=peer.ts + 160 * k))
    assert drain(s) == [marked(0), marked(1), marked(2)]
    # a copy of a frame already played out is too late: counted, never played twice
    peer.deliver(peer.packet(marked(1), seq=base + 1, ts=peer.ts + 160))
    assert s.counters.dropped_late == 1
    assert drain(s) == []


def test_overflow_drops_the_oldest_frames_and_counts_them():
    s, _, _ = make_session()
    peer = RemotePeer(s)
    start_stream(s, peer)
    for k in range(JITTER_DEPTH + 4):
        peer.audio(marked(k))
    assert s.counters.dropped_late == 4
    assert drain(s) == [marked(k) for k in range(4, JITTER_DEPTH + 4)]


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x80\x00\x01",  # shorter than the fixed header
        b"\x40\x00" + bytes(10) + bytes(160),  # RTP version 1
        b"\xa0\x00" + bytes(10),  # padding bit, no padding count
        b"\x8f\x00" + bytes(10) + bytes(8),  # 15 CSRCs announced, 2 present
    ],
)
def test_malformed_packets_are_counted_and_ignored(datagram):
    s, _, _ = make_session()
    peer = RemotePeer(s)
    peer.deliver(datagram)
    assert s.counters.malformed == 1
    assert s.counters.received == 0 and drain(s) == []


def test_wrong_payload_type_is_counted_and_never_latches():
    s, udp, clock = make_session(remote=PEER)
    peer = RemotePeer(s)
    stranger = RemotePeer(s, STRANGER, ssrc=1)
    stranger.deliver(stranger.packet(marked(1), pt=18))  # G.729 we never offered
    assert s.counters.wrong_payload_type == 1
    assert s.peer == PEER
    start_stream(s, peer)
    peer.deliver(peer.packet(marked(2), pt=8, seq=peer.seq))  # the real peer switching codec unasked
    assert s.counters.wrong_payload_type == 2
    assert drain(s) == []


def test_strangers_are_ignored_after_latching():
    s, udp, clock = make_session()
    peer = RemotePeer(s)
    start_stream(s, peer)
    stranger = RemotePeer(s, STRANGER, ssrc=0xBAD, seq=7)
    for _ in range(3):
        stranger.audio(marked(0x66))
    assert s.counters.strangers == 3
    peer.audio(marked(1))
    peer.audio(marked(2))
    assert drain(s) == [marked(1), marked(2)]
    s.tick(clock.seconds())
    assert udp.addresses() == [PEER]


def test_relatch_after_silence_from_the_old_source():
    """NAT rebinding: the same stream (SSRC, sequence) suddenly comes from another port."""
    s, udp, clock = make_session()
    peer = RemotePeer(s)
    start_stream(s, peer)
    moved = ("192.0.2.10", 40444)
    clock.advance(RELATCH_AFTER - 0.1)
    peer.audio(marked(1), addr=moved)  # too soon: the latched source may just be late
    assert s.counters.strangers == 1 and s.peer == PEER
    clock.advance(0.2)  # now RELATCH_AFTER + 0.1 since the last packet from PEER
    peer.audio(marked(2), addr=moved)
    peer.audio(marked(3), addr=moved)
    assert s.peer == moved
    assert s.counters.strangers == 1 and s.counters.ssrc_changes == 0
    assert marked(2) in drain(s)
    s.tick(clock.seconds())
    assert udp.addresses() == [moved]
    peer.audio(marked(4))  # the old address is the stranger now
    assert s.counters.strangers == 2


def test_symmetric_rtp_sends_to_where_packets_come_from():
    private_sdp = ("10.1.1.5", 4000)  # what a phone behind NAT writes in its SDP
    public = ("203.0.113.9", 62000)  # where its packets really come from
    s, udp, clock = make_session(remote=private_sdp)
    s.tick(clock.seconds())
    assert udp.addresses() == [private_sdp]  # before any media: the SDP address
    peer = RemotePeer(s, public)
    peer.audio(marked(1))
    peer.audio(marked(2))
    assert s.peer == public
    s.tick(clock.seconds())
    assert udp.addresses() == [private_sdp, public]
    assert s.counters.strangers == 0


def test_no_remote_in_sdp_sends_nothing_until_media_arrives():
    s, udp, clock = make_session(remote=("0.0.0.0", 0))
    s.tick(clock.seconds())
    assert udp.sent == []
    peer = RemotePeer(s)
    peer.audio(marked(1))
    s.tick(clock.seconds())
    assert udp.addresses() == [PEER]


def test_ssrc_change_resets_statistics_and_jitter_buffer():
    s, _, _ = make_session()
    old = RemotePeer(s, ssrc=0xAAAA, seq=100)
    start_stream(s, old)
    for k in range(3):
        old.audio(marked(0xA0 + k))
    assert s.stats.received >= 4
    new = RemotePeer(s, ssrc=0xBBBB, seq=40_000, ts=9)  # e.g. the trunk switched the call to another gateway
    new_frames = [marked(0xB0 + k) for k in range(4)]
    for f in new_frames:
        new.audio(f)
    assert s.counters.ssrc_changes == 1
    assert s.stats.received <= 4
    out = drain(s)
    assert len(out) >= 3 and set(out) <= set(new_frames)  # nothing of the old stream is played


def test_sender_restarting_its_sequence_keeps_playing():
    """RFC 3550 A.1: two sequential packets after a big jump resynchronise; the jitter buffer must follow."""
    s, _, _ = make_session()
    peer = RemotePeer(s, seq=30_000)
    start_stream(s, peer)
    for k in range(3):
        peer.audio(marked(k))
    assert drain(s) == [marked(0), marked(1), marked(2)]
    peer.seq = 1000  # same SSRC, new sequence (a gateway restarted the stream)
    frames = [marked(0x40 + k) for k in range(5)]
    for f in frames:
        peer.audio(f)
    out = drain(s)
    assert out == frames[1:]  # the first packet of the jump is held as suspect, the rest play
    assert s.counters.invalid_sequence == 1


def test_rfc4733_digits_reach_listeners_once_per_event():
    s, _, clock = make_session()
    got = digits_of(s)
    peer = RemotePeer(s)
    start_stream(s, peer)
    peer.event("5")
    assert got == [DtmfDigit("5", 100, "rfc4733")]
    peer.audio(marked(1))
    peer.event("#", duration_ms=200)
    peer.audio(marked(2))
    assert [d.digit for d in got] == ["5", "#"]
    assert got[1].duration_ms == 200
    assert s.counters.digits == 2
    assert drain(s) == [marked(1), marked(2)]  # telephone-events never reach the audio path


def test_rfc4733_event_without_end_packets_is_reported_by_the_tick():
    s, _, clock = make_session()
    got = digits_of(s)
    peer = RemotePeer(s)
    start_stream(s, peer)
    peer.event("7", end_repeats=0)
    assert got == []
    clock.advance(0.5)
    s.tick(clock.seconds())
    assert got == []
    clock.advance(0.6)
    s.tick(clock.seconds())
    assert [d.digit for d in got] == ["7"]


def test_telephone_events_on_an_unnegotiated_pt_are_refused():
    s, _, _ = make_session(telephone_event_pt=None)
    got = digits_of(s)
    peer = RemotePeer(s)
    start_stream(s, peer)
    peer.event("5")
    assert got == []
    assert s.counters.wrong_payload_type == 7


def test_inband_dtmf_in_pcmu_audio_reaches_listeners():
    s, _, _ = make_session(telephone_event_pt=None)
    got = digits_of(s)
    peer = RemotePeer(s)
    start_stream(s, peer)
    amplitude = 32768 * 10 ** ((-10 - 3.14) / 20)  # -10 dBm0 per tone
    tone = (ROW_FREQS[1], COL_FREQS[1])  # "5"
    t = np.arange(800) / 8000
    pcm = np.concatenate([np.zeros(800), sum(amplitude * np.sin(2 * np.pi * f * t) for f in tone), np.zeros(1600)])
    samples = np.round(pcm).astype(np.int16)
    for i in range(0, len(samples), 160):  # one packet per 20 ms tick, pulled by the tick
        peer.audio(ulaw_encode(samples[i : i + 160]))
        s.pull()
    drain(s)
    assert [(d.digit, d.source) for d in got] == [("5", "inband")]


def test_inband_detection_can_be_switched_off():
    s, _, _ = make_session(telephone_event_pt=None, inband_dtmf=False)
    assert s.inband is None


# ------------------------------------------------------------------------------------------------ send


def test_one_packet_per_tick_with_sequence_and_timestamp_steps():
    s, udp, clock = make_session()
    for _ in range(3):
        s.tick(clock.seconds())
        clock.advance(0.02)
    packets = udp.rtp()
    assert len(packets) == 3 and s.counters.sent == 3
    first = packets[0]
    for i, p in enumerate(packets):
        assert p.sequence == (first.sequence + i) & 0xFFFF
        assert p.timestamp == (first.timestamp + 160 * i) & 0xFFFF_FFFF
        assert p.ssrc == s.sender.ssrc and p.payload_type == 0 and not p.marker
        assert p.payload == codec_for("PCMU").silence  # no source: silence, not nothing
    assert s.last_sent is None


def test_the_source_decides_what_is_sent():
    s, udp, clock = make_session(codec="PCMA")
    frames = iter([marked(1), None, marked(3)])
    s.source = lambda: next(frames)
    for _ in range(3):
        s.tick(clock.seconds())
    assert [p.payload for p in udp.rtp()] == [marked(1), b"\xd5" * 160, marked(3)]
    assert {p.payload_type for p in udp.rtp()} == {8}
    assert s.last_sent == marked(3)


@pytest.mark.parametrize(("direction", "sends"), [("sendrecv", True), ("sendonly", True), ("recvonly", False),
                                                  ("inactive", False)])  # fmt: skip
def test_direction_is_respected(direction, sends):
    s, udp, clock = make_session()
    s.source = lambda: marked(9)
    s.tick(clock.seconds())
    start = udp.rtp()[0].timestamp
    s.configure(Negotiated(direction=direction, remote=PEER))
    for _ in range(3):
        s.tick(clock.seconds())
    assert len(udp.rtp()) == (4 if sends else 1)
    s.configure(Negotiated(remote=PEER))
    s.tick(clock.seconds())
    last = udp.rtp()[-1]
    assert last.timestamp == (start + 4 * 160) & 0xFFFF_FFFF  # time went on while we were silent
    assert last.sequence == (udp.rtp()[0].sequence + len(udp.rtp()) - 1) & 0xFFFF  # no sequence gap


def test_recvonly_still_receives():
    s, udp, clock = make_session()
    s.configure(Negotiated(direction="recvonly"))
    peer = RemotePeer(s)
    start_stream(s, peer)
    peer.audio(marked(1))
    peer.audio(marked(2))
    assert drain(s) == [marked(1), marked(2)]
    s.tick(clock.seconds())
    assert udp.sent == []


def test_send_dtmf_rfc4733_then_audio_resumes_on_the_wall_clock():
    s, udp, clock = make_session()
    s.source = lambda: marked(0x33)
    s.tick(clock.seconds())
    assert s.send_dtmf("12") is True
    for _ in range(30):
        s.tick(clock.seconds())
        if udp.rtp()[-1].payload_type == 0 and len(udp.rtp()) > 1:
            break
    packets = udp.rtp()
    audio_before, events, audio_after = packets[0], packets[1:-1], packets[-1]
    assert audio_before.payload_type == 0 and audio_after.payload_type == 0
    assert audio_after.payload == marked(0x33)
    assert all(p.payload_type == TE_PT for p in events)
    # sequence numbers are contiguous across audio and events
    assert [p.sequence for p in packets] == [(audio_before.sequence + i) & 0xFFFF for i in range(len(packets))]
    parsed = [TelephoneEvent.parse(p.payload) for p in events]
    by_event: dict[int, list[int]] = {}
    for index, ev in enumerate(parsed):
        by_event.setdefault(ev.event, []).append(index)
    assert list(by_event) == [1, 2]
    for code, indexes in by_event.items():
        group = [events[i] for i in indexes]
        evs = [parsed[i] for i in indexes]
        assert [p.marker for p in group] == [True] + [False] * (len(group) - 1)  # marker on the first only
        assert len({p.timestamp for p in group}) == 1  # one timestamp per event
        assert [e.end for e in evs] == [False] * (len(group) - 3) + [True] * 3  # three end packets
        assert [e.duration for e in evs] == [160, 320, 480, 640, 800, 800, 800]
        # the event starts where the audio clock is when it starts
        assert group[0].timestamp == (audio_before.timestamp + 160 * (1 + indexes[0])) & 0xFFFF_FFFF, code
    # audio resumes past the event's duration, at the tick it is sent on (RTP time stays linear, RFC 3550 §5.1)
    last_event_ts = events[by_event[2][0]].timestamp
    assert audio_after.timestamp - last_event_ts >= 800
    assert audio_after.timestamp == (audio_before.timestamp + 160 * (len(packets) - 1)) & 0xFFFF_FFFF
    assert s.counters.sent == len(packets)


def test_sent_dtmf_is_understood_by_an_rfc4733_receiver():
    s, udp, clock = make_session()
    s.send_dtmf("9*")
    for _ in range(16):
        s.tick(clock.seconds())
    receiver, _, _ = make_session()
    got = digits_of(receiver)
    for data, _ in udp.sent:
        receiver.datagramReceived(data, PEER)
    assert [d.digit for d in got] == ["9", "*"]


def test_send_dtmf_needs_telephone_event():
    s, udp, clock = make_session(telephone_event_pt=None)
    assert s.send_dtmf("1") is False
    s.tick(clock.seconds())
    assert udp.rtp()[0].payload_type == 0


def test_renegotiation_without_telephone_event_drops_pending_dtmf():
    s, udp, clock = make_session()
    s.tick(clock.seconds())
    s.send_dtmf("55")
    s.tick(clock.seconds())
    s.configure(Negotiated(remote=PEER))  # re-INVITE answered without telephone-event
    for _ in range(3):
        s.tick(clock.seconds())  # must not crash the media tick
    packets = udp.rtp()
    assert [p.payload_type for p in packets] == [0, TE_PT, 0, 0, 0]
    assert [p.timestamp - packets[0].timestamp for p in packets] == [0, 160, 320, 480, 640]


def test_unroutable_peer_address_does_not_break_the_tick():
    """An SDP c= line may carry a host name; Twisted refuses to write to it with a ValueError."""
    s, udp, clock = make_session(remote=("pbx.example.com", 4000))
    udp.fail = InvalidAddressError("pbx.example.com", "write() only accepts IP addresses, not hostnames")
    s.tick(clock.seconds())
    assert s.counters.sent == 0
    udp.fail = OSError(105, "No buffer space available")
    s.tick(clock.seconds())
    assert s.counters.sent == 0


def test_closed_session_neither_sends_nor_receives():
    s, udp, clock = make_session()
    got = digits_of(s)
    s.close()
    s.tick(clock.seconds())
    RemotePeer(s).audio(marked(1))
    assert udp.sent == [] and s.counters.received == 0 and got == [] and s.digit_listeners == []


# ------------------------------------------------------------------------------------------------ RTCP


def sender_report(ssrc: int, at: float) -> bytes:
    return bytes(SenderReport(ssrc, ntp_from_unix(at), 123_456, 50, 8000))


def test_rtcp_report_is_none_before_any_media():
    s, _, clock = make_session()
    assert s.rtcp_report(clock.seconds()) is None


def test_rtcp_sender_report_with_a_reception_block():
    s, udp, clock = make_session()
    clock.advance(1000.0)
    peer = RemotePeer(s)
    start_stream(s, peer)
    for k in range(5):
        peer.audio(marked(k))
        s.pull()
        s.tick(clock.seconds())
        clock.advance(0.02)
    s.on_rtcp(sender_report(peer.ssrc, 950.25), (PEER[0], PEER[1] + 1))
    assert s.counters.rtcp_received == 1 and s.rtcp_peer == (PEER[0], PEER[1] + 1)
    clock.advance(2.0)
    report = s.rtcp_report(clock.seconds())
    assert report is not None
    [sr] = parse_rtcp(report)
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == s.sender.ssrc
    assert sr.packet_count == 5 and sr.octet_count == 5 * 160
    assert sr.ntp_timestamp == ntp_from_unix(clock.seconds())
    assert sr.rtp_timestamp == s.sender.timestamp
    [block] = sr.reports
    assert block.ssrc == peer.ssrc
    assert block.highest_sequence == (peer.seq - 1)
    assert block.lsr == ntp_middle32(ntp_from_unix(950.25))
    assert abs(block.dlsr - 2.0 * 65536) <= 2  # 2 s since the SR arrived, in 1/65536 s
    assert block.fraction_lost == 0 and block.packets_lost <= 0


def test_rtcp_receiver_report_when_we_only_listen():
    s, _, clock = make_session(direction="recvonly")
    peer = RemotePeer(s)
    start_stream(s, peer)
    report = s.rtcp_report(clock.seconds())
    assert report is not None
    [rr] = parse_rtcp(report)
    assert isinstance(rr, ReceiverReport)
    assert rr.ssrc == s.sender.ssrc and [b.ssrc for b in rr.reports] == [peer.ssrc]
    assert rr.reports[0].lsr == 0 and rr.reports[0].dlsr == 0


def test_rtcp_from_strangers_and_malformed_rtcp_are_counted():
    s, _, clock = make_session()
    s.on_rtcp(sender_report(1, 5.0), ("198.51.100.99", 40001))
    assert s.counters.strangers == 1 and s.counters.rtcp_received == 0
    s.on_rtcp(b"\x80\xc8\x00\x10" + bytes(8), (PEER[0], PEER[1] + 1))  # SR claiming 64 bytes, 8 present
    assert s.counters.malformed == 1 and s.counters.rtcp_received == 0


def test_rtcp_multiplexed_on_the_rtp_port():
    s, _, clock = make_session()
    peer = RemotePeer(s)
    start_stream(s, peer)
    s.datagramReceived(sender_report(peer.ssrc, 1.5), PEER)
    assert s.counters.rtcp_received == 1 and s.rtcp_peer == PEER
    assert s.counters.malformed == 0


def test_rtp_packet_helper_round_trips():
    """Guard for the helpers: what RemotePeer sends parses back to what it meant."""
    s, _, _ = make_session()
    peer = RemotePeer(s, seq=0xFFFF, ts=0xFFFF_FFF0)
    data = peer.packet(b"xy", marker=True)
    assert RtpPacket.parse(data) == RtpPacket(0, 0xFFFF, 0xFFFF_FFF0, peer.ssrc, b"xy", True)
