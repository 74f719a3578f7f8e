"""RFC 4733 telephone-events (payload, receiver rules, sender) and SIP INFO DTMF bodies."""

from __future__ import annotations

import pytest

from callcenter.media.dtmf import (
    DIGITS,
    DtmfDigit,
    DtmfError,
    Rfc4733Receiver,
    Rfc4733Sender,
    TelephoneEvent,
    is_dtmf_info_type,
    parse_dtmf_info,
)


def event(code: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return bytes(TelephoneEvent(code, end, volume, duration))


# --- payload -------------------------------------------------------------------------------------------------


def test_digit_codes_follow_rfc4733() -> None:
    assert DIGITS.index("0") == 0 and DIGITS.index("9") == 9
    assert (DIGITS[10], DIGITS[11], DIGITS[12], DIGITS[15]) == ("*", "#", "A", "D")


def test_payload_round_trip() -> None:
    packet = TelephoneEvent(event=11, end=True, volume=63, duration=0xFFFF)
    assert bytes(packet) == b"\x0b\xbf\xff\xff"
    assert TelephoneEvent.parse(bytes(packet)) == packet
    assert TelephoneEvent.parse(b"\x05\x0a\x03\x20") == TelephoneEvent(5, False, 10, 800)
    assert TelephoneEvent.parse(b"\x05\x4a\x00\xa0").volume == 10  # the reserved bit is ignored
    assert packet.digit == "#"
    assert TelephoneEvent(16, False, 0, 0).digit is None


def test_longer_payload_takes_the_first_event() -> None:
    assert TelephoneEvent.parse(event(3, 160, end=True) + event(4, 320)).event == 3


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x02\x03"])
def test_short_payload_is_an_error(payload: bytes) -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(payload)
    with pytest.raises(ValueError):
        TelephoneEvent.parse(payload)


@pytest.mark.parametrize(("code", "volume", "duration"), [(256, 0, 0), (1, 64, 0), (1, 0, 65536), (-1, 0, 0)])
def test_out_of_range_fields(code: int, volume: int, duration: int) -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent(code, False, volume, duration)


def test_digit_value_checks() -> None:
    assert DtmfDigit("5", 100, "rfc4733") == DtmfDigit("5", 100, "rfc4733")
    for digit, duration, source in [("E", 1, "info"), ("55", 1, "info"), ("5", -1, "info"), ("5", 1, "sms")]:
        with pytest.raises(DtmfError):
            DtmfDigit(digit, duration, source)


# --- receiver ------------------------------------------------------------------------------------------------


def feed_all(receiver: Rfc4733Receiver, packets: list[tuple[bytes, bool]], ts: int, t0: float) -> list[DtmfDigit]:
    out: list[DtmfDigit] = []
    for i, (payload, marker) in enumerate(packets):
        out += receiver.feed(payload, ts, marker, t0 + 0.02 * i)
    return out


def normal_press(code: int, total: int = 800) -> list[tuple[bytes, bool]]:
    """Marker start, updates every 160 samples, three end packets."""
    packets = [(event(code, d), d == 160) for d in range(160, total, 160)]
    return packets + [(event(code, total, end=True), False)] * 3


def test_normal_digit_with_three_end_packets() -> None:
    receiver = Rfc4733Receiver()
    digits = feed_all(receiver, normal_press(5), ts=1000, t0=10.0)
    assert digits == [DtmfDigit("5", 100, "rfc4733")]
    assert receiver.stats.duplicates == 2
    assert receiver.expire(100.0) == []


def test_digit_is_reported_on_the_first_end_packet() -> None:
    receiver = Rfc4733Receiver()
    assert receiver.feed(event(1, 160), 50, True, 0.0) == []
    assert receiver.feed(event(1, 320), 50, False, 0.02) == []
    assert receiver.feed(event(1, 400, end=True), 50, False, 0.04) == [DtmfDigit("1", 50, "rfc4733")]
    assert receiver.feed(event(1, 400, end=True), 50, False, 0.05) == []


def test_lost_start_packets() -> None:
    receiver = Rfc4733Receiver()
    packets = normal_press(9)[2:]  # marker packet and the next update lost
    assert feed_all(receiver, packets, ts=7, t0=0.0) == [DtmfDigit("9", 100, "rfc4733")]
    assert receiver.stats.lost_start == 1


def test_only_an_end_packet_arrives() -> None:
    receiver = Rfc4733Receiver()
    assert receiver.feed(event(0, 960, end=True), 123, False, 0.0) == [DtmfDigit("0", 120, "rfc4733")]


def test_lost_end_packets_report_on_expiry() -> None:
    receiver = Rfc4733Receiver()
    assert feed_all(receiver, normal_press(12)[:-3], ts=4000, t0=5.0) == []  # last update at 5.06
    assert receiver.expire(5.5) == []
    assert receiver.expire(6.06) == []  # exactly 1 s: not yet
    assert receiver.expire(6.1) == [DtmfDigit("A", 80, "rfc4733")]
    assert receiver.expire(9.0) == []
    assert receiver.stats.lost_end == 1
    # the end packets turn up after all: the event is finished, they are dropped
    assert receiver.feed(event(12, 800, end=True), 4000, False, 9.1) == []


def test_new_event_ends_an_event_that_never_ended() -> None:
    receiver = Rfc4733Receiver()
    assert feed_all(receiver, normal_press(2)[:-3], ts=100, t0=0.0) == []
    digits = feed_all(receiver, normal_press(3), ts=900, t0=0.2)
    assert digits == [DtmfDigit("2", 80, "rfc4733"), DtmfDigit("3", 100, "rfc4733")]
    assert receiver.stats.interrupted == 1


def test_two_quick_identical_digits() -> None:
    receiver = Rfc4733Receiver()
    first = feed_all(receiver, normal_press(1, 480), ts=8000, t0=0.0)
    second = feed_all(receiver, normal_press(1, 480), ts=8800, t0=0.1)
    assert first + second == [DtmfDigit("1", 60, "rfc4733")] * 2


def test_late_retransmission_after_completion_is_ignored() -> None:
    receiver = Rfc4733Receiver()
    assert len(feed_all(receiver, normal_press(4), ts=500, t0=0.0)) == 1
    assert len(feed_all(receiver, normal_press(6), ts=1500, t0=0.2)) == 1
    # reordered/late packets of the first event, update and end
    assert receiver.feed(event(4, 640), 500, False, 0.4) == []
    assert receiver.feed(event(4, 800, end=True), 500, False, 0.41) == []
    assert receiver.expire(5.0) == []
    assert receiver.stats.digits == 2


def test_finished_history_is_bounded() -> None:
    receiver = Rfc4733Receiver(history=16)
    for i in range(17):
        assert len(feed_all(receiver, normal_press(i % 10), ts=1000 * i, t0=float(i))) == 1
    assert receiver.feed(event(1, 800, end=True), 1000, False, 20.0) == []  # 16 events ago: still known
    assert receiver.feed(event(0, 800, end=True), 0, False, 20.0) == [DtmfDigit("0", 100, "rfc4733")]  # forgotten


def test_events_above_15_are_ignored_but_counted() -> None:
    receiver = Rfc4733Receiver()
    assert feed_all(receiver, normal_press(16), ts=300, t0=0.0) == []  # flash
    assert feed_all(receiver, normal_press(32), ts=600, t0=0.2) == []  # modem tone
    assert receiver.stats.ignored_events == 2
    assert receiver.stats.digits == 0
    assert feed_all(receiver, normal_press(8), ts=900, t0=0.4) == [DtmfDigit("8", 100, "rfc4733")]


def test_flash_interrupted_by_a_digit() -> None:
    receiver = Rfc4733Receiver()
    receiver.feed(event(16, 160), 300, True, 0.0)
    assert feed_all(receiver, normal_press(7), ts=600, t0=0.1) == [DtmfDigit("7", 100, "rfc4733")]


def test_malformed_and_mismatched_packets() -> None:
    receiver = Rfc4733Receiver()
    assert receiver.feed(b"\x01\x02", 1, True, 0.0) == []
    assert receiver.stats.malformed == 1
    receiver.feed(event(5, 160), 10, True, 0.0)
    assert receiver.feed(event(6, 320, end=True), 10, False, 0.02) == []  # same timestamp, other event
    assert receiver.stats.mismatched == 1
    assert receiver.feed(event(5, 320, end=True), 10, False, 0.04) == [DtmfDigit("5", 40, "rfc4733")]


def test_wideband_clock_and_reset() -> None:
    receiver = Rfc4733Receiver(clock_rate=48000)
    assert receiver.feed(event(5, 4800, end=True), 77, True, 0.0) == [DtmfDigit("5", 100, "rfc4733")]
    receiver.reset()
    assert receiver.feed(event(5, 4800, end=True), 77, True, 1.0) == [DtmfDigit("5", 100, "rfc4733")]


def test_timestamp_wraps() -> None:
    receiver = Rfc4733Receiver()
    assert feed_all(receiver, normal_press(1), ts=0xFFFFFF00, t0=0.0) == [DtmfDigit("1", 100, "rfc4733")]
    assert feed_all(receiver, normal_press(2), ts=0x00000300, t0=0.2) == [DtmfDigit("2", 100, "rfc4733")]


# --- sender --------------------------------------------------------------------------------------------------


def test_sender_sequence() -> None:
    packets = Rfc4733Sender().packets("7", duration_ms=100)
    assert [marker for _, marker, _ in packets] == [True] + [False] * 6
    assert [duration for _, _, duration in packets] == [160, 320, 480, 640, 800, 800, 800]
    parsed = [TelephoneEvent.parse(payload) for payload, _, _ in packets]
    assert [p.end for p in parsed] == [False] * 4 + [True] * 3
    assert {(p.event, p.volume) for p in parsed} == {(7, 10)}
    assert [p.duration for p in parsed] == [duration for _, _, duration in packets]


def test_sender_short_digit_and_options() -> None:
    packets = Rfc4733Sender().packets("#", duration_ms=20, volume=5)
    assert [(TelephoneEvent.parse(p), m) for p, m, _ in packets] == [
        (TelephoneEvent(11, True, 5, 160), True),
        (TelephoneEvent(11, True, 5, 160), False),
        (TelephoneEvent(11, True, 5, 160), False),
    ]
    wide = Rfc4733Sender(clock_rate=16000).packets("a", duration_ms=50, interval_ms=10)
    assert [d for _, _, d in wide] == [160, 320, 480, 640, 800, 800, 800]
    assert TelephoneEvent.parse(wide[0][0]).event == 12


@pytest.mark.parametrize(
    ("digit", "duration_ms", "volume"),
    [("E", 100, 10), ("", 100, 10), ("12", 100, 10), ("1", 0, 10), ("1", 100, 64), ("1", 9000, 10)],
)
def test_sender_rejects_impossible_requests(digit: str, duration_ms: int, volume: int) -> None:
    with pytest.raises(DtmfError):
        Rfc4733Sender().packets(digit, duration_ms, volume)


@pytest.mark.parametrize("digit", list(DIGITS))
def test_sender_to_receiver_round_trip(digit: str) -> None:
    receiver = Rfc4733Receiver()
    digits: list[DtmfDigit] = []
    for ts, duration in [(1000, 100), (5000, 250), (9000, 40)]:
        for i, (payload, marker, _) in enumerate(Rfc4733Sender().packets(digit, duration)):
            digits += receiver.feed(payload, ts, marker, ts / 8000 + 0.02 * i)
    assert digits == [DtmfDigit(digit, d, "rfc4733") for d in (100, 250, 40)]
    assert receiver.stats.duplicates == 6


# --- SIP INFO ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "digit", "duration"),
    [
        (b"Signal=5\r\nDuration=160\r\n", "5", 160),
        (b"Signal=5\r\n", "5", 100),
        (b"signal= #\nduration = 250\n", "#", 250),
        (b"SIGNAL=*\r\nDURATION=100", "*", 100),
        (b"Signal=10\r\nDuration=100\r\n", "*", 100),
        (b"Signal=11\r\nDuration=100\r\n", "#", 100),
        (b"Signal=d\r\nDuration=80\r\n", "D", 80),
        (b"Signal=0\r\nDuration=0\r\n", "0", 0),
        (b"Duration=300\r\nSignal=9\r\nX-Vendor=1\r\n\r\n", "9", 300),
    ],
)
def test_dtmf_relay(body: bytes, digit: str, duration: int) -> None:
    assert parse_dtmf_info("application/dtmf-relay", body) == DtmfDigit(digit, duration, "info")


