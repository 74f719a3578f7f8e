"""Who takes a call: the queue's strategy among free operators, and the victim of a line seize.

Pure functions over the distributor's state (no clock, no I/O), so the rules read in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from callcenter.acd.model import PRIORITY_RANK, Offer, QueuedCall
from callcenter.acd.operators import Operator, OperatorState


def choose_operators(call: QueuedCall, eligible: list[Operator], *, rotation: dict[str, int],
                     names: Sequence[str]) -> list[Operator]:
    """The operators to ring for ``call`` among the eligible free ones: those with the highest weight for its
    queue, then by strategy (ring_all: all of them). ``rotation`` keeps round robin's place per queue over
    ``names`` (every operator, sorted)."""
    if not eligible:
        return []
    queue = call.queue
    weight = max(o.queues[queue.name] for o in eligible)
    best = [o for o in eligible if o.queues[queue.name] == weight]
    if queue.strategy == "ring_all":
        return best
    if queue.strategy == "round_robin":
        index = {name: i for i, name in enumerate(names)}
        last = rotation.get(queue.name, -1)
        chosen = min(best, key=lambda o: (index[o.name] - last - 1) % len(names))
        rotation[queue.name] = index[chosen.name]
        return [chosen]
    if queue.strategy == "fewest_calls":
        return [min(best, key=lambda o: (o.calls_today, o.idle_since, o.name))]
    return [min(best, key=lambda o: (o.idle_since, o.name))]


def choose_victim(eligible: list[Operator], calls: Mapping[str, QueuedCall], now: float,
                  policy: str) -> tuple[Operator, Offer | None, QueuedCall] | None:
    """The operator an emergency takes when none is free: one whose phone rings with a non-emergency call
    (the offer is withdrawn, nobody is cut off) before one talking to a non-emergency call; among them the
    lowest priority class, then the lowest level, then the shortest talk (``policy`` "longest_talk": the
    longest). None when every such operator is on an emergency."""
    ringing: list[tuple[tuple[Any, ...], Operator, Offer | None, QueuedCall]] = []
    talking: list[tuple[tuple[Any, ...], Operator, Offer | None, QueuedCall]] = []
    for operator in eligible:
        other = calls.get(operator.call_id or "")
        if other is None or other.emergency:
            continue
        rank = (-PRIORITY_RANK.get(other.priority, 2), other.request.level)
        if operator.state is OperatorState.RESERVED:
            offer = next((x for x in other.offers if x.operator is operator), None)
            if offer is not None:
                ringing.append(((*rank, operator.name), operator, offer, other))
        elif operator.state is OperatorState.TALKING and other.operator is operator:
            talk = now - (now if other.connected_at is None else other.connected_at)
            order = talk if policy == "shortest_talk" else -talk
            talking.append(((*rank, order, operator.name), operator, None, other))
    candidates = ringing or talking
    if not candidates:
        return None
    _, operator, offer, victim = min(candidates, key=lambda c: c[0])
    return operator, offer, victim
