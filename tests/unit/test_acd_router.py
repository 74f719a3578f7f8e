"""The distributor (callcenter.acd.router) on a simulated clock with a fake telephone side.

The fake connector only records what the distributor asks of it; each test decides when an operator's phone
answers (``answer``) or fails (``distributor.not_answered``) and when conversations end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from callcenter.acd.events import EventList, QueueEvent
from callcenter.acd.model import AcdSettings, CallState, Offer, QueuedCall, QueueSettings
from callcenter.acd.operators import InvalidOperatorTransition, Operator, OperatorState
from callcenter.acd.router import Distributor
from callcenter.ivr.runner import QueueOutcome, QueueRequest

OS = OperatorState


class FakeConnector:
    """Records every request of the distributor; never reports anything by itself."""

    def __init__(self) -> None:
        self.rings: list[Offer] = []
        self.stopped: list[Offer] = []
        self.preempts: list[tuple[str, str, bool]] = []
        self.waits: list[str] = []
        self.announces: list[tuple[str, int, float | None]] = []
        self.overflows: list[tuple[str, str]] = []
        self.dead: set[str] = set()
        self.on_ring: Any = None  # optional hook: called with the offer inside ring()

    def ring(self, offer: Offer) -> None:
        self.rings.append(offer)
        if self.on_ring is not None:
            self.on_ring(offer)

    def stop_ringing(self, offer: Offer) -> None:
        self.stopped.append(offer)

    def preempted(self, call: QueuedCall, operator: Operator, *, requeued: bool) -> None:
        self.preempts.append((call.call_id, operator.name, requeued))

    def waiting(self, call: QueuedCall) -> None:
        self.waits.append(call.call_id)

    def announce(self, call: QueuedCall, position: int, wait_estimate: float | None) -> None:
        self.announces.append((call.call_id, position, wait_estimate))

    def overflow(self, call: QueuedCall, target: str) -> None:
        self.overflows.append((call.call_id, target))

    def alive(self, call: QueuedCall) -> bool:
        return call.call_id not in self.dead


def make_operator(name: str, *, skills: Mapping[str, int] | None = None, queues: Mapping[str, int] | None = None,
                  wrap_up: float = 0.0) -> Operator:
    return Operator(name, name.upper(), f"{name}-phone", name, dict(skills or {"cmn": 5}),
                    dict(queues or {"care": 1}), wrap_up)


def request(queue: str = "care", priority: str = "normal", level: int = 1, skills: Mapping[str, str] | None = None,
            max_wait: float | None = None) -> QueueRequest:
    return QueueRequest(queue, priority, level, dict(skills or {}), max_wait, None, "flow", "node")


class Rig:
    def __init__(self, operators: list[Operator], queues: list[QueueSettings] | None = None,
                 **settings: Any) -> None:
        self.clock = Clock()
        self.connector = FakeConnector()
        self.log = EventList()
        self.abandoned: list[tuple[str, float]] = []
        self.callbacks: list[str] = []
        self.outcomes: dict[str, list[Any]] = {}
        settings.setdefault("sweep_interval", 0.0)
        self.acd = Distributor(self.clock, self.connector, queues=queues or [QueueSettings("care")],
                               operators=operators, settings=AcdSettings(**settings), events=self.log,
                               on_abandon=lambda call, wait: self.abandoned.append((call.call_id, wait)),
                               on_preempt_callback=lambda call: self.callbacks.append(call.call_id))
        self.left: list[str] = []

    def login(self, *names: str) -> None:
        for name in names:
            self.acd.set_state(name, "available")

    def call(self, call_id: str, caller: str = "", **kw: Any) -> Deferred[QueueOutcome]:
        outcome = self.acd.enqueue(call_id, caller or f"tel-{call_id}", request(**kw),
                                   on_leave=lambda: self.left.append(call_id))
        results = self.outcomes.setdefault(call_id, [])
        outcome.addBoth(lambda r: results.append(r))
        return outcome

    def op(self, name: str) -> Operator:
        return self.acd.operators[name]

    def state(self, name: str) -> OperatorState:
        return self.acd.operators[name].state

    def offer(self, call_id: str, operator: str | None = None) -> Offer:
        live = [o for o in self.acd.offers.values()
                if o.call.call_id == call_id and (operator is None or o.operator.name == operator)]
        assert len(live) == 1, f"{call_id}/{operator}: {live}"
        return live[0]

    def ringing(self) -> list[tuple[str, str]]:
        """(call, operator) of every live offer, in offer order."""
        return [(o.call.call_id, o.operator.name) for o in sorted(self.acd.offers.values(), key=lambda o: o.id)]

    def answer(self, call_id: str, operator: str | None = None) -> Offer:
        offer = self.offer(call_id, operator)
        self.acd.answered(offer)
        return offer

    def talk(self, call_id: str, operator: str | None = None, seconds: float = 0.0) -> None:
        """Answer, talk, hang up."""
        self.answer(call_id, operator)
        self.clock.advance(seconds)
        self.acd.conversation_ended(call_id)

    def events(self, call_id: str | None = None, kind: str | None = None) -> list[QueueEvent]:
        return [e for e in self.log.events
                if (call_id is None or e.call_id == call_id) and (kind is None or e.kind == kind)]

    def kinds(self, call_id: str) -> list[tuple[str, str | None, str]]:
        return [(e.kind, e.operator, e.detail) for e in self.events(call_id)]

    def serve_in_order(self, operator: str) -> list[str]:
        """Let one operator take every waiting call; the order the calls were offered in."""
        order = []
        while self.acd.offers:
            offer = next(iter(self.acd.offers.values()))
            assert offer.operator.name == operator
            order.append(offer.call.call_id)
            self.talk(offer.call.call_id, operator, 1.0)
            self.clock.advance(self.op(operator).wrap_up)
        return order


def queue(name: str, **kw: Any) -> QueueSettings:
    return QueueSettings(name, **kw)


# -- order ------------------------------------------------------------------------------------------------
def test_order_is_class_then_queue_priority_then_level_then_arrival():
    rig = Rig([make_operator("a", queues={"care": 1, "hotline": 1})],
              [queue("care"), queue("hotline", priority=5)])
    rig.call("n1", level=1)
    rig.clock.advance(1)
    rig.call("n2", level=5)
    rig.clock.advance(1)
    rig.call("n3", queue="hotline", level=1)
    rig.clock.advance(1)
    rig.call("u1", priority="urgent", level=1)
    rig.clock.advance(1)
    rig.call("e1", priority="emergency", level=1)
    rig.clock.advance(1)
    rig.call("n4", level=5)
    rig.clock.advance(1)
    assert [c["call_id"] for c in rig.acd.snapshot()["care"]] == ["e1", "u1", "n2", "n4", "n1"]
    assert rig.acd.position("n1") == 5 and rig.acd.position("e1") == 1
    rig.login("a")
    assert rig.serve_in_order("a") == ["e1", "u1", "n3", "n2", "n4", "n1"]


def test_first_come_first_served_within_a_class():
    rig = Rig([make_operator("a")])
    for index in range(6):
        rig.call(f"c{index}", level=3)
        rig.clock.advance(0.5)
    rig.login("a")
    assert rig.serve_in_order("a") == [f"c{index}" for index in range(6)]
    connects = rig.events(kind="connect")
    assert [e.call_id for e in connects] == [f"c{index}" for index in range(6)]
    assert all(e.wait is not None and e.wait > 0 for e in connects)


# -- skills, levels, queues ----------------------------------------------------------------------------
def test_queue_required_skill_levels():
    rig = Rig([make_operator("low", skills={"cmn": 5, "yue": 2}, queues={"yue_line": 1}),
               make_operator("high", skills={"cmn": 1, "yue": 3}, queues={"yue_line": 1})],
              [queue("yue_line", skills={"yue": 3})])
    rig.login("low")
    rig.call("c1", queue="yue_line")
    assert rig.ringing() == [] and rig.acd.calls["c1"].state is CallState.WAITING
    rig.login("high")
    assert rig.ringing() == [("c1", "high")]
    assert rig.acd.calls["c1"].skills == {"yue": 3}


def test_flow_requested_skills():
    rig = Rig([make_operator("cmn_only", skills={"cmn": 9}),
               make_operator("yue1", skills={"cmn": 1, "yue": 1}),
               make_operator("yue4", skills={"yue": 4})])
    rig.login("cmn_only", "yue1", "yue4")
    rig.call("c1", skills={"language": "yue>=4"})
    assert rig.acd.calls["c1"].skills == {"yue": 4}
    assert rig.ringing() == [("c1", "yue4")]
    rig.call("c2", skills={"language": "yue"})
    assert rig.acd.calls["c2"].skills == {"yue": 1}
    assert rig.ringing() == [("c1", "yue4"), ("c2", "yue1")]
    rig.call("c3", skills={"language": "yue"})  # only cmn_only is free: c3 waits
    assert rig.acd.calls["c3"].state is CallState.WAITING
    assert rig.state("cmn_only") is OS.AVAILABLE


def test_queue_membership_and_weights():
    rig = Rig([make_operator("outsider", queues={"other": 9}),
               make_operator("light", queues={"care": 1}),
               make_operator("heavy", queues={"care": 5})],
              [queue("care"), queue("other")])
    rig.login("light")
    rig.clock.advance(10)  # light has been idle longest
    rig.login("heavy", "outsider")
    rig.call("c1")
    assert rig.ringing() == [("c1", "heavy")]  # the higher weight wins over the longer idle time
    rig.call("c2")
    assert rig.ringing() == [("c1", "heavy"), ("c2", "light")]
    rig.call("c3")
    assert rig.acd.calls["c3"].state is CallState.WAITING  # outsider does not serve care
    assert rig.state("outsider") is OS.AVAILABLE


# -- strategies --------------------------------------------------------------------------------------------
def test_longest_idle():
    rig = Rig([make_operator("a"), make_operator("b"), make_operator("c")])
    rig.login("b")
    rig.clock.advance(1)
    rig.login("c")
    rig.clock.advance(1)
    rig.login("a")
    rig.clock.advance(1)
    rig.call("c1")
    rig.call("c2")
    assert rig.ringing() == [("c1", "b"), ("c2", "c")]
    rig.talk("c1", "b", 5)
    rig.clock.advance(0)  # wrap-up of 0 s
    rig.call("c3")
    assert rig.ringing()[-1] == ("c3", "a")  # a idle since t=2, b only since now
    rig.call("c4")
    assert rig.ringing()[-1] == ("c4", "b")


def test_round_robin():
    rig = Rig([make_operator(n) for n in "abc"], [queue("care", strategy="round_robin")])
    rig.login("c", "b", "a")
    seen = []
    for index in range(5):
        rig.call(f"c{index}")
        (_, operator), = rig.ringing()
        seen.append(operator)
        rig.talk(f"c{index}", operator, 1)
    assert seen == ["a", "b", "c", "a", "b"]


def test_fewest_calls():
    rig = Rig([make_operator(n) for n in "abc"], [queue("care", strategy="fewest_calls")])
    rig.login("a", "b", "c")
    rig.op("a").calls_today = 3
    rig.op("b").calls_today = 1
    rig.op("c").calls_today = 2
    rig.call("c1")
    assert rig.ringing() == [("c1", "b")]
    rig.talk("c1", "b", 1)
    assert rig.op("b").calls_today == 2
    rig.call("c2")
    assert rig.ringing() == [("c2", "c")]  # b and c both have 2 calls: c has been idle longer


def test_ring_all_first_answer_wins_and_the_others_are_withdrawn_without_a_miss():
    rig = Rig([make_operator(n, queues={"care": 1}) for n in "abc"] + [make_operator("d", queues={"care": 0})],
              [queue("care", strategy="ring_all")])
    rig.login("a", "b", "c", "d")
    outcome = rig.call("c1")
    assert sorted(rig.ringing()) == [("c1", "a"), ("c1", "b"), ("c1", "c")]  # d's weight is lower
    assert rig.state("d") is OS.AVAILABLE
    rig.answer("c1", "b")
    assert rig.ringing() == []
    assert sorted(o.operator.name for o in rig.connector.stopped) == ["a", "c"]
    assert rig.state("b") is OS.TALKING and rig.state("a") is OS.AVAILABLE and rig.state("c") is OS.AVAILABLE
    assert [(e.operator, e.detail) for e in rig.events("c1", "miss")] == [("a", "answered_elsewhere"),
                                                                         ("c", "answered_elsewhere")]
    assert all(rig.op(n).counters["misses"] == 0 and rig.op(n).missed_in_row == 0 for n in "abc")
    assert rig.acd.counters["missed"] == 0
    assert rig.outcomes["c1"] == [QueueOutcome("answered", "b")]
    assert outcome.called
    assert rig.connector.waits == []  # regression: withdrawing the others announced the call as waiting again
    # a late answer of a withdrawn offer changes nothing
    rig.acd.answered(rig.connector.rings[0])
    assert rig.state("a") is OS.AVAILABLE and rig.acd.calls["c1"].operator is rig.op("b")


# -- offers that are not taken --------------------------------------------------------------------------
def test_reservation_timer_withdraws_the_offer_counts_a_miss_and_rings_the_next_operator():
    rig = Rig([make_operator("a"), make_operator("b")], ring_timeout=15, reservation_margin=5)
    rig.login("a")
    rig.clock.advance(1)
    rig.login("b")
    rig.call("c1")
    assert rig.ringing() == [("c1", "a")]
    rig.clock.advance(19.9)
    assert rig.state("a") is OS.RESERVED and rig.connector.stopped == []
    rig.clock.advance(0.1)
    assert [o.operator.name for o in rig.connector.stopped] == ["a"]
    assert rig.kinds("c1")[-3:] == [("offer", "a", ""), ("miss", "a", "timeout"), ("offer", "b", "")]
    assert rig.op("a").counters["misses"] == 1 and rig.op("a").missed_in_row == 1
    assert rig.state("a") is OS.AVAILABLE and rig.state("b") is OS.RESERVED
    assert rig.ringing() == [("c1", "b")]


def test_not_answered_keeps_the_call_waiting_and_counts_a_miss():
    rig = Rig([make_operator("a")])
    rig.login("a")
    rig.call("c1")
    rig.call("c2")
    offer = rig.offer("c1")
    rig.acd.not_answered(offer, "busy")
    assert rig.events("c1", "miss")[-1].detail == "busy"
    assert rig.connector.stopped == []  # the phone already told us; nothing to stop
    assert rig.ringing() == [("c1", "a")]  # c1 kept its place in front of c2
    rig.acd.not_answered(offer, "busy")  # a stale report is ignored
    assert rig.op("a").counters["misses"] == 1


def test_auto_pause_after_max_missed_in_a_row():
    rig = Rig([make_operator("a")], max_missed=3)
    rig.login("a")
    rig.call("c1")
    rig.acd.not_answered(rig.offer("c1"), "no_answer")
    rig.acd.not_answered(rig.offer("c1"), "no_answer")
    rig.talk("c1", "a")  # an answer resets the count
    rig.clock.advance(0)  # wrap-up of 0 s
    assert rig.op("a").missed_in_row == 0
    rig.call("c2")
    for _ in range(3):
        assert rig.state("a") is OS.RESERVED
        rig.acd.not_answered(rig.offer("c2"), "no_answer")
    assert rig.state("a") is OS.PAUSED and rig.op("a").pause_reason == "missed_offers"
    assert rig.acd.counters["auto_paused"] == 1 and rig.op("a").counters["misses"] == 5
    assert rig.acd.calls["c2"].state is CallState.WAITING
    rig.clock.advance(600)
    assert rig.state("a") is OS.PAUSED  # never logged out, never back by itself
    rig.login("a")
    assert rig.op("a").missed_in_row == 0 and rig.ringing() == [("c2", "a")]


# -- wrap-up, pause and logout ----------------------------------------------------------------------------
def test_wrap_up_timer_makes_the_operator_available():
    rig = Rig([make_operator("a", wrap_up=30)])
    rig.login("a")
    rig.call("c1")
    rig.talk("c1", "a", 40)
    rig.call("c2")
    assert rig.state("a") is OS.WRAP_UP and rig.op("a").call_id is None
    assert rig.acd.calls["c2"].state is CallState.WAITING
    rig.clock.advance(29.9)
    assert rig.state("a") is OS.WRAP_UP
    rig.clock.advance(0.1)
    assert rig.ringing() == [("c2", "a")]
    complete, = rig.events("c1", "complete")
    wrapup, = rig.events("c1", "wrapup")
    assert complete.seconds == 40 and complete.operator == "a"
    assert wrapup.seconds == pytest.approx(30) and wrapup.operator == "a"
    assert rig.left == ["c1"]


def test_talk_time_of_a_call_connected_at_clock_zero():
    """Regression: ``connected_at or now`` took a connection at clock time 0.0 for "never connected": the talk
    time was 0 and the pre-emption victim was chosen as if the call had just started."""
    rig = Rig([make_operator("a")])
    rig.login("a")
    rig.call("c1")
    rig.answer("c1")
    assert rig.acd.calls["c1"].connected_at == 0.0
    rig.clock.advance(25)
    rig.acd.conversation_ended("c1")
    assert rig.events("c1", "complete")[0].seconds == 25


def test_available_during_wrap_up_ends_it():
    rig = Rig([make_operator("a", wrap_up=30)])
    rig.login("a")
    rig.call("c1")
    rig.talk("c1", "a", 5)
    rig.call("c2")
    rig.clock.advance(4)
    rig.acd.set_state("a", "available")
    assert rig.ringing() == [("c2", "a")]
    assert rig.events("c1", "wrapup")[0].seconds == 4
    rig.clock.advance(30)  # the old wrap-up timer is gone
    assert rig.state("a") is OS.RESERVED and len(rig.events(kind="wrapup")) == 1


def test_pause_asked_during_a_call_is_applied_after_the_call_and_wrap_up():
    rig = Rig([make_operator("a", wrap_up=10)])
    rig.login("a")
    rig.call("c1")
    rig.answer("c1")
    rig.acd.set_state("a", "paused", "lunch")
    assert rig.state("a") is OS.TALKING and rig.op("a").pending == (OS.PAUSED, "lunch")
    rig.clock.advance(20)
    rig.acd.conversation_ended("c1")
    assert rig.state("a") is OS.WRAP_UP
    rig.call("c2")
    rig.clock.advance(10)
    assert rig.state("a") is OS.PAUSED and rig.op("a").pause_reason == "lunch" and rig.op("a").pending is None
    assert rig.acd.calls["c2"].state is CallState.WAITING


def test_logout_asked_while_ringing_is_applied_when_the_offer_ends():
    rig = Rig([make_operator("a"), make_operator("b")])
    rig.login("a")
    rig.call("c1")
    rig.acd.set_state("a", "logged_out")
    assert rig.state("a") is OS.RESERVED
    rig.acd.not_answered(rig.offer("c1"), "no_answer")
    assert rig.state("a") is OS.LOGGED_OUT and rig.op("a").call_id is None
    rig.login("b")
    assert rig.ringing() == [("c1", "b")]


def test_available_asked_during_a_call_cancels_a_pending_pause():
    rig = Rig([make_operator("a")])
    rig.login("a")
    rig.call("c1")
    rig.acd.set_state("a", "paused", "lunch")
    rig.acd.set_state("a", "available")
    assert rig.op("a").pending is None
    rig.talk("c1", "a", 3)
    rig.clock.advance(0)
    assert rig.state("a") is OS.AVAILABLE


# -- callers who hang up ------------------------------------------------------------------------------------
def test_caller_hangs_up_while_waiting():
    rig = Rig([make_operator("a")])
    rig.call("c1")
    rig.clock.advance(12)
    rig.acd.leave("c1", "caller_hangup")
    assert rig.kinds("c1") == [("enter", None, ""), ("abandon", None, "")]
    assert rig.events("c1", "abandon")[0].wait == 12
    assert rig.abandoned == [("c1", 12)]
    assert rig.outcomes["c1"] == [QueueOutcome("caller_hangup")]
    assert "c1" not in rig.acd.calls and rig.acd.waiting == [] and rig.left == ["c1"]
    assert rig.acd.leave("c1", "caller_hangup") is None  # twice is harmless
    assert len(rig.abandoned) == 1


def test_cancelling_the_flow_deferred_is_a_hang_up():
    rig = Rig([make_operator("a")])
    outcome = rig.call("c1")
    rig.clock.advance(3)
    outcome.cancel()
    assert rig.outcomes["c1"][0].check(CancelledError)
    assert [e.kind for e in rig.events("c1")] == ["enter", "abandon"] and rig.abandoned == [("c1", 3)]
    assert "c1" not in rig.acd.calls


def test_caller_hangs_up_while_ringing_frees_the_operator_without_a_miss():
    rig = Rig([make_operator("a")])
    rig.login("a")
    rig.call("c1")
    rig.clock.advance(4)
    rig.acd.leave("c1", "caller_hangup")
    assert [o.call.call_id for o in rig.connector.stopped] == ["c1"]
    assert rig.kinds("c1") == [("enter", None, ""), ("offer", "a", ""), ("abandon", None, ""),
                               ("miss", "a", "caller_gone")]
    assert rig.state("a") is OS.AVAILABLE and rig.op("a").call_id is None
    assert rig.op("a").counters["misses"] == 0 and rig.op("a").missed_in_row == 0
    assert rig.acd.offers == {} and rig.abandoned == [("c1", 4)]
    assert rig.connector.waits == []  # no music for a caller who is gone


def test_hang_up_of_a_connected_call_ends_the_conversation():
    rig = Rig([make_operator("a", wrap_up=5)])
    rig.login("a")
    rig.call("c1")
    rig.answer("c1")
    rig.clock.advance(7)
    rig.acd.leave("c1", "caller_hangup")
    assert [e.kind for e in rig.events("c1")] == ["enter", "offer", "connect", "complete"]
    assert rig.abandoned == [] and rig.state("a") is OS.WRAP_UP


# -- rejoin, aging, max wait, overflow ------------------------------------------------------------------------
def test_rejoin_within_the_window_keeps_the_old_position():
    rig = Rig([make_operator("a")], [queue("care", rejoin_window=120)])
    rig.call("c1", caller="555")
    rig.clock.advance(5)
    rig.call("c2", caller="666")
    rig.clock.advance(5)
    rig.acd.leave("c1", "caller_hangup")
    rig.clock.advance(100)
    rig.call("c3", caller="555")
    assert rig.events("c3", "enter")[0].detail == "rejoin"
    assert rig.acd.position("c3") == 1 and rig.acd.position("c2") == 2
    assert rig.acd.calls["c3"].entered_at == 0 and rig.acd.calls["c3"].first_entered_at == 110
    rig.login("a")
    assert rig.serve_in_order("a") == ["c3", "c2"]
    assert rig.events("c3", "connect")[0].wait == 0  # waits are measured from the new arrival


def test_rejoin_outside_the_window_is_a_new_arrival():
    rig = Rig([make_operator("a")], [queue("care", rejoin_window=120)])
    rig.call("c1", caller="555")
    rig.clock.advance(5)
    rig.call("c2", caller="666")
    rig.clock.advance(5)
    rig.acd.leave("c1", "caller_hangup")
    rig.clock.advance(121)
    rig.call("c3", caller="555")
    assert rig.events("c3", "enter")[0].detail == ""
    assert rig.acd.position("c3") == 2 and rig.acd.position("c2") == 1


def test_aging_raises_the_level_but_never_out_of_the_class():
    rig = Rig([make_operator("a")], [queue("care", aging=10)])
    rig.call("old", level=1)  # t=0
    rig.clock.advance(35)
    rig.call("new", level=3)  # t=35
    rig.clock.advance(4)
    rig.call("urgent", priority="urgent", level=1)  # t=39
    rig.clock.advance(1)  # t=40: old is level 5, new is level 3
    assert rig.acd.calls["old"].level_at(40) == 5 and rig.acd.calls["new"].level_at(40) == 3
    assert rig.acd.calls["old"].level_at(10_000) == 9
    rig.login("a")
    assert rig.serve_in_order("a") == ["urgent", "old", "new"]


def test_without_aging_the_level_decides():
    rig = Rig([make_operator("a")])
    rig.call("old", level=1)
    rig.clock.advance(35)
    rig.call("new", level=3)
    rig.clock.advance(5)
    rig.login("a")
    assert rig.serve_in_order("a") == ["new", "old"]


def test_max_wait_of_the_request_fires_timeout():
    rig = Rig([make_operator("a")])
    rig.call("c1", max_wait=30)
    rig.clock.advance(29.9)
    assert rig.outcomes["c1"] == []
    rig.clock.advance(0.1)
    assert rig.outcomes["c1"] == [QueueOutcome("timeout")]
    assert rig.kinds("c1") == [("enter", None, ""), ("timeout", None, "flow")]
    assert "c1" not in rig.acd.calls and rig.left == ["c1"] and rig.abandoned == []


def test_max_wait_while_ringing_withdraws_the_offer_without_a_miss():
    rig = Rig([make_operator("a")])
    rig.login("a")
    rig.call("c1", max_wait=10)
    rig.clock.advance(10)
    assert rig.outcomes["c1"] == [QueueOutcome("timeout")]
    assert rig.state("a") is OS.AVAILABLE and rig.op("a").counters["misses"] == 0
    assert [o.call.call_id for o in rig.connector.stopped] == ["c1"] and rig.acd.offers == {}


def test_queue_overflow_to_another_queue_keeps_the_flow_waiting():
    rig = Rig([make_operator("a", queues={"backup": 1})],
              [queue("care", max_wait=30, overflow="queue:backup"), queue("backup")])
    outcome = rig.call("c1")
    rig.clock.advance(30)
    assert not outcome.called
    call = rig.acd.calls["c1"]
    assert call.queue.name == "backup" and call.first_entered_at == 30
    assert [(e.kind, e.queue, e.detail) for e in rig.events("c1")] == [
        ("enter", "care", ""), ("timeout", "care", "queue:backup"), ("enter", "backup", "overflow")]
    rig.clock.advance(5)
    rig.login("a")
    rig.answer("c1")
    assert rig.outcomes["c1"] == [QueueOutcome("answered", "a")]
    assert rig.events("c1", "connect")[0].wait == 5


def test_queue_overflow_to_voicemail():
    rig = Rig([], [queue("care", max_wait=20, overflow="voicemail")])
    rig.call("c1")
    rig.clock.advance(20)
    assert rig.outcomes["c1"] == [QueueOutcome("overflow", "voicemail")]
    assert rig.connector.overflows == [("c1", "voicemail")]
    assert "c1" not in rig.acd.calls


def test_queue_overflow_callback_is_an_offer_the_caller_may_decline():
    rig = Rig([], [queue("care", max_wait=20, overflow="callback")])
    rig.call("c1")
    rig.call("c2")
    rig.clock.advance(20)
    assert rig.connector.overflows == [("c1", "callback"), ("c2", "callback")]
    assert rig.outcomes.get("c1", []) == [] and rig.acd.position("c1") == 1  # still waiting, same place
    assert rig.events("c1", "timeout") == []
    assert rig.acd.take_callback("c2") is True  # c2 pressed 1
    assert rig.outcomes["c2"] == [QueueOutcome("overflow", "callback")]
    assert [(e.kind, e.detail) for e in rig.events("c2")][-1] == ("timeout", "callback")
    assert "c2" not in rig.acd.calls and rig.acd.take_callback("c2") is False
    rig.clock.advance(20)  # c1 declined: offered again after another max_wait
    assert rig.connector.overflows[-1] == ("c1", "callback") and len(rig.connector.overflows) == 3


def test_announcements_of_position_and_wait():
    rig = Rig([make_operator("a")], [queue("care", announce_position=True, announce_wait=True,
                                           announce_every=30)])
    rig.call("c1")
    rig.call("c2")
    rig.clock.advance(15)
    assert [(c, p) for c, p, _ in rig.connector.announces] == [("c1", 1), ("c2", 2)]
    assert all(w is not None and w > 0 for _, _, w in rig.connector.announces)
    rig.clock.advance(30)
    assert len(rig.connector.announces) == 4


# -- line seize -------------------------------------------------------------------------------------------------
def seize_rig(**settings: Any) -> Rig:
    """Three operators serving care and the emergency queue; b talks to a normal call (long), c to a normal
    call (short), a to an urgent call (shortest)."""
    rig = Rig([make_operator(n, queues={"care": 1, "emergency": 1}) for n in "abc"],
              [queue("care"), queue("emergency", strategy="ring_all")], **settings)
    rig.login("a", "b", "c")
    rig.call("long", level=1)
    rig.answer("long", "a")
    rig.clock.advance(100)
    rig.call("short", level=1)
    rig.answer("short", "b")
    rig.clock.advance(50)
    rig.call("urg", priority="urgent", level=1)
    rig.answer("urg", "c")
    rig.clock.advance(10)
    rig.call("older", level=9)  # waiting normal call that arrived before the pre-emption
    rig.clock.advance(1)
    return rig


def test_emergency_preempts_the_lowest_priority_shortest_talk():
    rig = seize_rig()
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.connector.preempts == [("short", "b", True)]
    victim = rig.acd.calls["short"]
    assert victim.state is CallState.WAITING and victim.head and victim.operator is None
    assert rig.kinds("short")[-2:] == [("preempt", "b", "sos"), ("enter", None, "requeue")]
    assert rig.events("short", "preempt")[0].seconds == 61
    assert rig.state("b") is OS.RESERVED and rig.ringing() == [("sos", "b")]
    assert rig.events("sos", "offer")[0].detail == "seize"
    assert rig.acd.position("short") == 1 and rig.acd.position("older") == 2  # head of its class
    assert rig.state("a") is OS.TALKING and rig.state("c") is OS.TALKING
    assert rig.outcomes["short"] == [QueueOutcome("answered", "b")]  # the flow is not told twice
    rig.answer("sos", "b")
    rig.acd.conversation_ended("sos")
    rig.clock.advance(0)
    assert rig.ringing() == [("short", "b")]  # the victim first, before the older normal call
    rig.answer("short", "b")
    assert [e.wait for e in rig.events("short", "connect")] == [0, 61]
    assert rig.acd.calls["short"].head is False


def test_victim_longest_talk():
    rig = seize_rig(victim="longest_talk")
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.connector.preempts == [("long", "a", True)]  # normal before urgent, then longest talk


def test_urgent_is_preempted_only_when_no_normal_call_is_left():
    rig = Rig([make_operator("a", queues={"care": 1, "emergency": 1})],
              [queue("care"), queue("emergency")])
    rig.login("a")
    rig.call("urg", priority="urgent")
    rig.answer("urg")
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.connector.preempts == [("urg", "a", True)]


def test_on_preempt_callback():
    rig = seize_rig(on_preempt="callback")
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.connector.preempts == [("short", "b", False)]
    assert rig.callbacks == ["short"]
    assert "short" not in rig.acd.calls and rig.acd.position("short") is None
    assert [e.kind for e in rig.events("short")][-1] == "preempt"
    assert rig.ringing() == [("sos", "b")]


def test_seize_after_waits_first():
    rig = seize_rig(seize_after=30)
    rig.call("sos", queue="emergency", priority="emergency")
    rig.clock.advance(29.9)
    assert rig.connector.preempts == [] and rig.acd.calls["sos"].state is CallState.WAITING
    rig.clock.advance(0.1)
    assert rig.connector.preempts == [("short", "b", True)]
    assert rig.ringing() == [("sos", "b")]


def test_seize_after_an_operator_freed_meanwhile_takes_the_call_normally():
    rig = seize_rig(seize_after=30)
    rig.call("sos", queue="emergency", priority="emergency")
    rig.clock.advance(10)
    rig.acd.conversation_ended("long")
    rig.clock.advance(0)
    assert rig.ringing() == [("sos", "a")] and rig.connector.preempts == []
    assert rig.events("sos", "offer")[0].detail == ""


def test_operator_in_wrap_up_is_taken_before_any_preemption():
    rig = seize_rig()
    for n in "abc":
        rig.op(n).wrap_up = 60
    rig.acd.conversation_ended("long")
    assert rig.state("a") is OS.WRAP_UP
    rig.clock.advance(2)
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.connector.preempts == []
    assert rig.ringing() == [("sos", "a")] and rig.acd.counters["seized_wrap_up"] == 1
    assert rig.events("long", "wrapup")[0].seconds == 2
    assert rig.events("sos", "offer")[0].detail == "seize"
    rig.clock.advance(60)  # the cancelled wrap-up timer does not free the operator
    assert rig.state("a") is OS.RESERVED


def test_ringing_normal_offer_is_withdrawn_before_a_talk_is_preempted():
    rig = seize_rig()
    rig.acd.operators["d"] = make_operator("d", queues={"care": 1, "emergency": 1})
    rig.login("d")
    assert rig.ringing() == [("older", "d")]
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.connector.preempts == []
    assert rig.ringing() == [("sos", "d")]
    assert [o.call.call_id for o in rig.connector.stopped] == ["older"]
    assert rig.events("older", "miss")[-1].detail == "seized"
    assert rig.op("d").counters["misses"] == 0 and rig.op("d").missed_in_row == 0
    assert rig.acd.calls["older"].state is CallState.WAITING


def test_an_emergency_is_never_preempted():
    rig = Rig([make_operator(n, queues={"emergency": 1}) for n in "ab"], [queue("emergency")])
    rig.login("a", "b")
    rig.call("e1", queue="emergency", priority="emergency")
    rig.call("e2", queue="emergency", priority="emergency")
    rig.answer("e1")
    rig.clock.advance(5)
    rig.answer("e2")
    rig.call("e3", queue="emergency", priority="emergency", level=9)
    rig.clock.advance(60)
    assert rig.connector.preempts == [] and rig.events(kind="preempt") == []
    assert rig.acd.calls["e3"].state is CallState.WAITING
    assert rig.state("a") is OS.TALKING and rig.state("b") is OS.TALKING
    rig.acd.conversation_ended("e2")
    rig.clock.advance(0)
    assert rig.ringing() == [("e3", "b")]


def test_an_emergency_does_not_take_a_ringing_emergency_offer():
    rig = Rig([make_operator("a", queues={"emergency": 1})], [queue("emergency")])
    rig.login("a")
    rig.call("e1", queue="emergency", priority="emergency")
    rig.call("e2", queue="emergency", priority="emergency")
    assert rig.ringing() == [("e1", "a")] and rig.connector.stopped == []


def test_an_operator_without_the_skills_is_never_seized():
    rig = Rig([make_operator("a", skills={"cmn": 9}, queues={"care": 1, "emergency": 1}),
               make_operator("b", skills={"yue": 1}, queues={"care": 1})],
              [queue("care"), queue("emergency")])
    rig.login("a", "b")
    rig.call("n1")
    rig.call("n2")
    rig.answer("n1", "a")
    rig.answer("n2", "b")
    rig.call("sos", queue="emergency", priority="emergency", skills={"language": "yue"})
    rig.clock.advance(60)
    assert rig.connector.preempts == [] and rig.acd.calls["sos"].state is CallState.WAITING
    assert rig.state("a") is OS.TALKING  # a has no yue; b has yue but does not serve the emergency queue


def test_the_victim_of_a_preemption_goes_to_a_free_operator_at_once():
    """Regression: the requeued victim waited for the next dispatch although an operator (not skilled for the
    emergency) was free for it."""
    rig = Rig([make_operator("yue", skills={"yue": 5}, queues={"care": 1, "emergency": 1}),
               make_operator("cmn", skills={"cmn": 5}, queues={"care": 1})],
              [queue("care"), queue("emergency")])
    rig.login("yue")
    rig.call("n1")
    rig.answer("n1", "yue")
    rig.login("cmn")
    rig.call("sos", queue="emergency", priority="emergency", skills={"language": "yue"})
    assert rig.connector.preempts == [("n1", "yue", True)]
    assert sorted(rig.ringing()) == [("n1", "cmn"), ("sos", "yue")]


def test_a_seize_restarts_the_order_so_the_withdrawn_call_keeps_its_place():
    """Regression: when a seize withdrew a ringing offer, a later call of the same class could take an operator
    freed at the same moment, ahead of the call whose offer was withdrawn."""
    rig = Rig([make_operator("yue", skills={"yue": 5}, queues={"care": 1, "emergency": 1}),
               make_operator("cmn", skills={"cmn": 5}, queues={"care": 1}, wrap_up=30)],
              [queue("care"), queue("emergency")], seize_after=30, ring_timeout=100)
    rig.login("cmn")
    rig.call("n0")
    rig.answer("n0", "cmn")
    rig.login("yue")
    rig.call("n1")  # rings yue
    rig.call("n2")  # waits
    rig.acd.conversation_ended("n0")  # cmn's wrap-up ends at t=30, just before the emergency's seize timer
    rig.call("sos", queue="emergency", priority="emergency", skills={"language": "yue"})
    assert rig.ringing() == [("n1", "yue")]
    rig.clock.advance(30)
    assert sorted(rig.ringing()) == [("n1", "cmn"), ("sos", "yue")]
    assert rig.acd.calls["n2"].state is CallState.WAITING


def test_an_operator_freed_inside_ring_is_seen_before_a_seize():
    """Regression: a phone that failed inside ring() freed its operator, but the rest of the dispatch pass
    still used the list of free operators from before, so a later emergency pre-empted a conversation although
    that operator was available and skilled for it."""
    rig = Rig([make_operator("x", skills={"yue": 5}, queues={"emergency": 1}),
               make_operator("y", skills={"cmn": 5}, queues={"emergency": 1}),
               make_operator("v", skills={"yue": 5}, queues={"care": 1, "emergency": 1})],
              [queue("care"), queue("emergency")], seize_after=10)
    rig.login("v")
    rig.call("n1")
    rig.answer("n1", "v")
    rig.call("c", queue="emergency", priority="emergency", level=5)
    rig.call("e", queue="emergency", priority="emergency", level=1, skills={"language": "yue"})
    rig.clock.advance(5)
    rig.op("x").transition(OS.AVAILABLE, 4)  # two operators free at once (e.g. recovered by the sweeper)
    rig.op("y").transition(OS.AVAILABLE, 5)
    failed: list[str] = []

    def fail_x_once(offer: Offer) -> None:
        if offer.operator.name == "x" and not failed:
            failed.append(offer.call.call_id)
            rig.acd.not_answered(offer, "failed")

    rig.connector.on_ring = fail_x_once
    rig.clock.advance(5)  # the seize timers: dispatch with x and y free
    assert failed == ["c"]
    assert rig.connector.preempts == [] and rig.state("v") is OS.TALKING
    assert sorted(rig.ringing()) == [("c", "y"), ("e", "x")]


def test_ring_all_stops_when_the_first_phone_answers_inside_ring():
    """Regression: a connector that answered synchronously inside ring() (ring_all) got the remaining operators
    reserved for a call that was already connected."""
    rig = Rig([make_operator(n) for n in "abc"], [queue("care", strategy="ring_all")])
    rig.login("a", "b", "c")
    rig.connector.on_ring = lambda offer: rig.acd.answered(offer)
    rig.call("c1")
    assert rig.acd.calls["c1"].state is CallState.CONNECTED
    assert rig.acd.offers == {}
    states = sorted(rig.state(n).value for n in "abc")
    assert states == ["available", "available", "talking"]


def test_ring_all_stops_when_the_caller_is_found_gone_inside_ring():
    rig = Rig([make_operator(n) for n in "abc"], [queue("care", strategy="ring_all")])
    rig.login("a", "b", "c")
    rig.connector.on_ring = lambda offer: rig.acd.leave(offer.call.call_id, "caller_hangup", fire=False)
    rig.call("c1")
    assert "c1" not in rig.acd.calls and rig.acd.offers == {}
    assert all(rig.state(n) is OS.AVAILABLE for n in "abc")
    assert len(rig.connector.rings) == 1 and rig.abandoned == [("c1", 0)]


def test_pending_logout_survives_a_seize_in_wrap_up():
    """Regression: an emergency seizing an operator in wrap-up dropped the logout asked for during the call."""
    rig = Rig([make_operator("a", wrap_up=30, queues={"care": 1, "emergency": 1})],
              [queue("care"), queue("emergency")])
    rig.login("a")
    rig.call("n1")
    rig.answer("n1")
    rig.acd.set_state("a", "logged_out")
    rig.acd.conversation_ended("n1")
    assert rig.state("a") is OS.WRAP_UP
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.ringing() == [("sos", "a")]
    rig.talk("sos", "a", 10)
    rig.clock.advance(30)
    assert rig.state("a") is OS.LOGGED_OUT


def test_requeued_victim_is_not_dropped_by_the_flows_max_wait():
    """Regression: the request's max_wait was armed again for a pre-empted call whose flow had already been
    told "answered"; when it passed, the call left the ACD silently and its caller heard music forever."""
    rig = Rig([make_operator("a", queues={"care": 1, "emergency": 1})], [queue("care"), queue("emergency")])
    rig.login("a")
    rig.call("n1", max_wait=60)
    rig.answer("n1")
    rig.call("sos", queue="emergency", priority="emergency")
    assert rig.connector.preempts == [("n1", "a", True)]
    rig.clock.advance(120)
    assert "n1" in rig.acd.calls and rig.acd.calls["n1"].state is CallState.WAITING
    assert rig.events("n1", "timeout") == []
    rig.talk("sos", "a", 1)
    rig.clock.advance(0)
    assert rig.ringing() == [("n1", "a")]


# -- the sweeper and the state machine -------------------------------------------------------------------
def test_sweeper_removes_calls_the_connector_reports_dead():
    rig = Rig([make_operator("a", wrap_up=0), make_operator("b")], sweep_interval=10)
    rig.acd.start()
    rig.login("a")
    rig.call("talking")
    rig.answer("talking")
    rig.call("waiting")
    rig.connector.dead |= {"talking", "waiting"}
    rig.clock.advance(9.9)
    assert set(rig.acd.calls) == {"talking", "waiting"}
    rig.clock.advance(0.1)
    assert rig.acd.calls == {} and rig.acd.counters["recovered"] == 2
    assert [e.kind for e in rig.events("talking")][-2:] == ["complete", "wrapup"]
    assert [e.kind for e in rig.events("waiting")][-1] == "abandon"
    rig.clock.advance(0)
    assert rig.state("a") is OS.AVAILABLE
    rig.acd.stop()
    assert rig.clock.getDelayedCalls() == []


def test_sweeper_recovers_an_operator_held_by_no_call():
    rig = Rig([make_operator("a"), make_operator("b")], sweep_interval=10)
    rig.acd.start()
    rig.login("a", "b")
    rig.op("a").transition(OS.RESERVED, 0)  # a lost signal: reserved, no offer
    rig.op("a").call_id = "ghost"
    rig.op("b").transition(OS.RESERVED, 0)
    rig.op("b").transition(OS.TALKING, 0)
    rig.clock.advance(10)
    assert rig.state("a") is OS.AVAILABLE and rig.state("b") is OS.AVAILABLE
    assert rig.acd.counters["recovered"] == 2
    rig.call("c1")
    assert len(rig.ringing()) == 1


def test_invalid_operator_transitions_raise():
    operator = make_operator("a")
    with pytest.raises(InvalidOperatorTransition):
        operator.transition(OS.TALKING, 1)
    assert operator.state is OS.LOGGED_OUT
    operator.transition(OS.AVAILABLE, 2)
    for target in (OS.TALKING, OS.WRAP_UP):
        with pytest.raises(InvalidOperatorTransition):
            operator.transition(target, 3)
    assert operator.state is OS.AVAILABLE and operator.since == 2
    operator.transition(OS.PAUSED, 4, reason="lunch")
    with pytest.raises(InvalidOperatorTransition):
        operator.transition(OS.TALKING, 5)
    with pytest.raises(InvalidOperatorTransition):
        operator.transition(OS.WRAP_UP, 5)
    assert operator.pause_reason == "lunch"


def test_set_state_refuses_states_an_operator_cannot_ask_for():
    rig = Rig([make_operator("a")])
    with pytest.raises(ValueError):
        rig.acd.set_state("a", "talking")
    with pytest.raises(ValueError):
        rig.acd.set_state("a", "dancing")
    assert rig.state("a") is OS.LOGGED_OUT


def test_unknown_queue_is_refused():
    rig = Rig([make_operator("a")])
    outcome = rig.acd.enqueue("c1", "555", request(queue="nowhere"))
    results: list[Any] = []
    outcome.addCallback(results.append)
    assert results[0].result == "refused" and rig.acd.calls == {}


def test_enqueue_of_a_known_call_replaces_it():
    rig = Rig([make_operator("a")])
    rig.call("c1", level=1)
    rig.call("c1", level=9)
    assert len(rig.acd.waiting) == 1 and rig.acd.calls["c1"].request.level == 9
    assert rig.abandoned == []


def test_views():
    rig = Rig([make_operator("a"), make_operator("b")])
    rig.login("a")
    rig.call("c1")
    rig.call("c2")
    live = rig.acd.live()
    assert live["queues"]["care"]["waiting"] == 2 and live["operators"]["reserved"] == 1
    assert live["operators"]["logged_out"] == 1
    view = {o["name"]: o for o in rig.acd.operators_view()}
    assert view["a"]["state"] == "reserved" and view["a"]["call_id"] == "c1" and view["a"]["offers"] == 1
    assert rig.acd.snapshot()["care"][0]["ringing"] == ["a"]


# -- an emergency and nobody on duty ------------------------------------------------------------------------
def test_an_emergency_rings_an_operator_on_a_break_who_goes_back_on_break_after() -> None:
    rig = Rig([make_operator("a"), make_operator("b")])
    rig.acd.set_state("a", "paused", "toilet")
    rig.clock.advance(5)
    rig.acd.set_state("b", "paused", "phone_unreachable")  # its phone is gone: ringing it cannot help
    rig.call("n1")  # a normal call waits for the break to end
    assert rig.ringing() == []
    rig.call("e1", priority="emergency")
    assert rig.ringing() == [("e1", "a")] and rig.acd.counters["seized_paused"] == 1
    rig.talk("e1", "a", seconds=30)
    rig.clock.advance(0)  # wrap-up of 0 s
    assert (rig.state("a"), rig.op("a").pause_reason) == (OperatorState.PAUSED, "toilet")
    assert rig.ringing() == []  # n1 still waits: "a" is on a break again


def test_an_emergency_with_no_operator_at_all_waits_first_in_line_and_says_so_once(capsys: Any) -> None:
    rig = Rig([make_operator("a")])  # logged out
    rig.call("n1")
    rig.call("e1", priority="emergency")
    rig.call("e2", priority="emergency")
    rig.acd.dispatch()
    assert rig.ringing() == [] and rig.acd.position("e1") == 1
    assert capsys.readouterr().out.count("acd.emergency.no_operator") == 2  # once per call, not per dispatch
    rig.login("a")
    assert rig.ringing() == [("e1", "a")]
