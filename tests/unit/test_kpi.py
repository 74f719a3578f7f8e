"""Queue KPIs from the event log (callcenter.stats.kpi): every definition of the module docstring."""

from __future__ import annotations

import json

import pytest

from callcenter.acd.events import QueueEvent
from callcenter.stats.kpi import GroupKpi, compute

SL = {"hotline": 20.0, "emergency": 60.0}


def ev(at: float, kind: str, call_id: str, queue: str = "hotline", priority: str = "normal", **extra) -> QueueEvent:
    return QueueEvent(at=at, kind=kind, call_id=call_id, queue=queue, priority=priority, **extra)


def test_empty_input_gives_zeros_and_none() -> None:
    report = compute([], service_levels=SL, queues=["hotline"])
    assert report.overall == GroupKpi()
    assert report.queues == {"hotline": GroupKpi(threshold=20.0)}
    assert list(report.priorities) == ["emergency", "urgent", "normal"]
    assert all(kpi == GroupKpi() for kpi in report.priorities.values())
    assert report.operators == {} and report.emergency_answer_rate is None
    assert report.overall.asa is None and report.overall.longest_wait == 0.0
    assert report.overall.service_level is None and report.overall.abandon_rate is None
    data = report.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["queues"]["hotline"]["offered"] == 0 and data["emergency_answer_rate"] is None


def test_counts_asa_service_level_and_rates() -> None:
    events = [
        ev(0, "enter", "a"), ev(1, "offer", "a", operator="op1"), ev(5, "connect", "a", operator="op1", wait=5),
        ev(0, "enter", "b"), ev(2, "offer", "b", operator="op2"), ev(25, "connect", "b", operator="op2", wait=25),
        ev(0, "enter", "c"), ev(20, "connect", "c", operator="op1", wait=20.0),  # exactly the threshold: in
        ev(0, "enter", "d"), ev(40, "abandon", "d", wait=40),
        ev(0, "enter", "e"), ev(90, "timeout", "e", wait=90, detail="voicemail"),
        ev(91, "callback", "e", detail="task 7 abandoned"),
    ]
    report = compute(events, service_levels=SL)
    q = report.queues["hotline"]
    assert (q.offered, q.answered, q.abandoned, q.timed_out, q.callbacks, q.preempted) == (5, 3, 1, 1, 1, 0)
    assert q.asa == pytest.approx((5 + 25 + 20) / 3)
    assert q.answered_within == 2 and q.threshold == 20.0
    assert q.service_level == pytest.approx(2 / 5)
    assert q.abandon_rate == pytest.approx(1 / 5) and q.answer_rate == pytest.approx(3 / 5)
    assert q.longest_wait == 90
    assert report.overall == GroupKpi(**{**q.as_dict(), "threshold": None})


def test_thresholds_per_queue_and_default() -> None:
    events = [ev(0, "enter", "a", "emergency", "emergency"),
              ev(50, "connect", "a", "emergency", "emergency", operator="op1", wait=50),
              ev(0, "enter", "b", "other"), ev(25, "connect", "b", "other", operator="op2", wait=25)]
    report = compute(events, service_levels=SL, default_service_level=30)
    assert report.queues["emergency"].answered_within == 1 and report.queues["emergency"].threshold == 60
    assert report.queues["other"].answered_within == 1 and report.queues["other"].threshold == 30
    assert compute(events, service_levels=SL).queues["other"].answered_within == 0  # default 20 s
    assert report.overall.answered_within == 2 and report.overall.service_level == 1.0
    assert list(report.queues) == ["emergency", "other"]


