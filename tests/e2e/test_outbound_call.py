"""An outbound call from the desktop, end to end: the operator (browser softphone) opens an elder found by the
search, clicks "call" on the elder's family contact, the contact's phone (a SIPp UAS on the carrier trunk,
tools/sipp/acd_phone.xml) rings and answers, the desk shows the call with the elder's pop, direction "outbound",
then the operator hangs up.

Real pieces only: `callcenter serve`, headless Chromium with a fake microphone, SIPp on 127.0.0.2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.e2e.conftest import Artifacts, Browser, until
from tests.e2e.test_desktop_call import current, operator_is, softphone_connected
from tests.integration.engine import TRUNK_HOST, RunningEngine
from tests.integration.peers import SIPP_SCENARIO_DIR, Sipp, free_port_range
from tests.integration.test_engine_acd import phone_log

pytestmark = pytest.mark.integration

OPERATOR = "op1"  # operator1's operator in config/callcenter.yaml
ELDER_ID = 1  # 王秀英 of config/demo_elders.yaml
ELDER_NAME = "王秀英"
CONTACT_NUMBER = "13900139001"  # her daughter 张丽
RING_MS = 3000  # the contact's phone rings this long before answering: the desk shows "calling…" meanwhile


def contact_phone(sipp_factory: Callable[..., Sipp], engine: RunningEngine, tmp_path: Path, log: Path) -> Sipp:
    """The contact's phone behind the carrier: tools/sipp/acd_phone.xml (logs INVITE and BYE) ringing RING_MS."""
    text = (SIPP_SCENARIO_DIR / "acd_phone.xml").read_text()
    ringing = text.replace('  <send retrans="500">', f'  <pause milliseconds="{RING_MS}"/>\n  <send retrans="500">', 1)
    assert ringing != text
    scenario = tmp_path / "contact_phone.xml"
    scenario.write_text(ringing)
    return sipp_factory(scenario, local_ip=TRUNK_HOST, local_port=engine.trunk_port,
                        media_port=free_port_range(4, "udp", host=TRUNK_HOST),
                        extra_args=["-trace_logs", "-log_file", str(log)]).start()


def test_operator_calls_a_family_contact_from_the_pop(desk_engine: RunningEngine, browsers,
                                                      sipp_factory: Callable[..., Sipp], artifacts: Artifacts,
                                                      tmp_path: Path) -> None:
    engine = desk_engine
    contact_log = tmp_path / "contact.log"
    contact_phone(sipp_factory, engine, tmp_path, contact_log)

    op: Browser = browsers("operator1", engine)
    op.login("operator1")
    op.select("#device-select", "browser")
    op.select("#state-select", "available")
    op.wait_for(lambda _: softphone_connected(op), "the browser softphone does not connect")
    until(lambda: operator_is(engine, "available", "browser"), "op1 is not available on the browser device")

    # -- find the elder, open the profile: the contact has "call" (no call going on) ----------------------------
    op.click("#tab-elders")
    op.type("#elder-q", ELDER_NAME)
    op.find("#elder-q").submit()
    op.click(f"#elder-results button[data-elder-id='{ELDER_ID}']")
    op.text_in("#pop-name", ELDER_NAME)
    assert not op.driver.find_elements(By.CSS_SELECTOR, "#pop [data-contact-number]"), "bring-in outside a call"
    op.shot("profile-with-call-buttons")

    # -- call the contact: the contact's phone rings through the trunk ("calling…", cancel), then answers ----------
    op.click(f"#pop li.contact [data-dial-number='{CONTACT_NUMBER}']")
    until(lambda: f"to={CONTACT_NUMBER}" in (contact_log.read_text() if contact_log.exists() else ""),
          "the contact's phone was not called through the trunk")
    op.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#callbar").get_attribute("data-mode") == "dialling",
                "the call bar does not show the call being placed", timeout=RING_MS / 1000)
    op.text_in("#call-state", "正在呼叫")
    op.text_in("#btn-hangup", "取消")
    ringing = current(engine)["call"]
    assert (ringing["state"], ringing["kind"]) == ("ringing", "outbound"), ringing
    op.shot("outbound-ringing")
    until(lambda: (current(engine).get("call") or {}).get("state") == "talking", "the outbound call is not talking")
    call = current(engine)["call"]
    assert call["kind"] == "outbound" and call["device"] == "browser", call
    assert call["pop"]["call"]["direction"] == "outbound" and call["pop"]["elder"]["id"] == ELDER_ID, call["pop"]
    op.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#callbar").get_attribute("data-mode") == "talking",
                "the call bar does not show the call")
    op.text_in("#pop-name", ELDER_NAME)
    op.text_in("#pop", "呼出")  # the pop's direction
    assert op.find("#pop").get_attribute("data-elder-id") == str(ELDER_ID)
    assert op.find("#pop").get_attribute("data-call-id") == call["pop"]["call"]["call_id"]
    op.visible(f"#pop [data-contact-number='{CONTACT_NUMBER}']")  # during the call: bring-in again
    op.shot("outbound-talking")

    # -- hang up -----------------------------------------------------------------------------------------------
    op.click("#btn-hangup")
    until(lambda: current(engine).get("call") is None, "the outbound call does not end")
    until(lambda: any(kind == "BYE" for _, kind, _, _ in phone_log(contact_log)), "the contact got no BYE")
    op.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#callbar").get_attribute("data-mode") == "idle",
                "the call bar is not idle after the hang-up")
    op.shot("hung-up")
    (invite,) = [fields for _, kind, _, fields in phone_log(contact_log) if kind == "INVITE"]
    assert invite["to"] == CONTACT_NUMBER
    (ended,) = engine.wait_for_event("acd.outbound.ended", operator=OPERATOR)
    assert ended["reached"] is True and ended["call_id"] == call["call_id"]
