"""Client transactions: INVITE (RFC 3261 §17.1.1) and non-INVITE (§17.1.2), and the ACK/CANCEL builders.

Created by :meth:`callcenter.sip.transaction.TransactionLayer.send_request`. The request is serialised
once; retransmissions resend the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from callcenter.sip.message import Headers, Request, Response
from callcenter.sip.transaction_base import TERMINATED, TIMER_D, Address, Transaction, is_reliable, log

if TYPE_CHECKING:
    from callcenter.sip.transaction import TransactionLayer

OnResponse = Callable[[Response], None]
OnTimeout = Callable[[], None]


def _copy_core(request: Request, method: str, to_value: str) -> Request:
    """Headers shared by ACK (§17.1.1.3) and CANCEL (§9.1): one Via (the top one), Route, From, To, Call-ID, CSeq."""
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for name, value in request.headers:
        if name == "Route":
            headers.add(name, value)
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", to_value)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.number} {method}")
    return Request(method=method, uri=request.uri, headers=headers)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response: same branch, To (with tag) from the response, Route from the INVITE."""
    return _copy_core(invite, "ACK", response.headers.get("To") or "")


def build_cancel(invite: Request) -> Request:
    """CANCEL of an INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number, top Via and Route."""
    return _copy_core(invite, "CANCEL", invite.headers.get("To") or "")


class ClientTransaction(Transaction):
    """Base of both client machines; responses reach the TU once each through ``on_response``."""

    __slots__ = (
        "_interval",
        "_seen",
        "branch",
        "data",
        "dest",
        "key",
        "on_response",
        "on_timeout",
        "on_transport_error",
    )

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        dest: Address,
        branch: str,
        state: str,
        on_response: OnResponse,
        on_timeout: OnTimeout,
        on_transport_error: OnTimeout | None,
    ) -> None:
        super().__init__(layer, request, state, is_reliable(dest[0]))
        self.dest = dest
        self.branch = branch
        self.key = (branch, request.method)
        self.data = bytes(request)
        self.on_response = on_response
        self.on_timeout = on_timeout
        self.on_transport_error = on_transport_error
        self._interval = layer.t1
        self._seen: set[tuple[int, str | None, str | None]] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def _on_response(self, response: Response) -> None:
        raise NotImplementedError

    def _retransmit(self) -> bool:
        """Resend the request; False when the transaction died of a transport error."""
        self._layer._count("retransmissions_sent")
        self._layer._transmit(self.data, self.dest, self)
        return self.state != TERMINATED

    def _first_provisional(self, response: Response) -> bool:
        """Filter retransmitted provisional responses: each distinct one reaches the TU once."""
        key = (response.status, response.to.tag, response.headers.get("RSeq"))
        if self._seen is None:
            self._seen = {key}
            return True
        if key in self._seen:
            self._layer._count("retransmissions_absorbed")
            return False
        self._seen.add(key)
        return True

    def _timed_out(self) -> None:
        layer = self._layer
        layer._count("timeouts")
        log.info("sip.transaction.timeout", call_id=self.call_id, method=self.request.method, state=self.state)
        self._terminate()
        layer._call(self.on_timeout)

    def _transport_error(self) -> None:
        if self.state == TERMINATED:
            return
        self._terminate()
        # Deferred: the TU may be inside send_request() and not yet hold the transaction.
        self._layer.clock.callLater(0, self._layer._call, self.on_transport_error or self.on_timeout)