def test_preempted_call_is_answered_once_and_first_connect_counts() -> None:
    events = [
        ev(0, "enter", "n1"), ev(3, "connect", "n1", operator="op1", wait=3),
        ev(10, "preempt", "n1", operator="op1", detail="e1"),
        ev(10, "enter", "n1", detail="requeue"),
        ev(40, "connect", "n1", operator="op2", wait=40),  # second connect: no new answer, no ASA sample
        ev(100, "complete", "n1", operator="op2", seconds=60),
    ]
    report = compute(events, service_levels=SL)
    q = report.queues["hotline"]
    assert (q.offered, q.answered, q.preempted, q.answered_within) == (1, 1, 1, 1)
    assert q.asa == 3 and q.longest_wait == 40  # longest wait sees every connect
    assert q.service_level == 1.0
    assert report.operators["op1"].answers == 1 and report.operators["op1"].preempted == 1
    assert report.operators["op2"].answers == 1 and report.operators["op2"].preempted == 0


def test_abandon_after_preemption_requeue_counts_answered_and_abandoned() -> None:
    events = [
        ev(0, "enter", "n1"), ev(4, "connect", "n1", operator="op1", wait=4),
        ev(10, "preempt", "n1", operator="op1", detail="e1"), ev(10, "enter", "n1", detail="requeue"),
        ev(30, "abandon", "n1", wait=30),
    ]
    q = compute(events, service_levels=SL).queues["hotline"]
    assert (q.offered, q.answered, q.abandoned, q.preempted) == (1, 1, 1, 1)
    assert q.abandon_rate == 1.0 and q.service_level == pytest.approx(1 / 2) and q.longest_wait == 30


def test_rejoin_is_not_a_new_offer() -> None:
    events = [
        ev(0, "enter", "r1"), ev(15, "abandon", "r1", wait=15),
        ev(60, "enter", "r2", detail="rejoin"), ev(70, "connect", "r2", operator="op1", wait=10),
    ]
    q = compute(events, service_levels=SL).queues["hotline"]
    assert (q.offered, q.answered, q.abandoned) == (1, 1, 1)
    assert q.answer_rate == 1.0 and q.abandon_rate == 1.0 and q.asa == 10


def test_overflow_counts_in_both_queues_and_overall_is_the_sum() -> None:
    events = [
        ev(0, "enter", "x"), ev(30, "timeout", "x", wait=30, detail="queue:care_center"),
        ev(30, "enter", "x", "care_center"), ev(35, "connect", "x", "care_center", operator="op1", wait=5),
    ]
    report = compute(events, service_levels=SL)
    assert report.queues["hotline"].timed_out == 1 and report.queues["hotline"].answered == 0
    assert report.queues["care_center"].answered == 1 and report.queues["care_center"].offered == 1
    overall = report.overall
    assert (overall.offered, overall.answered, overall.timed_out, overall.answered_within) == (2, 1, 1, 1)
    assert overall.service_level == pytest.approx(1 / 2) and overall.longest_wait == 30


def test_priority_classes_and_emergency_answer_rate() -> None:
    events = [
        ev(0, "enter", "e1", "emergency", "emergency"), ev(2, "connect", "e1", "emergency", "emergency", wait=2),
        ev(0, "enter", "e2", "emergency", "emergency"), ev(9, "abandon", "e2", "emergency", "emergency", wait=9),
        ev(0, "enter", "u1", priority="urgent"), ev(30, "connect", "u1", priority="urgent", wait=30),
        ev(0, "enter", "n1"), ev(5, "preempt", "n1", operator="op1"),
        ev(0, "enter", "v1", priority="vip"),
    ]
    report = compute(events, service_levels=SL)
    assert list(report.priorities) == ["emergency", "urgent", "normal", "vip"]
    emergency = report.priorities["emergency"]
    assert (emergency.offered, emergency.answered, emergency.abandoned, emergency.answered_within) == (2, 1, 1, 1)
    assert emergency.threshold is None and emergency.longest_wait == 9
    assert report.emergency_answer_rate == pytest.approx(0.5)
    urgent = report.priorities["urgent"]
    assert (urgent.offered, urgent.answered, urgent.answered_within, urgent.asa) == (1, 1, 0, 30)
    assert report.priorities["normal"].preempted == 1 and report.priorities["vip"].offered == 1
    assert compute([ev(0, "enter", "n")], service_levels=SL).emergency_answer_rate is None


