"""The flows shipped in ivr_flows/: they lint clean against the demo configuration and do what elders and
supervisors expect (simulated on a clock; the emergency prompt is measured from real TTS audio)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcenter.config import load_config
from callcenter.ivr.commands import load_flows
from callcenter.ivr.context import CallerProfile, CallFacts
from callcenter.ivr.service import fixed_texts
from callcenter.ivr.simulator import simulate
from callcenter.ivr.tts import SpeechSynthesizer

REPO = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")
NIGHT = dt.datetime(2026, 11, 22, 23, 0, tzinfo=ZONE)
DAY = dt.datetime(2026, 11, 23, 10, 0, tzinfo=ZONE)
ELDER = CallerProfile(known=True, elder_id=1, name="王秀英", title="王奶奶", language="cmn",
                      family_numbers=("13900139001",))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory):
    config = load_config(REPO / "config" / "callcenter.yaml",
                         overrides={"flows.directory": str(REPO / "ivr_flows")})
    flows, errors = load_flows(config)
    assert errors == 0
    return config, flows


def button_call(shipped, button: str, caller: CallerProfile = ELDER, **kw):
    config, flows = shipped
    number = next(r for r in config.routing.numbers if r.button == button and r.flow == "terminal")
    return simulate(flows, "terminal", caller=caller, at=NIGHT,
                    facts=CallFacts("13800138001", number.number, button, number.emergency), **kw)


def test_every_shipped_flow_lints_clean_and_every_routed_flow_exists(shipped) -> None:
    config, flows = shipped
    assert set(flows) == {"terminal", "hotline", "after_hours"}
    assert {r.flow for r in config.routing.numbers if r.action == "flow"} <= set(flows)


def test_emergency_button_goes_straight_to_the_emergency_queue(shipped) -> None:
    sim = button_call(shipped, "emergency", digits=[])
    (queued,) = sim.call.queued
    assert (queued.queue, queued.priority, queued.level) == ("emergency", "emergency", 9)
    assert not [s for s in sim.steps if s.type in ("menu", "collect", "callback", "record")]  # no question asked
    unknown = button_call(shipped, "emergency", caller=CallerProfile())
    assert unknown.call.queued[0].queue == "emergency"  # an unknown caller's emergency is an emergency too


def test_emergency_prompt_before_ringing_is_under_two_seconds(shipped, tmp_path: Path) -> None:
    _, flows = shipped
    sim = button_call(shipped, "emergency")
    spoken = [s.node for s in sim.steps if s.type in ("say", "play")]
    node_texts = {n: flows["terminal"].document.nodes[n] for n in spoken}
    tts = SpeechSynthesizer(tmp_path)
    try:
        for language in ("cmn", "yue"):
            total = 0.0
            for node in node_texts.values():
                texts = node.text if isinstance(node.text, dict) else {language: node.text}
                total += tts.render(texts[language], language, node.rate or 150).duration
            assert total < 2.0, f"{language}: {total:.2f} s of prompts before the emergency queue"
    finally:
        tts.close()


def test_family_button_calls_the_first_family_number_or_falls_back(shipped) -> None:
    sim = button_call(shipped, "family")
    assert sim.result.outcome == "transferred" and sim.result.detail == "13900139001"
    none = button_call(shipped, "family", caller=CallerProfile(known=True, name="李桂兰"))
    assert none.call.queued[0].queue == "care_center"
    unanswered = button_call(shipped, "family", transfer_answers=False)
    assert unanswered.call.queued[0].queue == "care_center"


@pytest.mark.parametrize(("button", "queue"), [("care_center", "care_center"), ("care_station", "care_station"),
                                               ("committee", "community"), ("property", "community"),
                                               ("complaint", "complaint"), ("taxi", "taxi")])
def test_other_buttons_reach_their_queues_without_a_menu(shipped, button: str, queue: str) -> None:
    sim = button_call(shipped, button)
    assert sim.call.queued[0].queue == queue
    assert not [s for s in sim.steps if s.type == "menu"]


def test_hotline_by_day_menu_and_silence_reaches_a_person(shipped) -> None:
    _, flows = shipped
    facts = CallFacts("13800138001", "1000", "hotline")
    chose = simulate(flows, "hotline", caller=ELDER, facts=facts, at=DAY, digits=["3"])
    assert chose.call.queued[0].queue == "complaint"
    assert "早上好，王奶奶，欢迎致电养老服务热线。" in [e.text for e in chose.call.events if e.kind == "say"]
    silent = simulate(flows, "hotline", caller=CallerProfile(), facts=facts, at=DAY, digits=[])
    assert silent.call.queued[0].queue == "hotline"  # pressing nothing is never a dead end


def test_hotline_at_night_offers_callback_and_voicemail(shipped) -> None:
    _, flows = shipped
    facts = CallFacts("13800138001", "1000", "hotline")
    callback = simulate(flows, "hotline", caller=ELDER, facts=facts, at=NIGHT, digits=["2", "1"])
    assert callback.call.callbacks and callback.call.hung_up
    assert [s.flow for s in callback.steps][-1] == "after_hours"
    message = simulate(flows, "hotline", caller=ELDER, facts=facts, at=NIGHT, digits=["3"])
    assert [e.kind for e in message.call.events].count("record") == 1 and message.call.hung_up
    emergency = simulate(flows, "hotline", caller=ELDER, facts=facts, at=NIGHT, digits=["1"])
    assert emergency.call.queued[0].queue == "emergency"


def test_every_fixed_text_renders_without_english_fallback(shipped) -> None:
    import subprocess

    from callcenter.ivr.tts import LANGUAGE_VOICES, speakable

    _, flows = shipped
    for flow in flows.values():
        for text, language, _rate in fixed_texts(flow):
            phonemes = subprocess.run(["espeak-ng", "-q", "-x", "-v", LANGUAGE_VOICES[language],
                                       speakable(text, language)], capture_output=True, text=True, check=True)
            assert "(en)" not in phonemes.stdout, f"{flow.name}: {text!r} falls back to English"
