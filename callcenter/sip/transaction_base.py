"""Shared pieces of the RFC 3261 §17 transaction layer: addresses, branches, timers and the state base class.

The concrete machines live in :mod:`callcenter.sip.transaction_server` and
:mod:`callcenter.sip.transaction_client`; the layer that owns them is :mod:`callcenter.sip.transaction`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from callcenter.sip.clock import DelayedCall
from callcenter.sip.message import Request

if TYPE_CHECKING:
    from callcenter.sip.transaction import TransactionLayer

Address = tuple[str, str, int]  # (transport "UDP"/"TCP", host without IPv6 brackets, port)
SendFn = Callable[[bytes, Address], None]

MAGIC_COOKIE = "z9hG4bK"
TERMINATED = "terminated"
TIMER_D = 32.0  # RFC 3261 §17.1.1.2: "at least 32 seconds" on unreliable transports

log = structlog.get_logger("callcenter.sip")


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie plus 64 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def is_reliable(transport: str) -> bool:
    """Everything but UDP is reliable: no retransmissions, Timers D/I/J/K are zero."""
    return transport.upper() != "UDP"


class Transaction:
    """State, named timers and the logging of impossible transitions, common to all four machines."""

    __slots__ = ("_layer", "_timers", "reliable", "request", "state")
    kind = "transaction"
    is_invite = False

    def __init__(self, layer: TransactionLayer, request: Request, state: str, reliable: bool) -> None:
        self._layer = layer
        self.request = request
        self.state = state
        self.reliable = reliable
        self._timers: dict[str, DelayedCall] = {}

    @property
    def call_id(self) -> str | None:
        return self.request.headers.get("Call-ID")

    @property
    def timers(self) -> tuple[str, ...]:
        """Names of the timers currently running (for tests and debugging)."""
        return tuple(self._timers)

    def _start_timer(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._stop_timer(name)
        self._timers[name] = self._layer.clock.callLater(delay, self._fire, name, fn)

    def _stop_timer(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _stop_timers(self) -> None:
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

    def _fire(self, name: str, fn: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        if self.state != TERMINATED:
            fn()

    def _invalid(self, event: str, **fields: object) -> None:
        """An impossible transition: logged and counted, never raised towards the network."""
        self._layer._count("invalid_transitions")
        log.warning(
            "sip.transaction.invalid_transition",
            call_id=self.call_id,
            txn=self.kind,
            state=self.state,
            trigger=event,
            **fields,
        )

    def _terminate(self) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        self._stop_timers()
        self._layer._forget(self)

    def _transport_error(self) -> None:
        self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} state={self.state} call_id={self.call_id}>"


__all__ = ["MAGIC_COOKIE", "TERMINATED", "Address", "SendFn", "Transaction", "is_reliable", "new_branch", "new_tag"]