def test_per_operator_sums() -> None:
    events = [
        ev(1, "offer", "a", operator="op1"), ev(2, "miss", "a", operator="op1", detail="no_answer"),
        ev(3, "offer", "a", operator="op2"), ev(4, "connect", "a", operator="op2", wait=4),
        ev(64, "complete", "a", operator="op2", seconds=60.5), ev(94, "wrapup", "a", operator="op2", seconds=30),
        ev(100, "offer", "b", operator="op2"), ev(101, "connect", "b", operator="op2", wait=1),
        ev(110, "preempt", "b", operator="op2", seconds=9, detail="e9"),
        ev(112, "offer", "f", operator="op1"), ev(113, "miss", "f", operator="op1", detail="caller_gone"),
        ev(114, "offer", "g", operator="op1"), ev(115, "miss", "g", operator="op1", detail="seized"),
        ev(111, "connect", "e9", "emergency", "emergency", operator="op2", wait=1),
        ev(200, "complete", "e9", "emergency", "emergency", operator="op2", seconds=89.5),
        ev(210, "wrapup", "e9", "emergency", "emergency", operator="op2", seconds=10),
        ev(220, "transfer", "c", operator="op3", detail="120"),
        ev(230, "complete", "d", seconds=99),  # no operator: nobody's talk time
    ]
    ops = compute(events, service_levels=SL).operators
    assert list(ops) == ["op1", "op2", "op3"]
    # the caller hanging up, or an emergency taking the operator, is a withdrawal, not the operator's miss
    assert ops["op1"].as_dict() == {"offers": 3, "answers": 0, "misses": 1, "talk_seconds": 0.0,
                                    "wrapup_seconds": 0.0, "preempted": 0}
    # talk cut short by the pre-emption (9 s) is talk time too
    assert ops["op2"].as_dict() == {"offers": 2, "answers": 3, "misses": 0, "talk_seconds": 159.0,
                                    "wrapup_seconds": 40.0, "preempted": 1}
    assert ops["op3"].offers == 0 and ops["op3"].answers == 0


def test_events_are_taken_in_time_order_and_unknown_kinds_ignored() -> None:
    events = [ev(50, "connect", "a", operator="op1", wait=50), ev(0, "enter", "a"),
              ev(10, "connect", "a", operator="op1", wait=10), ev(5, "ringing", "a")]
    q = compute(events, service_levels=SL).queues["hotline"]
    assert q.answered == 1 and q.asa == 10 and q.answered_within == 1 and q.longest_wait == 50


def test_connect_without_wait_is_answered_but_not_timed() -> None:
    q = compute([ev(0, "enter", "a"), ev(3, "connect", "a", operator="op1")], service_levels=SL).queues["hotline"]
    assert q.answered == 1 and q.asa is None and q.answered_within == 0 and q.service_level == 0.0


def test_as_dict_is_json_ready() -> None:
    events = [ev(0, "enter", "a"), ev(3, "connect", "a", operator="op1", wait=3),
              ev(33, "complete", "a", operator="op1", seconds=30)]
    data = compute(events, service_levels=SL, queues=["emergency"]).as_dict()
    assert set(data) == {"overall", "queues", "priorities", "operators", "emergency_answer_rate"}
    assert list(data["queues"]) == ["emergency", "hotline"]
    assert data["queues"]["hotline"] == {
        "offered": 1, "answered": 1, "abandoned": 0, "timed_out": 0, "preempted": 0, "callbacks": 0,
        "answered_within": 1, "asa": 3, "longest_wait": 3, "service_level": 1.0, "abandon_rate": 0.0,
        "answer_rate": 1.0, "threshold": 20.0}
    assert data["operators"]["op1"]["talk_seconds"] == 30
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
