"""Per-source token-bucket flood protection for the SIP listener.

Sans-I/O and O(1) per packet: the caller passes the current time (seconds, any
monotonic clock) with every call.  Each source — normally the packet's source
IP address as a string; the key is matched exactly, so normalise it the same
way everywhere — gets a bucket of ``burst`` tokens refilled at ``rate`` tokens
per second.  A packet arriving at an empty bucket bans the source: it and every
further packet are dropped for ``ban_seconds``, after which the source starts
again with a full bucket.  Exempt sources (configured trunks, registered
devices) are never throttled.  At most ``max_sources`` buckets are kept; the
least recently seen source is forgotten first.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FloodGuard", "FloodStats"]


@dataclass(frozen=True, slots=True)
class FloodStats:
    """Counter snapshot for metrics.  ``allowed`` includes packets from exempt sources."""

    allowed: int
    dropped: int
    bans: int
    evictions: int
    tracked_sources: int
    banned_sources: int
    exempt_sources: int


class _Bucket:
    __slots__ = ("banned_until", "tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated
        self.banned_until: float | None = None


class FloodGuard:
    """Token bucket per source with temporary bans, an exemption set and bounded memory.

    ``rate`` is in packets per second, ``burst`` the bucket size.  With
    ``ban_seconds == 0`` there is no ban: over-rate packets are simply dropped
    and the bucket keeps refilling at ``rate``.  Not thread-safe.
    """

    def __init__(self, rate: float, burst: int, ban_seconds: float, max_sources: int = 100_000) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if not (math.isfinite(ban_seconds) and ban_seconds >= 0):
            raise ValueError(f"ban_seconds must be a non-negative number, got {ban_seconds!r}")
        if max_sources < 1:
            raise ValueError(f"max_sources must be at least 1, got {max_sources!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        self.ban_seconds = float(ban_seconds)
        self.max_sources = int(max_sources)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently seen first
        self._exempt: set[str] = set()
        self.allowed = 0
        self.dropped = 0
        self.bans = 0
        self.evictions = 0

    # ------------------------------------------------------------------ exemptions

    def add_exempt(self, host: str) -> None:
        """Never throttle ``host``; any bucket or ban it had is discarded."""
        self._exempt.add(host)
        self._buckets.pop(host, None)

    def remove_exempt(self, host: str) -> None:
        """Throttle ``host`` again (starting with a full bucket).  Unknown hosts are ignored."""
        self._exempt.discard(host)

    def is_exempt(self, host: str) -> bool:
        return host in self._exempt

    @property
    def exempt_sources(self) -> frozenset[str]:
        return frozenset(self._exempt)

    # ------------------------------------------------------------------ the check

    def allow(self, source: str, now: float) -> bool:
        """Account for one packet from ``source`` at time ``now``; ``False`` means drop it."""
        if source in self._exempt:
            self.allowed += 1
            return True
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            buckets[source] = bucket
            if len(buckets) > self.max_sources:
                buckets.popitem(last=False)
                self.evictions += 1
        else:
            buckets.move_to_end(source)
            if bucket.banned_until is not None:
                if now < bucket.banned_until:
                    self.dropped += 1
                    return False
                bucket.banned_until = None
                bucket.tokens = float(self.burst)
                bucket.updated = now
            elif now > bucket.updated:  # a clock going backwards never refills nor rewinds
                bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
                bucket.updated = now

        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self.allowed += 1
            return True
        self.dropped += 1
        if self.ban_seconds > 0:
            bucket.banned_until = now + self.ban_seconds
            self.bans += 1
        return False

    # ------------------------------------------------------------------ inspection / admin

    def is_banned(self, source: str, now: float) -> bool:
        """Whether packets from ``source`` would currently be dropped because of a ban."""
        bucket = self._buckets.get(source)
        return bucket is not None and bucket.banned_until is not None and now < bucket.banned_until

    def forget(self, source: str) -> None:
        """Drop all state for ``source`` (lifts a ban; next packet gets a full bucket)."""
        self._buckets.pop(source, None)

    def __len__(self) -> int:
        """Number of sources currently tracked (exempt sources are not tracked)."""
        return len(self._buckets)

    def stats(self, now: float) -> FloodStats:
        """Counter snapshot; O(number of tracked sources) because it counts active bans."""
        banned = sum(1 for b in self._buckets.values() if b.banned_until is not None and now < b.banned_until)
        return FloodStats(
            allowed=self.allowed,
            dropped=self.dropped,
            bans=self.bans,
            evictions=self.evictions,
            tracked_sources=len(self._buckets),
            banned_sources=banned,
            exempt_sources=len(self._exempt),
        )
