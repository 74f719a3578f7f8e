"""Queue KPIs computed from the queue event log (:mod:`callcenter.acd.events`) only: a pure function, so a report
always adds up to what the log says.

Definitions (the contract; the unit tests and the ACD simulation check them exactly). Events are taken in order
of ``at`` (events with the same ``at`` keep their input order). A *call in a queue* is the pair (queue, call_id).

Per queue, per priority class ("emergency", "urgent", "normal", plus any other class that occurs), and overall:

``offered``          ``enter`` events whose detail is neither "requeue" (back in the queue after a pre-emption)
                     nor "rejoin" (a caller who hung up and called back within the rejoin window): neither is a
                     new offered call
``answered``         calls in the queue with at least one ``connect``; a call connected twice (pre-empted,
                     requeued and connected again) counts once
``abandoned``        ``abandon`` events
``timed_out``        ``timeout`` events
``preempted``        ``preempt`` events
``callbacks``        ``callback`` events
``answered_within``  first connects of a call in the queue with ``wait`` <= the queue's threshold
                     (``service_levels[queue]``, else ``default_service_level``)
``asa``              mean ``wait`` of the first connect of each answered call; None when nothing was answered
``longest_wait``     max ``wait`` over ``connect``, ``abandon`` and ``timeout`` events; 0 when there are none
``service_level``    answered_within / (answered + abandoned + timed_out); None when the denominator is 0
``abandon_rate``     abandoned / offered; None when nothing was offered
``answer_rate``      answered / offered; None when nothing was offered

A call's abandon after a pre-emption requeue still counts as abandoned, so one call can count both as answered
(its first connect) and as abandoned (the caller hung up while waiting again): answered + abandoned + timed_out
may exceed offered, and abandon_rate may exceed the share of callers who never reached an operator. Likewise a
caller who abandoned and rejoined counts as offered once, abandoned once, and answered once if the rejoined
call connects. A connect without a ``wait`` counts as answered but not in ``asa`` or ``answered_within``.

Per priority class, a call belongs to the class named by each event (the first connect's class for answered);
``answered_within`` uses the threshold of the event's queue. Overall counts every call in every queue, so each
overall count is the sum of the queue rows (a call that overflowed from one queue to another is offered in both).
``emergency_answer_rate`` = answered / offered of class "emergency"; None when no emergency was offered.

Per operator (every operator any event names): ``offers`` = ``offer`` events, ``answers`` = ``connect`` events
(each one, reconnects included), ``misses`` = ``miss`` events that are the operator's (not a withdrawal:
see ``callcenter.acd.events.WITHDRAWALS``), ``talk_seconds`` = sum of ``seconds`` of ``complete`` events and
of ``preempt`` events (talk cut short by an emergency), ``wrapup_seconds`` = sum of ``seconds`` of ``wrapup``
events, ``preempted`` = ``preempt`` events naming the operator (the operator whose call was taken).

Events of unknown kinds are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from callcenter.acd.events import WITHDRAWALS, QueueEvent

PRIORITIES: tuple[str, ...] = ("emergency", "urgent", "normal")
NOT_OFFERED: frozenset[str] = frozenset({"requeue", "rejoin"})  # enter details that are no new offered call
WAIT_KINDS: frozenset[str] = frozenset({"connect", "abandon", "timeout"})


@dataclass(frozen=True, slots=True)
class GroupKpi:
    """The KPIs of one queue, one priority class, or all queues. ``threshold`` is the queue's service-level
    threshold in seconds (None for a priority class and overall, which mix queues)."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    timed_out: int = 0
    preempted: int = 0
    callbacks: int = 0
    answered_within: int = 0
    asa: float | None = None
    longest_wait: float = 0.0
    service_level: float | None = None
    abandon_rate: float | None = None
    answer_rate: float | None = None
    threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class OperatorKpi:
    offers: int = 0
    answers: int = 0
    misses: int = 0
    talk_seconds: float = 0.0
    wrapup_seconds: float = 0.0
    preempted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class KpiReport:
    overall: GroupKpi
    queues: dict[str, GroupKpi]  # by queue name, sorted
    priorities: dict[str, GroupKpi]  # emergency, urgent, normal, then any other class sorted
    operators: dict[str, OperatorKpi]  # by operator, sorted
    emergency_answer_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "overall": self.overall.as_dict(),
            "queues": {name: kpi.as_dict() for name, kpi in self.queues.items()},
            "priorities": {name: kpi.as_dict() for name, kpi in self.priorities.items()},
            "operators": {name: kpi.as_dict() for name, kpi in self.operators.items()},
            "emergency_answer_rate": self.emergency_answer_rate,
        }


