"""Carrier trunks: who is a trunk, which DIDs arrive where, channel limits with an emergency reserve.

A trunk of N channels keeps ``emergency_reserve`` of them for emergencies: ordinary calls beyond
``N - reserve`` get busy treatment, an emergency may use every channel. Sans-I/O bookkeeping; the
registration client that keeps a trunk registered lives in :mod:`callcenter.calls.trunk_registration`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Admission(Enum):
    ACCEPT = "accept"
    BUSY = "busy"  # 486: only the emergency reserve is left
    FULL = "full"  # 503: every channel is in use


@dataclass(eq=False)
class Trunk:
    name: str
    host: str
    port: int
    transport: str  # "UDP" | "TCP"
    channels: int
    emergency_reserve: int
    dids: frozenset[str]
    username: str | None = None
    password: str | None = None
    register: bool = False
    register_expires: int = 600
    outbound: bool = True
    addresses: frozenset[str] = frozenset()
    active_calls: set[str] = field(default_factory=set)
    registered: bool = False

    @property
    def address(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)

    def admit(self, emergency: bool) -> Admission:
        used = len(self.active_calls)
        if used >= self.channels:
            return Admission.FULL
        if not emergency and used >= self.channels - self.emergency_reserve:
            return Admission.BUSY
        return Admission.ACCEPT


def _resolve(host: str) -> frozenset[str]:
    try:
        return frozenset(info[4][0] for info in socket.getaddrinfo(host, None))
    except OSError:
        return frozenset({host})


class TrunkSet:
    """All configured trunks, indexed by source address and by DID."""

    def __init__(self, trunks: list[Trunk]) -> None:
        self.trunks = {t.name: t for t in trunks}
        self._by_host: dict[str, Trunk] = {}
        self._by_did: dict[str, Trunk] = {}
        for t in trunks:
            for addr in t.addresses or {t.host}:
                self._by_host[addr] = t
            for did in t.dids:
                self._by_did[did] = t

    @classmethod
    def from_config(cls, configs: list[Any]) -> TrunkSet:
        trunks = [
            Trunk(
                name=c.name,
                host=c.host,
                port=c.port,
                transport=c.transport.upper(),
                channels=c.channels,
                emergency_reserve=c.emergency_reserve,
                dids=frozenset(c.dids),
                username=c.username,
                password=c.password,
                register=c.register,
                register_expires=c.register_expires,
                outbound=c.outbound,
                addresses=_resolve(c.host),
            )
            for c in configs
        ]
        return cls(trunks)

    def by_source(self, host: str) -> Trunk | None:
        return self._by_host.get(host)

    def by_did(self, did: str) -> Trunk | None:
        return self._by_did.get(did)

    def hosts(self) -> set[str]:
        return set(self._by_host)

    def for_outbound(self, name: str | None = None) -> Trunk | None:
        if name is not None:
            return self.trunks.get(name)
        for t in self.trunks.values():
            if t.outbound:
                return t
        return None

    def release(self, call_id: str) -> None:
        for t in self.trunks.values():
            t.active_calls.discard(call_id)
