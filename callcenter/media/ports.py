"""RTP port allocation: even ports for RTP, the odd one above for RTCP, released when calls end."""

from __future__ import annotations

from collections import deque


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

    @property
    def free(self) -> int:
        return len(self._free)
