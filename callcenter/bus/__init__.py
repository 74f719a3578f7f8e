"""Domain events between rooms. ``Bus`` is the interface; ``InProcessBus`` the single-node implementation
(a Redis implementation for several nodes can come later with the same interface)."""

from collections.abc import Callable
from typing import Protocol

from callcenter.bus.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    Event,
    RegistrationChanged,
    TrunkStateChanged,
)
from callcenter.bus.inprocess import Handler, InProcessBus


class Bus(Protocol):
    def subscribe(self, event_type: type[Event], handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` (sync or async) for each event of ``event_type``; returns an unsubscriber.
        A failing handler is logged and never affects the publisher or other handlers."""
        ...

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to its subscribers; never raises because of a handler."""
        ...

    async def drain(self) -> None:
        """Wait until the async handlers started so far have finished."""
        ...

    async def close(self) -> None: ...


__all__ = ["Bus", "CallAnswered", "CallEnded", "CallStarted", "Event", "Handler", "InProcessBus", "RegistrationChanged",
           "TrunkStateChanged"]
