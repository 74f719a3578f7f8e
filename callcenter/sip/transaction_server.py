"""Server transactions: INVITE (RFC 3261 §17.2.1) and non-INVITE (§17.2.2).

Created by :class:`callcenter.sip.transaction.TransactionLayer` when a request matches no transaction.
Each response is serialised once; the bytes are kept for retransmission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from callcenter.sip.message import Request, Response, response_for
from callcenter.sip.transaction_base import TERMINATED, Address, Transaction, is_reliable, log, new_tag

if TYPE_CHECKING:
    from callcenter.sip.transaction import TransactionLayer

ServerKey = tuple[object, ...]


def response_destination(request: Request, source: Address) -> Address:
    """Where responses go (RFC 3261 §18.2.2, RFC 3581).

    Reliable: back to the connection the request came on. UDP: the source address (that is the
    ``received`` value) and the ``rport`` value, or else the sent-by port of the top Via.
    """
    if is_reliable(source[0]):
        return source
    via = request.top_via
    rport = via.params.get("rport")
    if rport and rport.isdigit():
        port = int(rport)
    else:
        port = via.port or 5060
    return (source[0], source[1], port)


class ServerTransaction(Transaction):
    """Base of both server machines. The TU answers with :meth:`respond`."""

    __slots__ = ("_last_data", "key", "last_response", "on_cancel", "response_dest", "source")

    def __init__(self, layer: TransactionLayer, request: Request, source: Address, key: ServerKey, state: str) -> None:
        super().__init__(layer, request, state, is_reliable(source[0]))
        self.source = source
        self.key = key
        self.response_dest = response_destination(request, source)
        self.last_response: Response | None = None
        self._last_data: bytes | None = None
        # Set by the TU on INVITE transactions: called with the CANCEL after the layer answered it 200.
        self.on_cancel: Callable[[Request], None] | None = None

    @property
    def last_data(self) -> bytes | None:
        """The serialised last response (what retransmissions resend)."""
        return self._last_data

    def respond(self, response: Response) -> None:
        raise NotImplementedError

    def _send_response(self, response: Response) -> None:
        data = bytes(response)
        self.last_response = response
        self._last_data = data
        self._layer._transmit(data, self.response_dest, self)

    def _resend(self) -> None:
        if self._last_data is not None:
            self._layer._transmit(self._last_data, self.response_dest, self)

    def _on_request(self, request: Request) -> None:
        """A request matched to this transaction (a retransmission, or the ACK of an INVITE)."""
        raise NotImplementedError


class ServerInviteTransaction(ServerTransaction):
    """proceeding → completed → confirmed → terminated; a 2xx terminates at once (§17.2.1)."""

    __slots__ = ("_interval", "_to_tag", "on_ack_timeout")
    kind = "server_invite"
    is_invite = True

    def __init__(self, layer: TransactionLayer, request: Request, source: Address, key: ServerKey) -> None:
        super().__init__(layer, request, source, key, "proceeding")
        self._interval = layer.t1
        self._to_tag: str | None = None
        # Set by the TU: Timer H fired (no ACK for our non-2xx final response).
        self.on_ack_timeout: Callable[[], None] | None = None

    def start(self) -> None:
        """Send 100 Trying at once (before the TU sees the INVITE), copying Timestamp (§8.2.6.1)."""
        trying = response_for(self.request, 100)
        timestamp = self.request.headers.get("Timestamp")
        if timestamp is not None:
            trying.headers.add("Timestamp", timestamp)
        self._send_response(trying)

    def to_tag(self) -> str:
        """The To tag of this transaction's responses: the one the TU used, or a fresh one (for 487)."""
        if self._to_tag is None:
            last = self.last_response
            tag = last.to.tag if last is not None and last.status > 100 else None
            self._to_tag = tag or new_tag()
        return self._to_tag

    def respond(self, response: Response) -> None:
        status = response.status
        if self.state != "proceeding":
            self._invalid("respond", status=status)
            return
        self._send_response(response)
        if self.state == TERMINATED:  # transport error
            return
        if status < 200:
            return
        layer = self._layer
        if status < 300:
            # The TU retransmits the 2xx (InviteOkRetransmitter); the layer still absorbs retransmitted INVITEs.
            layer._remember_accepted(self.key)
            self._terminate()
            return
        self.state = "completed"
        if not self.reliable:
            self._interval = layer.t1
            self._start_timer("G", layer.t1, self._timer_g)
        self._start_timer("H", 64 * layer.t1, self._timer_h)

    def _on_request(self, request: Request) -> None:
        layer = self._layer
        if request.method == "ACK":
            if self.state == "completed":
                self.state = "confirmed"
                self._stop_timer("G")
                self._stop_timer("H")
                if self.reliable:
                    self._terminate()
                else:
                    self._start_timer("I", layer.t4, self._terminate)
            elif self.state == "confirmed":
                layer._count("retransmissions_absorbed")
            else:
                self._invalid("ack")
            return
        layer._count("retransmissions_absorbed")
        if self.state in ("proceeding", "completed"):
            self._resend()

    def _timer_g(self) -> None:
        if self.state != "completed":
            return
        layer = self._layer
        layer._count("retransmissions_sent")
        self._resend()
        if self.state == "completed":
            self._interval = min(2 * self._interval, layer.t2)
            self._start_timer("G", self._interval, self._timer_g)

    def _timer_h(self) -> None:
        layer = self._layer
        layer._count("ack_timeouts")
        log.info("sip.transaction.ack_timeout", call_id=self.call_id)
        self._terminate()
        if self.on_ack_timeout is not None:
            layer._call(self.on_ack_timeout)


class ServerNonInviteTransaction(ServerTransaction):
    """trying → proceeding → completed → terminated (§17.2.2); Timer J absorbs retransmissions."""

    __slots__ = ()
    kind = "server_non_invite"

    def __init__(self, layer: TransactionLayer, request: Request, source: Address, key: ServerKey) -> None:
        super().__init__(layer, request, source, key, "trying")

    def respond(self, response: Response) -> None:
        status = response.status
        if self.state not in ("trying", "proceeding"):
            self._invalid("respond", status=status)
            return
        self._send_response(response)
        if self.state == TERMINATED:
            return
        if status < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        if self.reliable:
            self._terminate()
        else:
            self._start_timer("J", 64 * self._layer.t1, self._terminate)

    def _on_request(self, request: Request) -> None:
        self._layer._count("retransmissions_absorbed")
        if self.state in ("proceeding", "completed"):  # in trying: discarded (§17.2.2)
            self._resend()


__all__ = ["ServerInviteTransaction", "ServerNonInviteTransaction", "ServerTransaction", "response_destination"]
