"""The injected clock of the sans-I/O SIP layer: the subset of Twisted's ``IReactorTime`` it uses.

Production passes the reactor; tests pass ``twisted.internet.task.Clock`` and call ``advance()``,
so RFC 3261 timers run in microseconds. Nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class DelayedCall(Protocol):
    """A scheduled call (``IDelayedCall``): ``cancel()`` only while ``active()``."""

    def cancel(self) -> None: ...

    def active(self) -> bool: ...


class Clock(Protocol):
    """``seconds()`` and ``callLater()`` of ``IReactorTime``."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, fn: Callable[..., object], /, *args: object, **kw: object) -> DelayedCall: ...


__all__ = ["Clock", "DelayedCall"]
