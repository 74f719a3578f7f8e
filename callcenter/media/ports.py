"""RTP port allocation and the simplest media endpoints (hold: absorb; echo: send back).

The full media plane (G.711, DTMF, player, recorder, bridge) builds on these ports; until then a
call that is answered and held still has a real socket so peers' RTP does not hit a closed port.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import structlog
from twisted.internet import protocol

log = structlog.get_logger("callcenter.media")


class PortsExhausted(Exception):
    """No free RTP port pair in the configured range."""


class RtpPortPool:
    """Even RTP ports (RTCP on port+1) in ``[low, high)``, reused least-recently first."""

    def __init__(self, low: int, high: int) -> None:
        low += low % 2
        self._free: deque[int] = deque(range(low, high - 1, 2))
        self._used: set[int] = set()

    def acquire(self) -> int:
        if not self._free:
            raise PortsExhausted("no free RTP port")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        return len(self._used)


class _RtpSocket(protocol.DatagramProtocol):
    def __init__(self, mode: str, call_id: str) -> None:
        self.mode = mode
        self.call_id = call_id
        self.packets = 0
        self.peer: tuple[str, int] | None = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        # Only RTP version 2 packets; anything else is ignored (counted).
        if len(datagram) < 12 or datagram[0] >> 6 != 2:
            return
        self.packets += 1
        if self.mode == "echo":
            # Symmetric RTP: answer to where the packets come from (terminals behind NAT).
            self.peer = addr
            if self.transport is not None:
                self.transport.write(datagram, addr)


class MediaEndpoint:
    """One RTP socket for one call leg; ``mode`` is "hold" (absorb) or "echo"."""

    def __init__(self, reactor: Any, pool: RtpPortPool, host: str, mode: str, call_id: str) -> None:
        self.pool = pool
        self.host = host
        self.proto = _RtpSocket(mode, call_id)
        self._listening: Any = None
        for _ in range(8):
            port = pool.acquire()
            try:
                self._listening = reactor.listenUDP(port, self.proto, interface=host)
                self.port = port
                break
            except Exception:  # port taken by another program: try the next one
                pool.release(port)
                log.warning("media.port.busy", port=port, call_id=call_id)
        else:
            raise PortsExhausted("could not bind an RTP port")

    @property
    def packets(self) -> int:
        return self.proto.packets

    def close(self) -> None:
        if self._listening is not None:
            self._listening.stopListening()
            self._listening = None
            self.pool.release(self.port)
