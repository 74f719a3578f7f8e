"""The RFC 3261 §17 transaction layer, sans-I/O.

Bytes never appear here except as serialised messages handed to the injected ``send`` function, and
time comes from an injected :class:`~callcenter.sip.clock.Clock` (the reactor, or
``twisted.internet.task.Clock`` in tests). The transport feeds every parsed message to
:meth:`TransactionLayer.receive`; requests that start a transaction, ACKs for 2xx (with ``None``) and
nothing else reach the TU through ``on_request``.

Matching (§17.2.3, §17.1.3): server transactions by (branch, sent-by, method) with ACK mapped to
INVITE, or by the RFC 2543 fields when the branch lacks the magic cookie; client transactions by
(branch, CSeq method). Tables are dicts; terminated transactions leave them.

Deviation kept on purpose (RFC 6026 §8.7): after a 2xx the INVITE server transaction terminates as in
RFC 3261, but its key is remembered for 64*T1 so a retransmitted INVITE is absorbed instead of
reaching the TU as a second call. ACKs are never absorbed there.
"""

from __future__ import annotations

from collections.abc import Callable

from callcenter.sip.clock import Clock, DelayedCall
from callcenter.sip.errors import SipParseError
from callcenter.sip.headers import Via
from callcenter.sip.message import Request, Response, response_for
from callcenter.sip.transaction_base import (
    MAGIC_COOKIE,
    TERMINATED,
    Address,
    SendFn,
    Transaction,
    log,
    new_branch,
    new_tag,
)
from callcenter.sip.transaction_client import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    build_ack,
    build_cancel,
)
from callcenter.sip.transaction_server import (
    ServerInviteTransaction,
    ServerKey,
    ServerNonInviteTransaction,
    ServerTransaction,
    response_destination,
)

OnRequest = Callable[[Request, ServerTransaction | None, Address], None]
OnStrayResponse = Callable[[Response, Address], None]

_COUNTERS = (
    "server_created",
    "client_created",
    "retransmissions_sent",
    "retransmissions_absorbed",
    "timeouts",
    "ack_timeouts",
    "stray_responses",
    "cancels_matched",
    "cancels_unmatched",
    "invalid_transitions",
    "transport_errors",
    "callback_errors",
    "bad_messages",
)


def _via_identity(via: Via) -> tuple[object, ...]:
    params = tuple(sorted((k, v) for k, v in via.params.items() if k not in ("received", "rport")))
    return (via.transport, via.host, via.port, params)


