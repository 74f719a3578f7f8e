"""Tests for callcenter.media.rtp: RTP/RTCP wire formats, RFC 3550 A.1/A.3/A.8 statistics, the sender."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.media.rtp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtpError,
    RtpPacket,
    RtpSender,
    SenderReport,
    is_rtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
)

NTP_1970 = 2_208_988_800 << 32


def header(first: int = 0x80, second: int = 0, seq: int = 1, ts: int = 2, ssrc: int = 3) -> bytes:
    return struct.pack("!BBHII", first, second, seq, ts, ssrc)


# ---------------------------------------------------------------------------------------------
# RTP packets


def test_simple_packet_wire_format_and_round_trip() -> None:
    packet = RtpPacket(payload_type=8, sequence=0x1234, timestamp=0xDEADBEEF, ssrc=0x01020304, payload=b"abc")
    data = bytes(packet)
    assert data == b"\x80\x08\x12\x34\xde\xad\xbe\xef\x01\x02\x03\x04abc"
    assert RtpPacket.parse(data) == packet
    marked = RtpPacket(0, 65535, 2**32 - 1, 2**32 - 1, b"", marker=True)
    assert bytes(marked)[:2] == b"\x80\x80"
    assert RtpPacket.parse(bytes(marked)) == marked


def test_packet_with_csrc_extension_and_padding_round_trips() -> None:
    packet = RtpPacket(
        payload_type=96,
        sequence=7,
        timestamp=8,
        ssrc=9,
        payload=b"\x01\x02\x03",
        marker=True,
        csrc=[10, 11],
        extension=(0xBEDE, b"\x10\xff\x00\x00"),
        padding=5,
    )
    data = bytes(packet)
    assert data[0] == 0x80 | 0x20 | 0x10 | 2
    assert data[1] == 0x80 | 96
    assert len(data) == 12 + 8 + 4 + 4 + 3 + 5
    assert data[-5:] == b"\x00\x00\x00\x00\x05"
    assert RtpPacket.parse(data) == packet


def test_parse_hand_built_packet() -> None:
    data = header(0xB1, 0x80 | 101, 5, 6, 7) + struct.pack("!I", 42) + b"\x00\x01\x00\x00" + b"\x00\x00\x00\x00"
    data += b"\x05\x0a\x00\xa0" + b"\x00\x02"
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence, packet.timestamp, packet.ssrc) == (101, True, 5, 6, 7)
    assert packet.csrc == [42]
    assert packet.extension == (1, b"")
    assert packet.payload == b"\x00\x00\x00\x00\x05\x0a\x00\xa0"
    assert packet.padding == 2


def test_padding_may_take_the_whole_payload() -> None:
    packet = RtpPacket.parse(header(0xA0) + b"\x00\x00\x03")
    assert packet.payload == b""
    assert packet.padding == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short: 0 bytes"),
        (header()[:11], "too short: 11 bytes"),
        (header(0x40), "version 1 is not 2"),
        (header(0x00) + b"payload", "version 0 is not 2"),
        (header(0xC0), "version 3 is not 2"),
        (header(0x81), "CSRC count 1"),
        (header(0x8F) + bytes(56), "CSRC count 15"),
        (header(0x90), "extension header is missing"),
        (header(0x91) + bytes(4) + b"\xbe\xde", "extension header is missing"),
        (header(0x90) + b"\xbe\xde\x00\x02" + bytes(7), "extension length 2 words exceeds"),
        (header(0xA0) + b"ab\x04", "padding count 4 exceeds the 3 payload bytes"),
        (header(0xB0) + b"\xbe\xde\x00\x01" + bytes(4) + b"\x02", "padding count 2 exceeds the 1 payload"),
        (header(0xA0) + b"abc\x00", "padding count is zero"),
        (header(0xA0), "padding count is zero or missing"),
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)


def test_rtp_error_is_a_value_error() -> None:
    assert issubclass(RtpError, ValueError)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(128, 0, 0, 0), "payload type 128"),
        (RtpPacket(-1, 0, 0, 0), "payload type -1"),
        (RtpPacket(0, 65536, 0, 0), "RTP header field out of range"),
        (RtpPacket(0, 0, 2**32, 0), "RTP header field out of range"),
        (RtpPacket(0, 0, 0, 0, csrc=list(range(16))), "at most 15 CSRCs"),
        (RtpPacket(0, 0, 0, 0, csrc=[2**32]), "RTP CSRC field out of range"),
        (RtpPacket(0, 0, 0, 0, extension=(1, b"abc")), "multiple of 4 octets, not 3"),
        (RtpPacket(0, 0, 0, 0, extension=(0x10000, b"")), "extension field out of range"),
        (RtpPacket(0, 0, 0, 0, padding=256), "padding 256"),
    ],
)
def test_unserialisable_fields_raise_rtp_error(packet: RtpPacket, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        bytes(packet)


def test_is_rtcp_demultiplexes_per_rfc5761() -> None:
    assert is_rtcp(bytes(SenderReport(1, 0, 0, 0, 0)))
    assert is_rtcp(bytes(ReceiverReport(1)))
    assert is_rtcp(bytes(Bye([1])))
    assert not is_rtcp(bytes(RtpPacket(0, 1, 2, 3, b"x")))
    assert not is_rtcp(bytes(RtpPacket(0, 1, 2, 3, b"x", marker=True)))  # 0x80 = 128
    assert not is_rtcp(bytes(RtpPacket(101, 1, 2, 3, b"x", marker=True)))  # 0xE5 = 229
    assert not is_rtcp(bytes(RtpPacket(63, 1, 2, 3, b"x", marker=True)))  # 191
    assert not is_rtcp(b"\x80")
    assert not is_rtcp(b"")


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_parse_or_raise_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    again = bytes(packet)
    assert RtpPacket.parse(again) == packet
    if packet.padding == 0:
        assert again == data
    else:
        assert len(again) == len(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=12, max_size=60).map(lambda b: bytes([0x80 | (b[0] & 0x3F)]) + b[1:]))
def test_version_2_headers_with_random_flags_parse_or_raise(data: bytes) -> None:
    try:
        RtpPacket.parse(data)
    except RtpError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        RtpPacket,
        payload_type=st.integers(0, 127),
        sequence=st.integers(0, 0xFFFF),
        timestamp=st.integers(0, 0xFFFF_FFFF),
        ssrc=st.integers(0, 0xFFFF_FFFF),
        payload=st.binary(max_size=40),
        marker=st.booleans(),
        csrc=st.lists(st.integers(0, 0xFFFF_FFFF), max_size=15),
        extension=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b * 4)),
        padding=st.integers(0, 255),
    )
)
def test_generated_packets_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(bytes(packet)) == packet


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_parse_rtcp_or_raise_rtp_error(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtpError:
        pass


# ---------------------------------------------------------------------------------------------
# RTCP


def block(ssrc: int = 0x11, lost: int = 3) -> ReportBlock:
    return ReportBlock(ssrc, fraction_lost=25, packets_lost=lost, highest_sequence=70000, jitter=12, lsr=5, dlsr=6)


def test_ntp_from_unix() -> None:
    assert ntp_from_unix(0.0) == NTP_1970
    assert ntp_from_unix(1.5) == NTP_1970 + (1 << 32) + (1 << 31)
    assert ntp_from_unix(1_700_000_000.25) == ((1_700_000_000 + 2_208_988_800) << 32) + (1 << 30)
    assert ntp_from_unix(-0.5) == NTP_1970 - (1 << 31)
    assert ntp_middle32(ntp_from_unix(1.5)) == ((2_208_988_801 & 0xFFFF) << 16) | 0x8000


def test_sender_report_wire_format_and_round_trip() -> None:
    report = SenderReport(0xAABBCCDD, ntp_from_unix(10.0), 1234, 5, 800, [block()])
    data = bytes(report)
    assert len(data) == 28 + 24
    assert data[:4] == b"\x81\xc8\x00\x0c"  # V=2 RC=1, PT=200, length 12 words
    assert parse_rtcp(data) == [report]


def test_receiver_report_and_bye_round_trip() -> None:
    rr = ReceiverReport(7, [block(1), block(2, lost=-5)])
    assert bytes(rr)[:4] == b"\x82\xc9\x00\x0d"
    assert parse_rtcp(bytes(rr)) == [rr]
    empty = ReceiverReport(8)
    assert bytes(empty) == b"\x80\xc9\x00\x01\x00\x00\x00\x08"
    bye = Bye([1, 2], "hung up")
    assert len(bytes(bye)) % 4 == 0
    assert parse_rtcp(bytes(bye)) == [bye]
    assert parse_rtcp(bytes(Bye([3]))) == [Bye([3])]


def test_report_block_lost_is_signed_24_bit_and_clamped() -> None:
    assert ReportBlock.parse(bytes(block(lost=-1))).packets_lost == -1
    assert ReportBlock.parse(bytes(block(lost=10**9))).packets_lost == 0x7FFFFF
    assert ReportBlock.parse(bytes(block(lost=-(10**9)))).packets_lost == -0x800000
    assert bytes(block(lost=-1))[5:8] == b"\xff\xff\xff"
    with pytest.raises(RtpError, match="truncated"):
        ReportBlock.parse(bytes(block())[:23])
    with pytest.raises(RtpError, match="report block field out of range"):
        bytes(ReportBlock(0, 256, 0, 0, 0, 0, 0))


def sdes(ssrc: int, cname: bytes) -> bytes:
    item = struct.pack("!IBB", ssrc, 1, len(cname)) + cname + b"\x00"
    item += bytes(-len(item) % 4)
    return struct.pack("!BBH", 0x81, 202, len(item) // 4) + item


def test_compound_sr_sdes_rr_skips_sdes() -> None:
    sr = SenderReport(0x1000, ntp_from_unix(100.0), 16000, 100, 16000, [block(0x2000)])
    rr = ReceiverReport(0x1000, [block(0x3000)])
    app = struct.pack("!BBH", 0x80, 204, 2) + struct.pack("!I", 0x1000) + b"name"
    data = bytes(sr) + sdes(0x1000, b"agent-7@callcenter") + bytes(rr) + app + bytes(Bye([0x1000]))
    assert parse_rtcp(data) == [sr, rr, Bye([0x1000])]


def test_rtcp_padding_on_the_last_packet() -> None:
    body = bytes(ReceiverReport(9))
    padded = bytes([body[0] | 0x20, body[1]]) + struct.pack("!H", 2) + body[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp(padded) == [ReceiverReport(9)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x80\xc9\x00", "too short"),
        (bytes(ReceiverReport(1)) + b"\x80\xc9", "2 trailing bytes"),
        (b"\x40\xc9\x00\x01" + bytes(4), "version 1 is not 2"),
        (b"\x80\xc9\x00\x02" + bytes(4), "length 2 words exceeds"),
        (b"\x81\xc9\x00\x01" + bytes(4), "receiver report with 1 report blocks is too short"),
        (b"\x80\xc8\x00\x01" + bytes(4), "sender report with 0 report blocks is too short"),
        (b"\x82\xcb\x00\x01" + bytes(4), "BYE announces 2 SSRCs"),
        (b"\xa0\xc9\x00\x01" + bytes(4), "padding count 0"),
        (b"\xa0\xc9\x00\x01" + b"\x00\x00\x00\x09", "padding count 9"),
        (b"\x80\xc9\x00\x00", "receiver report with 0 report blocks is too short"),
    ],
)
def test_malformed_rtcp_raises_rtp_error(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtcp(data)


def test_too_many_report_blocks_cannot_be_serialised() -> None:
    with pytest.raises(RtpError, match="at most 31"):
        bytes(ReceiverReport(1, [block()] * 32))


# ---------------------------------------------------------------------------------------------
# Reception statistics: RFC 3550 A.1 sequence validation, A.3 loss


def feed(stats: ReceptionStats, seqs: list[int], start: float = 0.0) -> list[bool]:
    return [stats.update(seq & 0xFFFF, (seq * 160) & 0xFFFF_FFFF, start + i * 0.02) for i, seq in enumerate(seqs)]


def test_probation_needs_two_sequential_packets() -> None:
    stats = ReceptionStats()
    assert feed(stats, [1000]) == [False]
    assert not stats.valid
    assert (stats.received, stats.expected, stats.lost) == (0, 0, 0)
    assert feed(stats, [1001, 1002]) == [True, True]
    assert stats.valid
    assert (stats.received, stats.expected, stats.lost) == (2, 2, 0)


def test_probation_restarts_on_a_non_sequential_packet() -> None:
    stats = ReceptionStats()
    assert feed(stats, [10, 20, 30, 31, 32]) == [False, False, False, True, True]
    assert (stats.received, stats.expected) == (2, 2)


def test_probation_accepts_the_wrap_from_65535_to_0() -> None:
    stats = ReceptionStats()
    assert feed(stats, [65535, 65536]) == [False, True]
    assert stats.report_block(1, 0).highest_sequence == 0


def test_sequence_wrap_counts_a_cycle() -> None:
    stats = ReceptionStats()
    assert all(feed(stats, list(range(65530, 65540)))[1:])
    assert stats.expected == stats.received == 9
    assert stats.extended_max == 65536 + 3
    assert stats.report_block(1, 0).highest_sequence == 65536 + 3
    assert ReceptionStats().extended_max == 0


def test_loss_and_fraction_lost_per_interval() -> None:
    stats = ReceptionStats()
    feed(stats, [0, 1, 2, 5, 6, 8])  # 3, 4 and 7 missing; 0 is probation
    assert (stats.expected, stats.received, stats.lost) == (8, 5, 3)
    first = stats.report_block(0xCAFE, 0)
    assert (first.ssrc, first.packets_lost, first.fraction_lost, first.highest_sequence) == (0xCAFE, 3, 96, 8)
    assert first.fraction_lost == (3 << 8) // 8
    feed(stats, [9, 10, 11, 12], start=1.0)
    second = stats.report_block(0xCAFE, 0)
    assert (second.packets_lost, second.fraction_lost) == (3, 0)
    feed(stats, [14], start=2.0)
    assert stats.report_block(0xCAFE, 0).fraction_lost == 128  # 1 of 2 lost in this interval
    assert stats.report_block(0xCAFE, 0).fraction_lost == 0  # empty interval


def test_duplicates_and_misordered_packets_are_counted_not_resynced() -> None:
    stats = ReceptionStats()
    feed(stats, [100, 101, 102, 103])
    assert stats.update(102, 102 * 160, 1.0)  # duplicate
    assert stats.update(50, 50 * 160, 1.0)  # late by 53 (< MAX_MISORDER): kept
    assert stats.expected == 3
    assert stats.received == 5
    assert stats.lost == -2
    assert stats.report_block(1, 0).packets_lost == -2
    assert stats.report_block(1, 0).highest_sequence == 103


def test_permissible_gap_is_loss_not_a_jump() -> None:
    stats = ReceptionStats()
    feed(stats, [0, 1])
    assert stats.update(1 + 2999, 0, 1.0)
    assert stats.expected == 3000
    assert stats.lost == 2998


def test_large_jump_needs_two_sequential_packets_to_resync() -> None:
    stats = ReceptionStats()
    feed(stats, [0, 1, 2, 3])
    assert not stats.update(20000, 0, 1.0)
    assert not stats.update(30000, 0, 1.02)  # not the successor of 20000: still dropped
    assert stats.update(4, 4 * 160, 1.04)  # the old stream goes on undisturbed
    assert not stats.update(40000, 0, 1.06)
    assert stats.update(40001, 160, 1.08)  # successor: the sender restarted, resynchronise
    assert (stats.received, stats.expected, stats.lost) == (1, 1, 0)
    assert stats.update(40002, 320, 1.10)
    assert stats.report_block(1, 0).highest_sequence == 40002


def test_packets_far_behind_are_treated_as_a_jump() -> None:
    stats = ReceptionStats()
    feed(stats, [1000, 1001, 1002])
    assert not stats.update(1002 - 100, 0, 1.0)  # MAX_MISORDER or more behind: a jump, dropped
    assert not stats.update(1002 - 101, 0, 1.0)
    assert stats.update(1002 - 99, 0, 1.0)  # 99 behind: misordered, kept
    assert (stats.received, stats.expected) == (3, 2)
    assert not stats.update(500, 0, 1.0)
    assert stats.update(501, 0, 1.0)  # the successor of a jump: resynchronise there
    assert (stats.received, stats.expected) == (1, 1)


def test_restart_puts_a_new_ssrc_on_probation() -> None:
    stats = ReceptionStats()
    feed(stats, [0, 1, 2, 3])
    stats.restart()
    assert (stats.received, stats.expected, stats.valid) == (0, 0, False)
    assert feed(stats, [500, 501]) == [False, True]
    assert (stats.received, stats.expected) == (1, 1)


def test_report_block_lsr_and_dlsr() -> None:
    stats = ReceptionStats()
    feed(stats, [0, 1, 2])
    sr_ntp = ntp_from_unix(1000.0)
    arrival = ntp_middle32(ntp_from_unix(1000.1))
    now = ntp_middle32(ntp_from_unix(1002.1))
    rb = stats.report_block(5, now, last_sr=ntp_middle32(sr_ntp), last_sr_arrival=arrival)
    assert rb.lsr == ntp_middle32(sr_ntp)
    assert rb.dlsr == pytest.approx(2 * 65536, abs=2)
    assert stats.report_block(5, now).dlsr == 0  # no SR received yet: LSR and DLSR are 0
    assert stats.report_block(5, now).lsr == 0


# ---------------------------------------------------------------------------------------------
# Reception statistics: A.8 jitter


def reference_jitter(arrivals: list[float], timestamps: list[int], rate: int) -> float:
    """A.8 literally: transit = arrival in timestamp units - RTP timestamp; J += (|D| - J) / 16."""
    jitter, previous = 0.0, None
    for arrival, timestamp in zip(arrivals, timestamps, strict=True):
        transit = arrival * rate - timestamp
        if previous is not None:
            jitter += (abs(transit - previous) - jitter) / 16
        previous = transit
    return jitter


def test_jitter_is_zero_for_a_perfectly_paced_stream() -> None:
    stats = ReceptionStats()
    feed(stats, list(range(200)), start=5.0)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_jitter_of_alternating_delay_converges_to_the_delay() -> None:
    delay = 0.004  # every other packet 4 ms late: |D| = 32 timestamp units each time
    stats = ReceptionStats()
    seqs = list(range(300))
    arrivals = [10.0 + i * 0.02 + (delay if i % 2 else 0.0) for i in seqs]
    timestamps = [1000 + i * 160 for i in seqs]
    for seq, ts, arrival in zip(seqs, timestamps, arrivals, strict=True):
        stats.update(seq, ts, arrival)
    # Probation drops the first packet, so the estimator sees packets 1..299.
    expected = reference_jitter(arrivals[1:], timestamps[1:], 8000)
    assert stats.jitter_ms == pytest.approx(expected / 8, rel=1e-9)
    assert stats.jitter_ms == pytest.approx(delay * 1000, rel=1e-6)
    assert stats.report_block(1, 0).jitter == 31  # int(~32 - epsilon) in timestamp units


def test_jitter_ignores_the_rtp_timestamp_wrap_and_honours_clock_rate() -> None:
    stats = ReceptionStats()
    start = 2**32 - 160 * 5
    for i in range(20):
        stats.update(i, (start + i * 160) & 0xFFFF_FFFF, i * 0.02)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)
    wide = ReceptionStats()
    for i in range(300):
        wide.update(i, i * 320, i * 0.02 + (0.002 if i % 2 else 0.0), clock_rate=16000)
    assert wide.jitter_ms == pytest.approx(2.0, rel=1e-6)


def test_jitter_restarts_with_a_resync() -> None:
    stats = ReceptionStats()
    feed(stats, [0, 1, 2, 3])
    stats.update(30000, 999_999, 1.0)
    stats.update(30001, 999_999 + 160, 1.02)  # resync: no transit difference across the restart
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Sender


def test_sender_numbers_packets_and_wraps() -> None:
    sender = RtpSender(ssrc=0x12345678, payload_type=0, initial_sequence=65535, initial_timestamp=2**32 - 160)
    first = RtpPacket.parse(sender.packet(b"\xff" * 160, marker=True))
    second = RtpPacket.parse(sender.packet(b"\xff" * 160))
    event = RtpPacket.parse(sender.packet(b"\x01\x0a\x00\xa0", samples=0, payload_type=101))
    assert (first.sequence, first.timestamp, first.marker, first.ssrc) == (65535, 2**32 - 160, True, 0x12345678)
    assert (second.sequence, second.timestamp, second.marker) == (0, 0, False)
    assert (event.sequence, event.timestamp, event.payload_type) == (1, 160, 101)
    assert (sender.packet_count, sender.octet_count) == (3, 324)
    sender.skip(800)
    assert RtpPacket.parse(sender.packet(b"")).timestamp == 960


def test_sender_rejects_bad_payload_types() -> None:
    with pytest.raises(RtpError, match="payload type 200"):
        RtpSender(1, 200, 0, 0)
    with pytest.raises(RtpError, match="payload type 128"):
        RtpSender(1, 0, 0, 0).packet(b"", payload_type=128)


def test_sender_report() -> None:
    sender = RtpSender(ssrc=77, payload_type=8, initial_sequence=1, initial_timestamp=1000)
    for _ in range(10):
        sender.packet(b"\xd5" * 160)
    report = sender.sender_report(1_700_000_000.5, [block()])
    assert report == SenderReport(77, ntp_from_unix(1_700_000_000.5), 1000 + 1600, 10, 1600, [block()])
    assert parse_rtcp(bytes(report)) == [report]
