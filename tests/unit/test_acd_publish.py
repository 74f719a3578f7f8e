"""The ACD's steps and operator states reach the bus as typed events (and survive serialisation)."""

from __future__ import annotations

from types import SimpleNamespace

from callcenter.acd.events import QueueEvent
from callcenter.acd.operators import Operator, OperatorState
from callcenter.acd.publish import AcdPublisher
from callcenter.bus.events import OperatorStateChanged, QueueStep, event_from_dict
from callcenter.bus.inprocess import InProcessBus


def test_an_offer_is_published_with_who_is_calling_for_the_screen_pop() -> None:
    bus = InProcessBus()
    seen: list[QueueStep] = []
    bus.subscribe(QueueStep, seen.append)
    calls = {"c1": SimpleNamespace(caller_number="13800138000", elder_id=42, button="emergency")}
    AcdPublisher(bus, calls.get).record(QueueEvent(10.0, "offer", "c1", "emergency", "emergency", "op1"))
    AcdPublisher(bus, calls.get).record(QueueEvent(11.0, "abandon", "gone", "hotline", "normal", wait=3.0))
    assert [(s.kind, s.operator, s.caller, s.elder_id, s.button) for s in seen] == [
        ("offer", "op1", "13800138000", 42, "emergency"), ("abandon", None, None, None, None)]
    assert seen[1].wait == 3.0
    assert event_from_dict(seen[0].to_dict()) == seen[0]


def test_operator_state_changes_are_published() -> None:
    bus = InProcessBus()
    seen: list[OperatorStateChanged] = []
    bus.subscribe(OperatorStateChanged, seen.append)
    operator = Operator("op1", "Op 1", "1001", None, {}, {"hotline": 1}, 0.0)
    operator.listener = AcdPublisher(bus, lambda _: None).operator_changed
    operator.transition(OperatorState.AVAILABLE, 4.0)
    operator.transition(OperatorState.PAUSED, 5.0, reason="lunch")
    assert [(e.operator, e.old, e.new, e.reason) for e in seen] == [
        ("op1", "logged_out", "available", None), ("op1", "available", "paused", "lunch")]
    assert event_from_dict(seen[0].to_dict()) == seen[0]
