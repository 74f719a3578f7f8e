"""The supervisor's wallboard in headless Chromium, next to an operator's desk in a second browser.

The supervisor sees the queues and the operators; pauses operator1 from the wallboard and the operator's own page
shows the pause; an elder's call that nobody can take shows up as waiting, and leaves the board when the elder
hangs up.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.e2e.conftest import Browser, demo_elder, until
from tests.integration.engine import RunningEngine

pytestmark = pytest.mark.integration

CARE_CENTER_DID = "12341"  # the terminal's care-center button: the care_center queue, not an emergency


def operator_state(engine: RunningEngine, name: str) -> str | None:
    status, body = engine.api("GET", "/api/wallboard", user="supervisor")
    assert status == 200, f"GET /api/wallboard: {status} {body}"
    return next((op.get("state") for op in body.get("operators", []) if op.get("name") == name), None)


WAITING, ABANDONED = 1, 5  # columns of a queue's row: name, waiting, longest wait, service level, answered, abandoned


def queue_cell(board: Browser, queue: str, column: int) -> str:
    """A cell of a queue's row on the wallboard."""
    row = board.find(f"#wallboard-queues tr[data-queue='{queue}']")
    return str(row.find_elements(By.CSS_SELECTOR, "td")[column].text)


def test_supervisor_pauses_an_operator_and_sees_a_waiting_call(desk_engine: RunningEngine, browsers,
                                                                callers) -> None:
    engine = desk_engine
    _, elder_number = demo_elder()

    # -- operator1 at the desk, available ----------------------------------------------------------------------
    op = browsers("operator1", engine)
    op.login("operator1")
    op.select("#state-select", "available")
    until(lambda: operator_state(engine, "op1") == "available", "op1 does not become available")
    op.shot("operator-available")

    # -- the supervisor's wallboard: queues and operators -------------------------------------------------------
    board = browsers("supervisor", engine)
    board.login("supervisor", next_page="/wallboard")
    board.visible("#wallboard-queues tr[data-queue='emergency']")
    board.visible("#wallboard-queues tr[data-queue='care_center']")
    board.visible("#wallboard-operators [data-operator='op1'][data-state='available']")
    board.visible("#wallboard-operators [data-operator='op2']")
    board.shot("wallboard")

    # -- pause operator1 from the wallboard: the operator's page shows it ----------------------------------------
    board.click("#wallboard-operators [data-operator='op1'] [data-action='pause']")
    board.visible("#wallboard-operators [data-operator='op1'][data-state='paused']")
    until(lambda: operator_state(engine, "op1") == "paused", "op1 is not paused by the supervisor")
    op.wait_for(lambda d: str(d.find_element(By.CSS_SELECTOR, "#state-select").get_attribute("value"))
                .startswith("paused"), "the operator's page does not show the pause")
    board.shot("op1-paused")
    op.shot("paused-by-supervisor")

    # -- an elder calls the care center while nobody can answer: a waiting call on the board ----------------------
    caller = callers(engine, number=elder_number, did=CARE_CENTER_DID)
    caller.dial()
    board.wait_for(lambda _: queue_cell(board, "care_center", WAITING).startswith("1"),
                   "the waiting call does not show")
    board.visible("#wallboard-queues tr[data-queue='care_center'].waiting")
    board.shot("call-waiting")

    caller.hang_up()
    board.wait_for(lambda _: queue_cell(board, "care_center", WAITING).startswith("0"),
                   "the call still shows as waiting after the caller hung up")
    board.wait_for(lambda _: queue_cell(board, "care_center", ABANDONED) == "1", "the abandoned call is not counted")
    board.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#wallboard-kpi [data-kpi='wb_abandoned'] .value").text
                   == "1", "today's abandoned tile does not move with the queue")
    board.shot("caller-gone")

    # -- resume from the wallboard ------------------------------------------------------------------------------
    board.click("#wallboard-operators [data-operator='op1'] [data-action='available']")
    op.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, "#state-select").get_attribute("value") == "available",
                "the operator's page does not show the resume")
    op.shot("resumed")
