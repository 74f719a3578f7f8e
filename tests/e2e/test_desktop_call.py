"""The issue's proof, end to end: an elder presses the emergency button, the operator handles the call in the
browser.

Real pieces only: `callcenter serve`, headless Chromium (fake microphone: 1.6 kHz tone bursts), a caller on the
carrier trunk (tests/e2e/caller.py: sends a 600 Hz tone, keeps what it hears) and a SIPp UAS on the trunk standing
in for 120 (tools/sipp/acd_phone.xml, which logs every INVITE and BYE).

  operator1 logs in → browser softphone, available → the elder calls 12349 → the pop shows the elder's name and
  the emergency button BEFORE answer → answer → audio both ways (the caller hears the browser's tone; the browser
  receives the caller's RTP; the recording's "what the caller hears" channel holds the browser's tone) → a DTMF key
  reaches the caller as RFC 4733 → reload: the call and the pop come back and the audio flows again → three-way
  with 120 → hang up → service record saved → it is in the elder's history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.e2e.caller import CALLER_TONE_HZ, RtpCaller
from tests.e2e.conftest import BROWSER_TONE_HZ, WAIT, Artifacts, Browser, demo_elder, read_recording, tone_frames, until
from tests.integration.engine import TRUNK_HOST, RunningEngine
from tests.integration.peers import Sipp, free_port_range

pytestmark = pytest.mark.integration

EMERGENCY_DID = "12349"
HEARD_FRAMES = 10  # 20 ms frames of the other side's tone that prove audio arrived (0.2 s; the tone is 60 % on)


def current(engine: RunningEngine) -> dict[str, Any]:
    status, body = engine.api("GET", "/api/desk/current")
    assert status == 200, f"GET /api/desk/current: {status} {body}"
    return dict(body)


def operator_is(engine: RunningEngine, state: str, device: str | None = None) -> bool:
    operator = current(engine).get("operator") or {}
    return operator.get("state") == state and (device is None or operator.get("device") == device)


def call_state(engine: RunningEngine) -> str | None:
    call = current(engine).get("call")
    return call.get("state") if call else None


def softphone_connected(browser: Browser) -> bool:
    return bool(browser.driver.execute_script(
        "return (window.__e2ePeers || []).some((pc) => pc.connectionState === 'connected')"))


def browser_inbound(browser: Browser) -> tuple[int, float]:
    """(packets, totalAudioEnergy) the page's softphone has received so far."""
    inbound = [s for s in browser.peer_stats() if s.get("type") == "inbound-rtp"]
    return sum(int(s.get("packets") or 0) for s in inbound), sum(float(s.get("energy") or 0) for s in inbound)


def browser_hears(browser: Browser, before: tuple[int, float], energy: float = 0.002) -> tuple[int, float] | None:
    """The page's inbound audio once it has grown past ``before`` by packets and by ``energy`` (a tone at audio
    level 0.1 adds 0.01 a second; silence adds nothing)."""
    now = browser_inbound(browser)
    return now if now[0] > before[0] and now[1] - before[1] >= energy else None


def hears_browser(caller: RtpCaller, since: float) -> int:
    return tone_frames(caller.heard_since(since), BROWSER_TONE_HZ) >= HEARD_FRAMES


def start_service_120(sipp_factory: Callable[..., Sipp], engine: RunningEngine, log: Path) -> Sipp:
    """120's switchboard on the carrier's side: answers every call, logs INVITE and BYE lines."""
    return sipp_factory("acd_phone.xml", local_ip=TRUNK_HOST, local_port=engine.trunk_port,
                        media_port=free_port_range(4, "udp", host=TRUNK_HOST),
                        extra_args=["-trace_logs", "-log_file", str(log)]).start()


