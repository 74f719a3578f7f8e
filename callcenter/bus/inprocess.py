"""The in-process event bus: the default for a single engine node."""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from callcenter.bus.events import Event
from callcenter.logs import get_logger

log = get_logger(__name__)

Handler = Callable[[Any], Awaitable[None] | None]


class InProcessBus:
    """Synchronous fan-out by event type (a handler for ``Event`` gets everything).

    ``publish`` calls sync handlers at once, in subscription order; an async handler's coroutine is started as
    a task on the running loop (``drain()`` waits for those). A handler that raises is logged
    (``bus.handler_failed``) and never stops publish or the other handlers."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Handler]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, event_type: type[Event], handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` for every published event of ``event_type`` (or a subclass). Returns a
        function that unsubscribes."""
        self._handlers.setdefault(event_type, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(event_type, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for cls in type(event).__mro__:
            for handler in tuple(self._handlers.get(cls, ())):  # handlers may (un)subscribe while we run
                self._call(handler, event)

    def _call(self, handler: Handler, event: Event) -> None:
        try:
            result = handler(event)
        except Exception:
            log.exception("bus.handler_failed", event_name=event.name, handler=_name(handler),
                          call_id=getattr(event, "call_id", None))
            return
        if inspect.isawaitable(result):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                if inspect.iscoroutine(result):
                    result.close()
                log.error("bus.handler_failed", event_name=event.name, handler=_name(handler),
                          error="async handler needs a running event loop")
                return
            task = loop.create_task(self._await(result, handler, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _await(result: Awaitable[None], handler: Handler, event: Event) -> None:
        try:
            await result
        except Exception:
            log.exception("bus.handler_failed", event_name=event.name, handler=_name(handler),
                          call_id=getattr(event, "call_id", None))

    async def drain(self) -> None:
        """Wait for the async handlers started so far (and any they start in turn)."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        self._handlers.clear()


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)