@pytest.mark.parametrize(("body", "digit"), [(b"5", "5"), (b" 11\r\n", "#"), (b"*", "*"), (b"15", "D"), (b"b", "B")])
def test_application_dtmf(body: bytes, digit: str) -> None:
    assert parse_dtmf_info("application/dtmf", body) == DtmfDigit(digit, 100, "info")


def test_content_type_parameters_and_case() -> None:
    assert parse_dtmf_info("Application/DTMF-Relay; charset=us-ascii", b"Signal=1") == DtmfDigit("1", 100, "info")
    assert is_dtmf_info_type("application/dtmf-relay;x=y")
    assert is_dtmf_info_type(" APPLICATION/DTMF ")
    assert not is_dtmf_info_type("text/plain")
    assert not is_dtmf_info_type("")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"Signal=\r\n",
        b"Signal=16\r\nDuration=100\r\n",
        b"Signal=E\r\n",
        b"Signal=55\r\n",
        b"Duration=100\r\n",
        b"Signal=5\r\nDuration=abc\r\n",
        b"Signal=5\r\nDuration=-1\r\n",
        b"Signal=5\r\nDuration=99999999\r\n",
        b"Signal=5\r\ngarbage\r\n",
        b"Signal=\xe4\xb8\x80\r\n",
        b"Signal=\xff",
    ],
)
def test_bad_dtmf_relay_bodies(body: bytes) -> None:
    assert parse_dtmf_info("application/dtmf-relay", body) is None


@pytest.mark.parametrize("body", [b"", b"16", b"12 3", b"x", b"Signal=5"])
def test_bad_application_dtmf_bodies(body: bytes) -> None:
    assert parse_dtmf_info("application/dtmf", body) is None


def test_other_content_types_are_not_dtmf() -> None:
    assert parse_dtmf_info("text/plain", b"5") is None
    assert parse_dtmf_info("application/media_control+xml", b"Signal=5") is None
