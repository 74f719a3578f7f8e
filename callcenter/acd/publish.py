"""The ACD on the bus: every queue step and every operator state change as a typed domain event, so the
desktop (screen pop on ``offer``, wallboard) and other nodes follow the distributor without reading it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from callcenter.acd.events import QueueEvent
from callcenter.acd.operators import Operator, OperatorState
from callcenter.bus.events import OperatorStateChanged, QueueStep


class AcdPublisher:
    """An EventSink (queue steps) and an operator-state listener that publish to the bus."""

    def __init__(self, bus: Any, calls: Callable[[str], Any]) -> None:
        self.bus = bus
        self.calls = calls  # call id → the engine's Call (caller number, elder id, button), or None

    def record(self, event: QueueEvent) -> None:
        call = self.calls(event.call_id)
        self.bus.publish(QueueStep(
            call_id=event.call_id, kind=event.kind, queue=event.queue, priority=event.priority,
            operator=event.operator, wait=event.wait, detail=event.detail,
            caller=getattr(call, "caller_number", None), elder_id=getattr(call, "elder_id", None),
            button=getattr(call, "button", None)))

    def operator_changed(self, operator: Operator, old: OperatorState, new: OperatorState) -> None:
        self.bus.publish(OperatorStateChanged(operator=operator.name, old=old.value, new=new.value,
                                              reason=operator.pause_reason, call_id=operator.call_id))
