"""The media plane against real peers: DTMF (RFC 4733 pcaps, baresip, pyVoIP in-band tones), recording,
bridging a caller to an operator's desk phone."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.integration.engine import TRUNK_HOST, RunningEngine

pytestmark = pytest.mark.integration


def digits_of(engine: RunningEngine, call_id: str | None = None) -> str:
    events = engine.find("media.dtmf")
    return "".join(e["digit"] for e in events if call_id is None or e["call_id"] == call_id)


def test_rfc2833_digits_from_sipp_pcaps_are_received(engine: RunningEngine, sipp_factory) -> None:
    sipp = sipp_factory("uac_dtmf_pcap.xml", target=engine.sip_target, service="1000", local_ip=TRUNK_HOST,
                        max_calls=1, timeout=30, recv_timeout=15)
    result = sipp.run(timeout=40)
    assert result.successful == 1, str(result)
    (offered,) = engine.wait_for_event("call.offered", dialled="1000")
    engine.wait_for_event("media.dtmf", count=3, call_id=offered["call_id"])
    assert digits_of(engine, offered["call_id"]) == "12#"
    assert {e["source"] for e in engine.find("media.dtmf")} == {"rfc4733"}


DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209), "0": (941, 1336), "#": (941, 1477),
}


def dtmf_u8(digits: str, tone_ms: int = 120, gap_ms: int = 120) -> bytes:
    """Keypad tones as pyVoIP wants its audio: 8 kHz, 8-bit unsigned linear."""
    parts = [np.zeros(int(0.3 * 8000))]
    for d in digits:
        t = np.arange(int(tone_ms * 8)) / 8000
        low, high = DTMF_FREQS[d]
        parts.append(0.35 * np.sin(2 * np.pi * low * t) + 0.35 * np.sin(2 * np.pi * high * t))
        parts.append(np.zeros(int(gap_ms * 8)))
    signal = np.concatenate(parts)
    return (np.clip(signal * 127 + 128, 0, 255)).astype(np.uint8).tobytes()


def test_pyvoip_inband_tones_are_heard_by_the_detector(engine: RunningEngine, pyvoip_factory) -> None:
    host, port = engine.sip_target.split(":")
    phone = pyvoip_factory(host, int(port), "t0001", "secret-t0001")
    phone.start()
    call = phone.call("1000")
    phone.wait_answered(call, timeout=10)
    (offered,) = engine.wait_for_event("call.offered", dialled="1000")
    call.write_audio(dtmf_u8("159#"))
    engine.wait_for_event("media.dtmf", count=4, call_id=offered["call_id"], timeout=15)
    phone.hangup(call)
    assert digits_of(engine, offered["call_id"]) == "159#"
    assert {e["source"] for e in engine.find("media.dtmf", call_id=offered["call_id"])} == {"inband"}


def test_baresip_sends_rfc4733_digits(engine: RunningEngine, baresip_factory) -> None:
    phone = baresip_factory("1002", domain=engine.sip_target, password="secret1002", regint=600)
    phone.start()
    phone.dial(f"sip:1000@{engine.sip_target}")
    phone.wait_event("CALL_ESTABLISHED", timeout=10)
    (offered,) = engine.wait_for_event("call.offered", dialled="1000")
    time.sleep(0.5)
    for digit in "7*0":
        phone.send_dtmf(digit)
        time.sleep(0.4)
    engine.wait_for_event("media.dtmf", count=3, call_id=offered["call_id"], timeout=10)
    phone.hangup()
    assert digits_of(engine, offered["call_id"]) == "7*0"


def pcap_audio(path: Path) -> np.ndarray:
    """The PCM audio of an RTP pcap (A-law, as SIPp's g711a.pcap), decoded with our own tables."""
    import struct

    from callcenter.media.g711 import alaw_decode

    data = path.read_bytes()
    link = struct.unpack("<I", data[20:24])[0]
    offset, chunks = 24, []
    while offset < len(data):
        incl = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
        packet = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        hdr = 14 if link == 1 else 16
        ihl = (packet[hdr] & 0x0F) * 4
        rtp = packet[hdr + ihl + 8 :]
        if rtp[1] & 0x7F == 8:
            chunks.append(alaw_decode(rtp[12:]))
    return np.concatenate(chunks).astype(np.float64)


def best_correlation(reference: np.ndarray, recorded: np.ndarray) -> float:
    """Normalised cross-correlation of ``reference`` against ``recorded`` at the best alignment."""
    n = len(reference) + len(recorded)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(recorded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(corr[: len(recorded)]))
    window = recorded[lag : lag + len(reference)]
    ref = reference[: len(window)]
    return float(np.dot(ref, window) / (np.linalg.norm(ref) * np.linalg.norm(window) + 1e-9))


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    return frames[:, 0].astype(np.float64), frames[:, 1].astype(np.float64), 8000


def test_recording_caller_channel_correlates_with_what_the_caller_sent(engine: RunningEngine, sipp_factory) -> None:
    sipp = sipp_factory("uac_dtmf_pcap.xml", target=engine.sip_target, service="1000", local_ip=TRUNK_HOST,
                        max_calls=1, timeout=30, recv_timeout=15)
    assert sipp.run(timeout=40).successful == 1
    (offered,) = engine.wait_for_event("call.offered", dialled="1000")
    (finished,) = engine.wait_for_event("media.recording.finished", call_id=offered["call_id"])
    path = Path(finished["path"])
    assert offered["call_id"] not in str(path)  # file names never come from caller-supplied strings
    left, right, _ = read_stereo(path)
    # The scenario replays g711a.pcap for 5 s, then starts the DTMF pcaps (which end the audio replay).
    reference = pcap_audio(Path("/usr/share/sip-tester/g711a.pcap"))[: 8000 * 47 // 10]
    assert best_correlation(reference, left) > 0.9
    assert np.abs(right).max() > 100  # the caller heard music on hold, recorded on the right


def test_bridge_to_an_operator_phone_carries_audio_both_ways_and_records_stereo(
    engine: RunningEngine, sipp_factory, baresip_factory, tmp_path: Path
) -> None:
    """A terminal (SIPp, PCMA) calls 4000, which rings operator 1001's desk phone (baresip, PCMU, a 1 kHz tone
    for a voice): the engine answers the caller only when the phone answers, bridges (transcoding PCMA↔PCMU)
    and records caller left, operator right."""
    record = tmp_path / "operator"
    operator = baresip_factory("1001", domain=engine.sip_target, password="secret1001", regint=600,
                               answermode="auto", sine_hz=1000, record_dir=record)
    operator.start()
    sipp = sipp_factory("uac_dtmf_pcap.xml", target=engine.sip_target, service="4000", local_ip=TRUNK_HOST,
                        max_calls=1, timeout=30, recv_timeout=15)
    assert sipp.run(timeout=40).successful == 1
    (offered,) = engine.wait_for_event("call.offered", dialled="4000")
    (connected,) = engine.wait_for_event("call.connected", call_id=offered["call_id"])
    (finished,) = engine.wait_for_event("media.recording.finished", call_id=offered["call_id"])
    operator.wait_event("CALL_CLOSED", timeout=10)  # the caller's BYE hung up the operator's phone too
    left, right, rate = read_stereo(Path(finished["path"]))
    reference = pcap_audio(Path("/usr/share/sip-tester/g711a.pcap"))[: 8000 * 47 // 10]
    assert best_correlation(reference, left) > 0.9
    spectrum = np.abs(np.fft.rfft(right[: rate * 4]))
    assert abs(np.argmax(spectrum[1:]) * rate / (rate * 4) - 1000) < 20  # the operator's voice, right channel
    operator.stop()
    (heard,) = sorted(record.glob("dump-*-dec.wav"))[-1:]
    with wave.open(str(heard)) as w:
        op_rate, channels = w.getframerate(), w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)[::channels].astype(np.float64)
    if op_rate != 8000:
        samples = np.interp(np.arange(0, len(samples), op_rate / 8000), np.arange(len(samples)), samples)
    assert best_correlation(reference, samples) > 0.8  # the operator heard the caller (through PCMA→PCMU)
    assert connected["target"] == "1001"


def test_operator_hold_plays_music_to_the_caller(engine: RunningEngine, sipp_factory, baresip_factory) -> None:
    operator = baresip_factory("1001", domain=engine.sip_target, password="secret1001", regint=600,
                               answermode="auto", sine_hz=1000)
    operator.start()
    sipp = sipp_factory("uac_dtmf_pcap.xml", target=engine.sip_target, service="4000", local_ip=TRUNK_HOST,
                        max_calls=1, timeout=30, recv_timeout=15)
    sipp.start()
    (connected,) = engine.wait_for_event("call.connected", timeout=10)
    time.sleep(1.5)
    operator.command("hold")  # re-INVITE a=sendonly from the desk phone
    engine.wait_for_event("media.hold", held=True, timeout=5)
    time.sleep(2.0)
    operator.command("resume")
    engine.wait_for_event("media.hold", held=False, timeout=5)
    result = sipp.stop(grace=15)
    assert result.successful == 1, str(result)
    (finished,) = engine.wait_for_event("media.recording.finished", call_id=connected["call_id"])
    _, right, rate = read_stereo(Path(finished["path"]))

    def share_at_1khz(seconds: tuple[float, float]) -> float:
        part = right[int(seconds[0] * rate) : int(seconds[1] * rate)]
        spectrum = np.abs(np.fft.rfft(part)) ** 2
        freqs = np.fft.rfftfreq(len(part), 1 / rate)
        return float(spectrum[(freqs > 980) & (freqs < 1020)].sum() / (spectrum.sum() + 1e-9))

    assert [e["held"] for e in engine.find("media.hold")] == [True, False]
    assert share_at_1khz((0.3, 1.3)) > 0.8  # the operator's voice (a 1 kHz tone) before the hold
    assert share_at_1khz((2.2, 3.2)) < 0.2  # music on hold while held


def test_rtp_from_strangers_and_junk_never_disturb_a_call(engine: RunningEngine, baresip_factory) -> None:
    """While a caller uses the echo test, another host sprays our RTP port with junk and with well-formed
    RTP: the caller still hears itself, and the refused packets are counted."""
    import socket

    from callcenter.media.rtp import RtpPacket

    phone = baresip_factory("1001", domain=engine.sip_target, password="secret1001", regint=600, sine_hz=1000,
                            record_dir=engine.tmp / "rec")
    phone.start()
    phone.dial(f"sip:9196@{engine.sip_target}")
    phone.wait_event("CALL_ESTABLISHED", timeout=10)
    (answered,) = engine.wait_for_event("call.answered", timeout=5)
    time.sleep(0.5)
    low = engine.config["media"]["rtp_port_min"]
    rtp_ports = range(low, low + 20, 2)  # the call's port is among the first of the range
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.3", 0))
        for i in range(400):  # bounded: 400 packets per port at most, loopback only
            for p in rtp_ports:
                rtp = RtpPacket(payload_type=0, sequence=i, timestamp=i * 160, ssrc=0xBAD, payload=b"\x00" * 160)
                stranger.sendto(bytes(rtp) if i % 2 else b"\x13\x37" * 20, ("127.0.0.1", p))
            time.sleep(0.002)
    time.sleep(1.0)
    phone.hangup()
    phone.wait_event("CALL_CLOSED", timeout=10)
    phone.stop()
    status, body = engine.api("GET", "/api/status")
    media = body["counters"]["media"]
    assert media["strangers"] >= 100 and media["malformed"] >= 100, media
    assert answered
    received = sorted((engine.tmp / "rec").glob("dump-*-dec.wav"))[-1]
    with wave.open(str(received)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)[:: w.getnchannels()]
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    assert spectrum[(freqs > 980) & (freqs < 1020)].sum() / spectrum.sum() > 0.5  # still hears its own tone


def test_sip_info_dtmf_relay_is_received(engine: RunningEngine) -> None:
    from tests.integration.rawsip import RawSip, ack_for, bye_for, sdp_offer

    with RawSip(engine.sip_port, local_ip=TRUNK_HOST) as sip:
        invite, call_id = sip.request("INVITE", f"sip:1000@127.0.0.1:{engine.sip_port}", body=sdp_offer())
        sip.send(invite)
        ok = sip.final_response()
        assert ok.status == 200
        sip.send(ack_for(invite, ok))
        info = bye_for(invite, ok, cseq=2).replace(b"BYE ", b"INFO ", 1).replace(b"2 BYE", b"2 INFO")
        body = b"Signal=8\r\nDuration=160\r\n"
        info = info.replace(b"Content-Length: 0\r\n\r\n",
                            b"Content-Type: application/dtmf-relay\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
        sip.send(info)
        assert sip.final_response().status == 200
        sip.send(bye_for(invite, ok, cseq=3))
        assert sip.final_response().status == 200
    (digit,) = engine.wait_for_event("media.dtmf", call_id=call_id)
    assert (digit["digit"], digit["source"]) == ("8", "info")


def test_three_way_call_brings_120_into_the_conversation(
    engine: RunningEngine, sipp_factory, baresip_factory
) -> None:
    """The operator brings 120 in (API): the elder, the operator and the 120 seat (SIPp uas behind the carrier
    trunk, echoing what it hears) share a conference; when the elder hangs up, every leg is ended."""
    ambulance = sipp_factory("uas", local_ip=TRUNK_HOST, local_port=engine.trunk_port, max_calls=1,
                             timeout=30, recv_timeout=20, extra_args=["-rtp_echo"])
    ambulance.start()
    operator = baresip_factory("1001", domain=engine.sip_target, password="secret1001", regint=600,
                               answermode="auto", sine_hz=1000)
    operator.start()
    elder = sipp_factory("uac_dtmf_pcap.xml", target=engine.sip_target, service="4000", local_ip=TRUNK_HOST,
                         max_calls=1, timeout=30, recv_timeout=15)
    elder.start()
    (connected,) = engine.wait_for_event("call.connected", timeout=10)
    status, body = engine.api("POST", f"/api/calls/{connected['call_id']}/parties", {"number": "120"})
    assert status == 201, body
    (conference,) = engine.wait_for_event("call.conference", call_id=connected["call_id"], timeout=10)
    assert conference["members"] == 3
    assert elder.stop(grace=15).successful == 1
    engine.wait_for_event("call.ended", call_id=body["call_id"], timeout=10)  # 120's leg ended with the elder's
    operator.wait_event("CALL_CLOSED", timeout=10)
    result = ambulance.stop(grace=8)
    assert result.successful == 1 and result.failed == 0, str(result)
    (finished,) = engine.wait_for_event("media.recording.finished", call_id=connected["call_id"])
    _, right, rate = read_stereo(Path(finished["path"]))
    spectrum = np.abs(np.fft.rfft(right)) ** 2
    freqs = np.fft.rfftfreq(len(right), 1 / rate)
    assert spectrum[(freqs > 980) & (freqs < 1020)].sum() / spectrum.sum() > 0.3  # the elder heard the operator
