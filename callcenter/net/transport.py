"""Twisted UDP and TCP listeners feeding the sans-I/O SIP layer (RFC 3261 §18).

Bytes in: flood guard → framing (TCP) → parse → Via stamping (received/rport) → ``on_message``.
A message that fails to parse gets a 400 (or 505/513) naming the fault when it can be routed,
is logged once, and is otherwise dropped. Bytes out: :meth:`SipTransport.send` by address.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from twisted.internet import protocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IReactorUDP

from callcenter.net.flood import FloodGuard
from callcenter.sip.errors import SipParseError
from callcenter.sip.headers import Via, split_values
from callcenter.sip.message import Request, Response, error_response_from_partial, parse_message
from callcenter.sip.stream import StreamFramer

log = structlog.get_logger("callcenter.net")

Address = tuple[str, str, int]
OnMessage = Callable[[Request | Response, Address], None]


@dataclass(slots=True)
class TransportStats:
    received: int = 0
    sent: int = 0
    malformed: int = 0
    flood_dropped: int = 0


def stamp_via(request: Request, source: Address) -> None:
    """RFC 3261 §18.2.1 and RFC 3581: record where the request really came from in the top Via."""
    raw = request.headers.get("Via")
    if raw is None:
        return
    values = split_values(raw)
    via = Via.parse(values[0])
    _, host, port = source
    changed = False
    if via.bare_host != host:
        via.params["received"] = host
        changed = True
    if "rport" in via.params:
        via.params["rport"] = str(port)
        via.params.setdefault("received", host)
        changed = True
    if changed:
        values[0] = str(via)
        request.headers.set("Via", ", ".join(values))
        request.invalidate()


UDP_RECEIVE_BUFFER = 8 * 1024 * 1024


def _enlarge_receive_buffer(sock: socket.socket, wanted: int) -> None:
    """A burst of SIP datagrams (a trunk's calls after an outage, a flood we must drop ourselves) must not
    overflow the kernel's default ~200 KB buffer (about 160 small datagrams). As root SO_RCVBUFFORCE passes
    net.core.rmem_max; otherwise we get what the system allows and say so."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, wanted)
            break
        except OSError:
            continue
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < wanted:
        log.warning(
            "sip.listen.small_receive_buffer",
            bytes=got,
            wanted=wanted,
            hint="raise net.core.rmem_max (sysctl) so bursts of SIP datagrams are not dropped by the kernel",
        )


class SipTransport:
    """All SIP sockets of the engine; one instance per process."""

    def __init__(
        self,
        reactor: Any,
        on_message: OnMessage,
        *,
        flood: FloodGuard,
        max_size: int = 65535,
        max_headers: int = 256,
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.on_message = on_message
        self.flood = flood
        self.max_size = max_size
        self.max_headers = max_headers
        self.stats = TransportStats()
        self._udp: _UdpProtocol | None = None
        self._ports: list[Any] = []
        self._tcp: dict[tuple[str, int], _TcpProtocol] = {}
        self._pending_tcp: dict[tuple[str, int], list[bytes]] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.accepting = True

    # -- listeners ---------------------------------------------------------------------------------
    def listen_udp(self, host: str, port: int) -> tuple[str, int]:
        udp: IReactorUDP = self.reactor
        self._udp = _UdpProtocol(self)
        p = udp.listenUDP(port, self._udp, interface=host, maxPacketSize=self.max_size + 1)
        self._ports.append(p)
        _enlarge_receive_buffer(p.getHandle(), UDP_RECEIVE_BUFFER)
        bound = p.getHost()
        self.addresses["UDP"] = (host, bound.port)
        log.info("sip.listen", transport="udp", host=host, port=bound.port)
        return host, bound.port

    def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        tcp: IReactorTCP = self.reactor
        p = tcp.listenTCP(port, _TcpFactory(self), interface=host)
        self._ports.append(p)
        bound = p.getHost()
        self.addresses["TCP"] = (host, bound.port)
        log.info("sip.listen", transport="tcp", host=host, port=bound.port)
        return host, bound.port

    async def stop_listening(self) -> None:
        import asyncio

        from twisted.internet.defer import DeferredList, maybeDeferred

        stopping = DeferredList([maybeDeferred(p.stopListening) for p in self._ports], consumeErrors=True)
        await stopping.asFuture(asyncio.get_running_loop())
        for conn in list(self._tcp.values()):
            conn.transport.loseConnection()
        self._ports.clear()

    # -- receive -------------------------------------------------------------------------------------
    def handle_bytes(self, data: bytes, source: Address, reply: Callable[[bytes], None]) -> None:
        if not data.strip(b"\r\n \t"):
            return  # keep-alive (RFC 5626 §3.5.1)
        if not self.flood.allow(source[1], self.clock.seconds()):
            self.stats.flood_dropped += 1
            return
        self.stats.received += 1
        try:
            msg = parse_message(data, max_size=self.max_size, max_headers=self.max_headers, stream=source[0] != "UDP")
            if isinstance(msg, Request):
                stamp_via(msg, source)
        except SipParseError as err:
            self.stats.malformed += 1
            answer = error_response_from_partial(err)
            log.warning(
                "sip.message.malformed",
                reason=err.reason,
                status=err.status,
                source=f"{source[1]}:{source[2]}",
                transport=source[0],
                answered=answer is not None,
                call_id=dict(err.partial).get("Call-ID"),
            )
            if answer is not None:
                reply(answer)
            return
        try:
            self.on_message(msg, source)
        except Exception:  # never let one message take the listener down
            log.exception("sip.message.handler_failed", call_id=msg.headers.get("Call-ID"))

    # -- send ----------------------------------------------------------------------------------------
    def send(self, data: bytes, dest: Address) -> None:
        transport, host, port = dest
        self.stats.sent += 1
        if transport == "UDP":
            if self._udp is None or self._udp.transport is None:
                log.error("sip.send.no_udp_listener", dest=f"{host}:{port}")
                return
            try:
                self._udp.transport.write(data, (host, port))
            except OSError as exc:
                log.warning("sip.send.failed", dest=f"{host}:{port}", error=str(exc))
            return
        conn = self._tcp.get((host, port))
        if conn is not None:
            conn.transport.write(data)
            return
        pending = self._pending_tcp.get((host, port))
        if pending is not None:
            pending.append(data)
            return
        self._pending_tcp[(host, port)] = [data]
        tcp: IReactorTCP = self.reactor
        tcp.connectTCP(host, port, _TcpClientFactory(self, (host, port)), timeout=5)

    # -- TCP connection registry ----------------------------------------------------------------
    def _tcp_connected(self, key: tuple[str, int], conn: _TcpProtocol) -> None:
        self._tcp[key] = conn
        for data in self._pending_tcp.pop(key, []):
            conn.transport.write(data)

    def _tcp_lost(self, key: tuple[str, int], conn: _TcpProtocol) -> None:
        if self._tcp.get(key) is conn:
            del self._tcp[key]

    def _tcp_failed(self, key: tuple[str, int], reason: str) -> None:
        dropped = self._pending_tcp.pop(key, [])
        log.warning("sip.tcp.connect_failed", dest=f"{key[0]}:{key[1]}", reason=reason, dropped=len(dropped))


class _UdpProtocol(protocol.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        source: Address = ("UDP", addr[0], addr[1])
        self.owner.handle_bytes(datagram, source, lambda data: self.owner.send(data, source))


class _TcpProtocol(protocol.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer(owner.max_size)
        self.key: tuple[str, int] = ("", 0)

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.key = (peer.host, peer.port)
        self.owner._tcp_connected(self.key, self)

    def dataReceived(self, data: bytes) -> None:
        source: Address = ("TCP", self.key[0], self.key[1])
        try:
            messages = self.framer.feed(data)
        except SipParseError as err:
            log.warning("sip.tcp.framing_error", reason=err.reason, source=f"{self.key[0]}:{self.key[1]}")
            self.transport.loseConnection()
            return
        for raw in messages:
            self.owner.handle_bytes(raw, source, self.transport.write)

    def connectionLost(self, reason: Any = None) -> None:
        self.owner._tcp_lost(self.key, self)


class _TcpFactory(protocol.ServerFactory):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _TcpProtocol:
        return _TcpProtocol(self.owner)


class _TcpClientFactory(protocol.ClientFactory):
    def __init__(self, owner: SipTransport, key: tuple[str, int]) -> None:
        self.owner = owner
        self.key = key

    def buildProtocol(self, addr: Any) -> _TcpProtocol:
        return _TcpProtocol(self.owner)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.owner._tcp_failed(self.key, str(reason.value))