def test_operator_handles_an_emergency_call_in_the_browser(desk_engine: RunningEngine, browsers, callers,
                                                            sipp_factory, artifacts: Artifacts,
                                                            tmp_path: Path) -> None:
    engine = desk_engine
    elder_name, elder_number = demo_elder()
    service_log = tmp_path / "service120.log"
    start_service_120(sipp_factory, engine, service_log)

    # -- operator1 logs in, takes calls in the browser, becomes available ------------------------------------
    op = browsers("operator1", engine)
    op.login("operator1")
    op.visible("#pop")
    op.shot("desk-logged-in")
    op.select("#device-select", "browser")
    op.select("#state-select", "available")
    op.wait_for(lambda _: softphone_connected(op), "the browser softphone does not connect")
    until(lambda: operator_is(engine, "available", "browser"), "op1 is not available on the browser device")
    op.shot("available-softphone-connected")

    # -- the elder presses the emergency button: the pop comes before the answer -----------------------------
    idle = browser_inbound(op)
    caller = callers(engine, number=elder_number, did=EMERGENCY_DID)
    dialled = time.monotonic()
    caller.dial()
    op.text_in("#pop-name", elder_name)
    artifacts.figure("invite_to_pop_seconds (includes the IVR sentence; 0.2 s polling)", time.monotonic() - dialled)
    op.text_in("#pop-button", "紧急")
    op.visible("#btn-answer")
    assert call_state(engine) in (None, "ringing"), "the call was answered before the operator clicked"
    ringing = browser_inbound(op)
    artifacts.figure("browser_energy_while_idle_and_ringing", ringing[1] - idle[1])
    elder_id = op.find("#pop").get_attribute("data-elder-id")
    assert elder_id, "the pop does not name the elder's record"
    op.shot("pop-before-answer")

    # -- answer: audio both ways -------------------------------------------------------------------------------
    op.click("#btn-answer")
    until(lambda: call_state(engine) == "talking", "the call is not talking after the click on answer")
    answered = time.monotonic()
    op.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#call-timer").text not in ("", "0:00"),
                "the call timer does not run")
    until(lambda: hears_browser(caller, answered), "the caller does not hear the operator's microphone")
    artifacts.figure("answer_to_caller_hears_operator_seconds", time.monotonic() - answered)
    heard = op.wait_for(lambda _: browser_hears(op, ringing), "the browser does not hear the caller")
    artifacts.figure("answer_to_browser_hears_caller_seconds", time.monotonic() - answered)
    artifacts.figure("browser_energy_after_answer", heard[1] - ringing[1])
    assert ringing[1] - idle[1] < 0.002, "the browser heard something before the call was answered"
    op.shot("talking")

    # -- a key on the DTMF pad reaches the caller as RFC 4733 --------------------------------------------------
    op.click("#btn-dtmf")
    op.click("#dtmf-pad [data-dtmf='5']")
    until(lambda: "5" in caller.digits, "the caller did not receive the DTMF digit 5")
    op.shot("dtmf-sent")

    # -- reload during the call: the call and the pop come back, audio flows on the new media leg ---------------
    op.reload()
    op.text_in("#pop-name", elder_name)
    op.text_in("#pop-button", "紧急")
    op.visible("#btn-hangup")
    op.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#call-timer").text not in ("", "0:00"),
                "the call timer is not restored after the reload")
    op.wait_for(lambda _: softphone_connected(op), "the softphone does not reconnect after the reload")
    reloaded = time.monotonic()
    until(lambda: hears_browser(caller, reloaded), "the caller does not hear the operator after the reload")
    op.wait_for(lambda _: browser_hears(op, (0, 0.0)), "the reloaded page does not hear the caller")
    artifacts.figure("reconnected_to_audio_both_ways_seconds", time.monotonic() - reloaded)
    assert call_state(engine) == "talking"
    op.shot("restored-after-reload")

    # -- three-way call with 120 -------------------------------------------------------------------------------
    op.click("#btn-conf-120")
    until(lambda: "to=120" in (service_log.read_text() if service_log.exists() else ""), "120 was not called")
    until(lambda: len((current(engine).get("call") or {}).get("parties") or []) >= 1, "120 is not a party")
    op.visible("#call-parties li")
    op.shot("three-way-with-120")

    # -- hang up; the elder stays with 120 or is released; then the caller's line ends -------------------------
    op.click("#btn-hangup")
    until(lambda: call_state(engine) in (None, "ended"), "the operator's call does not end")
    artifacts.figure("caller_released_with_the_operator", caller.ended.is_set())
    if not caller.ended.is_set():  # the elder stays with 120 until hanging up
        caller.hang_up()
    until(lambda: " BYE " in service_log.read_text(), "120's leg was not hung up")
    op.shot("hung-up")

    # -- the service record ------------------------------------------------------------------------------------
    notes = f"e2e {elder_name} 已派120 {int(time.time())}"
    op.select_first("#record-disposition")
    op.type("#record-notes", notes)
    op.click("#btn-save-record")
    until(lambda: notes in str(engine.api("GET", f"/api/elders/{elder_id}/history")[1]),
          "the record is not in the elder's history")
    op.text_in("#history", notes)
    op.shot("record-in-history")

    # -- the recording: the caller on the left, the browser's tone on the right (what the caller heard) ---------
    finished = engine.wait_for_event("media.recording.finished", call_id=caller.call_id, timeout=WAIT)
    left, right = read_recording(Path(finished[0]["path"]))
    caller_frames, operator_frames = tone_frames(left, CALLER_TONE_HZ), tone_frames(right, BROWSER_TONE_HZ)
    artifacts.figure("recording_seconds", len(left) / 8000)
    artifacts.figure("recording_caller_tone_frames", caller_frames)
    artifacts.figure("recording_operator_tone_frames", operator_frames)
    assert caller_frames >= HEARD_FRAMES, "the recording lacks the caller"
    assert operator_frames >= 5 * HEARD_FRAMES, "the recording lacks the operator's audio"