def server_key(request: Request) -> ServerKey:
    """The §17.2.3 matching key; ACK maps to its INVITE. RFC 2543 keys start with "2543" (To tag checked apart)."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    return (
        "2543",
        str(request.uri),
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        _via_identity(via),
        method,
    )


class InviteOkRetransmitter:
    """Retransmits a 2xx to INVITE until the ACK arrives (RFC 3261 §13.3.1.4).

    The first copy was already sent (``ServerTransaction.respond``); copies follow after T1, 2*T1, …
    capped at T2. After 64*T1 without ACK it stops and calls ``on_give_up`` (the dialog then sends BYE).
    """

    __slots__ = (
        "_give_up",
        "_interval",
        "_retx",
        "clock",
        "data",
        "dest",
        "on_done",
        "on_give_up",
        "on_retransmit",
        "retransmissions",
        "send",
        "t2",
    )

    def __init__(
        self,
        clock: Clock,
        send: SendFn,
        data: bytes,
        dest: Address,
        t1: float = 0.5,
        t2: float = 4.0,
        *,
        on_give_up: Callable[[], None] | None = None,
        on_retransmit: Callable[[], None] | None = None,
        on_done: Callable[[InviteOkRetransmitter], None] | None = None,
        retransmit: bool = True,
    ) -> None:
        self.clock = clock
        self.send = send
        self.data = data
        self.dest = dest
        self.t2 = t2
        self.on_give_up = on_give_up
        self.on_retransmit = on_retransmit
        self.on_done = on_done
        self.retransmissions = 0
        self._interval = t1
        self._retx: DelayedCall | None = clock.callLater(t1, self._fire) if retransmit else None
        self._give_up: DelayedCall | None = clock.callLater(64 * t1, self._expire)

    def active(self) -> bool:
        return self._give_up is not None

    def ack_received(self) -> None:
        """The ACK for the 2xx arrived: stop retransmitting."""
        self.stop()

    def stop(self) -> None:
        for call in (self._retx, self._give_up):
            if call is not None and call.active():
                call.cancel()
        was_active = self._give_up is not None
        self._retx = self._give_up = None
        if was_active and self.on_done is not None:
            self.on_done(self)

    def _fire(self) -> None:
        self._retx = None
        try:
            self.send(self.data, self.dest)
        except OSError as exc:
            log.warning("sip.transaction.transport_error", error=str(exc), dest=self.dest)
        self.retransmissions += 1
        if self.on_retransmit is not None:
            self.on_retransmit()
        if self._give_up is not None:
            self._interval = min(2 * self._interval, self.t2)
            self._retx = self.clock.callLater(self._interval, self._fire)

    def _expire(self) -> None:
        if self._give_up is None:
            return
        self.stop()
        if self.on_give_up is not None:
            self.on_give_up()


class TransactionLayer:
    """Owns every client and server transaction; see the module docstring for the contract."""

    def __init__(
        self,
        clock: Clock,
        send: SendFn,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        on_request: OnRequest,
        on_stray_response: OnStrayResponse | None = None,
    ) -> None:
        self.clock = clock
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.on_request = on_request
        self.on_stray_response = on_stray_response
        self._send = send
        self._server: dict[ServerKey, ServerTransaction] = {}
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._accepted: dict[ServerKey, DelayedCall] = {}
        self._ok_retransmitters: set[InviteOkRetransmitter] = set()
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # -- input -----------------------------------------------------------------------------------
    def receive(self, msg: Request | Response, source: Address) -> None:
        """Feed one parsed message (requests already carry received/rport on their top Via)."""
        try:
            if isinstance(msg, Response):
                self._receive_response(msg, source)
            else:
                self._receive_request(msg, source)
        except SipParseError as exc:
            self._stats["bad_messages"] += 1
            log.warning("sip.transaction.bad_message", call_id=msg.headers.get("Call-ID"), reason=exc.reason)

    def _receive_response(self, response: Response, source: Address) -> None:
        tx = self._client.get((response.top_via.branch or "", response.cseq.method))
        if tx is not None:
            tx._on_response(response)
            return
        self._stats["stray_responses"] += 1
        if self.on_stray_response is not None:
            self._call(self.on_stray_response, response, source)
        else:
            log.debug("sip.transaction.stray_response", call_id=response.headers.get("Call-ID"), status=response.status)

    def _receive_request(self, request: Request, source: Address) -> None:
        method = request.method
        key = server_key(request)
        tx = self._server.get(key)
        if tx is not None and key[0] == "2543" and not _tags_match(tx, request):
            tx = None
        if tx is not None:
            tx._on_request(request)
            return
        if method == "ACK":  # ACK for a 2xx (or for nothing we know): the TU's business
            self._call(self.on_request, request, None, source)
            return
        if method == "INVITE" and key in self._accepted:
            self._stats["retransmissions_absorbed"] += 1
            return
        if method == "CANCEL":
            self._receive_cancel(request, key, source)
            return
        new: ServerTransaction
        if method == "INVITE":
            new = ServerInviteTransaction(self, request, source, key)
            self._add_server(new)
            new.start()
        else:
            new = ServerNonInviteTransaction(self, request, source, key)
            self._add_server(new)
        self._call(self.on_request, request, new, source)

    def _receive_cancel(self, cancel: Request, key: ServerKey, source: Address) -> None:
        """§9.2: answer the CANCEL ourselves; 487 the INVITE (or let the TU do it through on_cancel)."""
        ctx = ServerNonInviteTransaction(self, cancel, source, key)
        self._add_server(ctx)
        invite_tx = self._server.get((*key[:-1], "INVITE"))
        if (
            not isinstance(invite_tx, ServerInviteTransaction)
            or invite_tx.state == TERMINATED
            or (key[0] == "2543" and cancel.to.tag != invite_tx.request.to.tag)
        ):
            self._stats["cancels_unmatched"] += 1
            ctx.respond(response_for(cancel, 481, to_tag=new_tag()))
            return
        self._stats["cancels_matched"] += 1
        tag = invite_tx.to_tag()
        ctx.respond(response_for(cancel, 200, to_tag=tag))
        if invite_tx.state != "proceeding":
            return  # final response already sent: the CANCEL has no effect
        if invite_tx.on_cancel is not None:
            self._call(invite_tx.on_cancel, cancel)
        else:
            invite_tx.respond(response_for(invite_tx.request, 487, to_tag=tag))

    # -- output ----------------------------------------------------------------------------------
    def send_request(
        self,
        request: Request,
        dest: Address,
        *,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
        on_transport_error: Callable[[], None] | None = None,
    ) -> ClientTransaction:
        """Start a client transaction. The request's top Via must carry a ``new_branch()``.

        ``on_response`` sees each distinct response once; ``on_timeout`` fires on Timer B/F (treat as 408);
        a send failure calls ``on_transport_error`` (default: ``on_timeout``) from a zero-delay timer.
        """
        branch = request.top_via.branch
        if not branch:
            raise ValueError("a client request needs a Via branch (use new_branch())")
        if request.method == "ACK":
            raise ValueError("ACK is not a transaction: send it directly")
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = ClientInviteTransaction(self, request, dest, branch, on_response, on_timeout, on_transport_error)
        else:
            tx = ClientNonInviteTransaction(self, request, dest, branch, on_response, on_timeout, on_transport_error)
        if tx.key in self._client:
            raise ValueError(f"a client transaction with branch {branch} already exists")
        self._register_client(tx)
        tx.start()
        return tx

    def cancel(
        self,
        invite_tx: ClientTransaction,
        *,
        on_response: Callable[[Response], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> ClientTransaction | None:
        """CANCEL an outgoing INVITE (§9.1): sent now if a provisional arrived, else when one does.

        Returns the CANCEL transaction (state "pending" while deferred; the same one on repeated calls),
        or None when the INVITE already has a final response. 64*T1 after the CANCEL is sent without a
        final response, the INVITE transaction gives up through its ``on_timeout``.
        """
        if not isinstance(invite_tx, ClientInviteTransaction):
            raise TypeError("only INVITE client transactions can be cancelled")
        if invite_tx.cancel_tx is not None:
            return invite_tx.cancel_tx
        if invite_tx.state not in ("calling", "proceeding"):
            return None
        ctx = ClientNonInviteTransaction(
            self,
            build_cancel(invite_tx.request),
            invite_tx.dest,
            invite_tx.branch,
            on_response or _ignore_response,
            on_timeout or _ignore,
            None,
            state="pending",
        )
        invite_tx.cancel_tx = ctx
        if invite_tx.state == "proceeding":
            invite_tx.send_cancel()
        return ctx

    def start_ok_retransmitter(
        self, tx: ServerTransaction, *, on_give_up: Callable[[], None] | None = None, retransmit: bool = True
    ) -> InviteOkRetransmitter:
        """Retransmit the 2xx last sent on ``tx`` until ``ack_received()``; counted in the stats, stopped by close()."""
        if tx.last_data is None or tx.last_response is None or tx.last_response.status // 100 != 2:
            raise ValueError("the transaction has not sent a 2xx")
        retx = InviteOkRetransmitter(
            self.clock,
            self._send,
            tx.last_data,
            tx.response_dest,
            self.t1,
            self.t2,
            on_give_up=on_give_up,
            retransmit=retransmit,
            on_retransmit=self._count_retransmission,
            on_done=self._ok_retransmitters.discard,
        )
        self._ok_retransmitters.add(retx)
        return retx

    # -- bookkeeping -----------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        out = dict(self._stats)
        out["server_transactions"] = len(self._server)
        out["client_transactions"] = len(self._client)
        out["accepted_invites"] = len(self._accepted)
        out["ok_retransmitters"] = len(self._ok_retransmitters)
        return out

    def close(self) -> None:
        """Cancel every timer and forget every transaction."""
        for tx in [*self._server.values(), *self._client.values()]:
            tx.state = TERMINATED
            tx._stop_timers()
        self._server.clear()
        self._client.clear()
        for call in self._accepted.values():
            if call.active():
                call.cancel()
        self._accepted.clear()
        for retx in list(self._ok_retransmitters):
            retx.on_done = None
            retx.stop()
        self._ok_retransmitters.clear()

    def server_transaction(self, request: Request) -> ServerTransaction | None:
        """The server transaction a request would match (for the TU and tests)."""
        return self._server.get(server_key(request))

    def _add_server(self, tx: ServerTransaction) -> None:
        self._server[tx.key] = tx
        self._stats["server_created"] += 1

    def _register_client(self, tx: ClientTransaction) -> None:
        self._client[tx.key] = tx
        self._stats["client_created"] += 1

    def _remember_accepted(self, key: ServerKey) -> None:
        old = self._accepted.pop(key, None)
        if old is not None and old.active():
            old.cancel()
        self._accepted[key] = self.clock.callLater(64 * self.t1, self._accepted.pop, key, None)

    def _forget(self, tx: Transaction) -> None:
        if isinstance(tx, ServerTransaction):
            if self._server.get(tx.key) is tx:
                del self._server[tx.key]
        elif isinstance(tx, ClientTransaction) and self._client.get(tx.key) is tx:
            del self._client[tx.key]

    def _count(self, name: str) -> None:
        self._stats[name] += 1

    def _count_retransmission(self) -> None:
        self._stats["retransmissions_sent"] += 1

    def _transmit(self, data: bytes, dest: Address, tx: Transaction | None) -> bool:
        try:
            self._send(data, dest)
        except OSError as exc:
            self._stats["transport_errors"] += 1
            log.warning(
                "sip.transaction.transport_error",
                call_id=tx.call_id if tx is not None else None,
                dest=dest,
                error=str(exc),
            )
            if tx is not None:
                tx._transport_error()
            return False
        return True

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        """Run a TU callback; its exceptions are logged, never raised into the transport."""
        try:
            fn(*args)
        except Exception:
            self._stats["callback_errors"] += 1
            log.exception("sip.transaction.callback_failed", callback=getattr(fn, "__qualname__", repr(fn)))


def _tags_match(tx: ServerTransaction, request: Request) -> bool:
    """RFC 2543 matching also compares To tags; an ACK's To tag is the one of our response."""
    if request.method == "ACK":
        last = tx.last_response
        expected = last.to.tag if last is not None else tx.request.to.tag
    else:
        expected = tx.request.to.tag
    return request.to.tag == expected


def _ignore() -> None:
    return None


def _ignore_response(response: Response) -> None:
    return None


__all__ = [
    "Address",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "InviteOkRetransmitter",
    "SendFn",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "TransactionLayer",
    "build_ack",
    "build_cancel",
    "new_branch",
    "new_tag",
    "response_destination",
    "server_key",
]