class ClientInviteTransaction(ClientTransaction):
    """calling → proceeding → completed → terminated (§17.1.1). ``cancel_tx`` is the CANCEL, if any."""

    __slots__ = ("_ack_data", "cancel_tx")
    kind = "client_invite"
    is_invite = True

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        dest: Address,
        branch: str,
        on_response: OnResponse,
        on_timeout: OnTimeout,
        on_transport_error: OnTimeout | None,
    ) -> None:
        super().__init__(layer, request, dest, branch, "calling", on_response, on_timeout, on_transport_error)
        self._ack_data: bytes | None = None
        self.cancel_tx: ClientNonInviteTransaction | None = None

    def start(self) -> None:
        layer = self._layer
        layer._transmit(self.data, self.dest, self)
        if self.state == TERMINATED:
            return
        if not self.reliable:
            self._start_timer("A", layer.t1, self._timer_a)
        self._start_timer("B", 64 * layer.t1, self._timer_b)

    def _timer_a(self) -> None:
        if self.state == "calling" and self._retransmit():
            self._interval *= 2  # no cap: Timer B ends it
            self._start_timer("A", self._interval, self._timer_a)

    def _timer_b(self) -> None:
        if self.state == "calling":
            self._drop_pending_cancel()
            self._timed_out()

    def _timer_cancel_guard(self) -> None:
        """§9.1: no final response 64*T1 after the CANCEL was sent: give the INVITE up."""
        if self.state == "proceeding":
            self._timed_out()

    def send_cancel(self) -> None:
        """Start the (deferred) CANCEL transaction and guard the INVITE for 64*T1."""
        ctx = self.cancel_tx
        if ctx is None or ctx.state != "pending":
            return
        ctx.state = "trying"
        self._layer._register_client(ctx)
        ctx.start()
        self._start_timer("cancel_guard", 64 * self._layer.t1, self._timer_cancel_guard)

    def _drop_pending_cancel(self) -> None:
        ctx = self.cancel_tx
        if ctx is not None and ctx.state == "pending":
            ctx.state = TERMINATED

    def _on_response(self, response: Response) -> None:
        status = response.status
        state = self.state
        layer = self._layer
        if status < 200:
            if state == "calling":
                self.state = "proceeding"
                self._stop_timer("A")
                self._stop_timer("B")
                self.send_cancel()
            elif state != "proceeding":
                log.debug("sip.transaction.late_provisional", call_id=self.call_id, status=status, state=state)
                return
            if self._first_provisional(response):
                layer._call(self.on_response, response)
            return
        if state == "completed":
            if status >= 300:  # retransmitted final: ACK again
                layer._count("retransmissions_absorbed")
                if self._ack_data is not None:
                    layer._transmit(self._ack_data, self.dest, self)
            else:
                self._invalid("response", status=status)
            return
        if state not in ("calling", "proceeding"):
            self._invalid("response", status=status)
            return
        self._drop_pending_cancel()
        if status < 300:
            self._terminate()  # the TU ACKs the 2xx; later 2xx retransmissions arrive as stray responses
            layer._call(self.on_response, response)
            return
        self.state = "completed"
        self._stop_timers()
        self._ack_data = bytes(build_ack(self.request, response))
        layer._transmit(self._ack_data, self.dest, self)
        if self.state != TERMINATED:
            if self.reliable:
                self._terminate()
            else:
                self._start_timer("D", TIMER_D, self._terminate)
        layer._call(self.on_response, response)


class ClientNonInviteTransaction(ClientTransaction):
    """trying → proceeding → completed → terminated (§17.1.2). A deferred CANCEL waits in "pending"."""

    __slots__ = ()
    kind = "client_non_invite"

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        dest: Address,
        branch: str,
        on_response: OnResponse,
        on_timeout: OnTimeout,
        on_transport_error: OnTimeout | None,
        *,
        state: str = "trying",
    ) -> None:
        super().__init__(layer, request, dest, branch, state, on_response, on_timeout, on_transport_error)

    def start(self) -> None:
        layer = self._layer
        layer._transmit(self.data, self.dest, self)
        if self.state == TERMINATED:
            return
        if not self.reliable:
            self._start_timer("E", layer.t1, self._timer_e)
        self._start_timer("F", 64 * layer.t1, self._timed_out)

    def _timer_e(self) -> None:
        if self.state not in ("trying", "proceeding") or not self._retransmit():
            return
        t2 = self._layer.t2
        self._interval = t2 if self.state == "proceeding" else min(2 * self._interval, t2)
        self._start_timer("E", self._interval, self._timer_e)

    def _on_response(self, response: Response) -> None:
        layer = self._layer
        state = self.state
        if state not in ("trying", "proceeding"):
            layer._count("retransmissions_absorbed")
            return
        if response.status < 200:
            self.state = "proceeding"
            if self._first_provisional(response):
                layer._call(self.on_response, response)
            return
        self.state = "completed"
        self._stop_timer("E")
        self._stop_timer("F")
        if self.reliable:
            self._terminate()
        else:
            self._start_timer("K", layer.t4, self._terminate)
        layer._call(self.on_response, response)


__all__ = [
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "build_ack",
    "build_cancel",
]