@dataclass(slots=True)
class _Tally:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    timed_out: int = 0
    preempted: int = 0
    callbacks: int = 0
    answered_within: int = 0
    first_waits: list[float] = field(default_factory=list)
    longest_wait: float = 0.0

    def freeze(self, threshold: float | None = None) -> GroupKpi:
        handled = self.answered + self.abandoned + self.timed_out
        return GroupKpi(
            offered=self.offered,
            answered=self.answered,
            abandoned=self.abandoned,
            timed_out=self.timed_out,
            preempted=self.preempted,
            callbacks=self.callbacks,
            answered_within=self.answered_within,
            asa=sum(self.first_waits) / len(self.first_waits) if self.first_waits else None,
            longest_wait=self.longest_wait,
            service_level=self.answered_within / handled if handled else None,
            abandon_rate=self.abandoned / self.offered if self.offered else None,
            answer_rate=self.answered / self.offered if self.offered else None,
            threshold=threshold,
        )


@dataclass(slots=True)
class _OperatorTally:
    offers: int = 0
    answers: int = 0
    misses: int = 0
    talk_seconds: float = 0.0
    wrapup_seconds: float = 0.0
    preempted: int = 0

    def freeze(self) -> OperatorKpi:
        return OperatorKpi(self.offers, self.answers, self.misses, self.talk_seconds, self.wrapup_seconds,
                           self.preempted)


def compute(events: Iterable[QueueEvent], *, service_levels: Mapping[str, float],
            default_service_level: float = 20.0, queues: Iterable[str] = ()) -> KpiReport:
    """The KPIs of ``events`` (see the module docstring for the definitions). ``service_levels`` maps a queue
    to its threshold in seconds (``default_service_level`` for the others); ``queues`` are listed even when no
    event names them (with zeros)."""
    by_queue: dict[str, _Tally] = {name: _Tally() for name in queues}
    by_priority: dict[str, _Tally] = {name: _Tally() for name in PRIORITIES}
    overall = _Tally()
    operators: dict[str, _OperatorTally] = {}
    answered: set[tuple[str, str]] = set()

    def threshold(queue: str) -> float:
        return float(service_levels.get(queue, default_service_level))

    for event in sorted(events, key=lambda e: e.at):
        tallies = (overall, by_queue.setdefault(event.queue, _Tally()),
                   by_priority.setdefault(event.priority, _Tally()))
        operator = operators.setdefault(event.operator, _OperatorTally()) if event.operator else None
        kind = event.kind
        if kind in WAIT_KINDS and event.wait is not None:
            for tally in tallies:
                tally.longest_wait = max(tally.longest_wait, float(event.wait))
        if kind == "enter":
            if event.detail not in NOT_OFFERED:
                for tally in tallies:
                    tally.offered += 1
        elif kind == "connect":
            if operator is not None:
                operator.answers += 1
            key = (event.queue, event.call_id)
            if key not in answered:
                answered.add(key)
                within = event.wait is not None and event.wait <= threshold(event.queue)
                for tally in tallies:
                    tally.answered += 1
                    tally.answered_within += within
                    if event.wait is not None:
                        tally.first_waits.append(float(event.wait))
        elif kind == "abandon":
            for tally in tallies:
                tally.abandoned += 1
        elif kind == "timeout":
            for tally in tallies:
                tally.timed_out += 1
        elif kind == "preempt":
            for tally in tallies:
                tally.preempted += 1
            if operator is not None:
                operator.preempted += 1
                operator.talk_seconds += event.seconds or 0.0
        elif kind == "callback":
            for tally in tallies:
                tally.callbacks += 1
        elif operator is not None:
            if kind == "offer":
                operator.offers += 1
            elif kind == "miss" and event.detail not in WITHDRAWALS:
                operator.misses += 1
            elif kind == "complete":
                operator.talk_seconds += event.seconds or 0.0
            elif kind == "wrapup":
                operator.wrapup_seconds += event.seconds or 0.0

    priorities = {name: by_priority[name].freeze() for name in PRIORITIES}
    priorities.update((name, by_priority[name].freeze()) for name in sorted(set(by_priority) - set(PRIORITIES)))
    emergency = priorities["emergency"]
    return KpiReport(
        overall=overall.freeze(),
        queues={name: by_queue[name].freeze(threshold(name)) for name in sorted(by_queue)},
        priorities=priorities,
        operators={name: operators[name].freeze() for name in sorted(operators)},
        emergency_answer_rate=emergency.answer_rate,
    )
