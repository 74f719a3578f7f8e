"""The engine against real SIP user agents: baresip (digest REGISTER, calls) and pyVoIP (a terminal)."""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_baresip_registers_with_digest_calls_and_hangs_up(engine_factory, baresip_factory) -> None:
    engine = engine_factory()
    phone = baresip_factory("1001", domain=engine.sip_target, password="secret1001", regint=600)
    phone.start()
    engine.wait_for_event("sip.registration.added", aor="sip:1001@test.callcenter")
    phone.dial(f"sip:1000@{engine.sip_target}")
    phone.wait_event("CALL_ESTABLISHED", timeout=10)
    (offered,) = engine.wait_for_event("call.offered", dialled="1000")
    assert offered["account"] == "1001"  # identified by its live registration
    time.sleep(0.5)
    phone.hangup()
    phone.wait_event("CALL_CLOSED", timeout=10)
    engine.wait_for_event("call.ended", call_id=offered["call_id"], reason="caller_bye")


def test_baresip_answers_the_invite_challenge_when_registration_is_not_trusted(engine_factory, baresip_factory):
    def strict(config: dict[str, Any]) -> None:
        config["sip"]["trust_registered_source"] = False

    engine = engine_factory(strict)
    phone = baresip_factory("1002", domain=engine.sip_target, password="secret1002", regint=600)
    phone.start()
    phone.dial(f"sip:1000@{engine.sip_target}")
    phone.wait_event("CALL_ESTABLISHED", timeout=10)
    (offered,) = engine.wait_for_event("call.offered", dialled="1000")
    assert offered["account"] == "1002"  # authenticated by digest on the INVITE itself
    phone.hangup()
    engine.wait_for_event("call.ended", call_id=offered["call_id"])


def test_wrong_password_is_refused(engine_factory, baresip_factory) -> None:
    engine = engine_factory()
    phone = baresip_factory("1001", domain=engine.sip_target, password="not-the-password", regint=600)
    phone.start(wait_registered=False)
    event = phone.wait_event("REGISTER_FAIL", timeout=10)
    assert "403" in str(event.get("param"))
    assert engine.find("sip.auth.failed")


def test_echo_test_number_returns_the_callers_audio(engine_factory, baresip_factory, tmp_path: Path) -> None:
    engine = engine_factory()
    record = tmp_path / "rec"
    phone = baresip_factory("1001", domain=engine.sip_target, password="secret1001", regint=600,
                            sine_hz=1000, record_dir=record)
    phone.start()
    phone.dial(f"sip:9196@{engine.sip_target}")
    phone.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(2.0)
    phone.hangup()
    phone.wait_event("CALL_CLOSED", timeout=10)
    phone.stop()
    received = sorted(record.glob("dump-*-dec.wav"))
    assert received, f"baresip wrote no received-audio file in {record}"
    with wave.open(str(received[-1])) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            samples = samples[:: w.getnchannels()]
    assert len(samples) > rate  # more than a second of audio came back
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    peak_hz = np.argmax(spectrum[1:]) * rate / len(samples)
    assert abs(peak_hz - 1000) < 30, f"echoed audio peaks at {peak_hz:.0f} Hz, expected our 1000 Hz tone"


def test_pyvoip_terminal_registers_calls_and_hangs_up(engine_factory, pyvoip_factory) -> None:
    engine = engine_factory()
    host, port = engine.sip_target.split(":")
    phone = pyvoip_factory(host, int(port), "t0001", "secret-t0001")
    phone.start()
    engine.wait_for_event("sip.registration.added", aor="sip:t0001@test.callcenter")
    call = phone.call("12349")
    phone.wait_answered(call, timeout=10)
    (offered,) = engine.wait_for_event("call.offered", dialled="12349")
    assert offered["account"] == "t0001" and offered["emergency"] is True
    time.sleep(0.3)
    phone.hangup(call)
    engine.wait_for_event("call.ended", call_id=offered["call_id"], reason="caller_bye")
