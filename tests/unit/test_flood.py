from __future__ import annotations

from typing import Any

import pytest

from callcenter.net.flood import FloodGuard, FloodStats

SRC = "203.0.113.7"
T0 = 1000.0


def test_burst_then_ban() -> None:
    guard = FloodGuard(rate=1.0, burst=3, ban_seconds=60.0)
    assert [guard.allow(SRC, T0) for _ in range(3)] == [True, True, True]
    assert guard.allow(SRC, T0) is False  # empty bucket -> banned
    assert guard.bans == 1
    assert guard.is_banned(SRC, T0)
    # During the ban everything is dropped, even after the bucket would have refilled.
    assert guard.allow(SRC, T0 + 10.0) is False
    assert guard.allow(SRC, T0 + 59.999) is False
    assert guard.bans == 1  # no extra bans while already banned
    assert guard.allowed == 3
    assert guard.dropped == 3


def test_unban_gives_fresh_bucket() -> None:
    guard = FloodGuard(rate=0.001, burst=2, ban_seconds=30.0)
    assert guard.allow(SRC, T0) and guard.allow(SRC, T0)
    assert not guard.allow(SRC, T0 + 1)
    assert not guard.is_banned(SRC, T0 + 31)
    # Refill at 0.001/s would give nothing; the unban resets to a full bucket.
    assert guard.allow(SRC, T0 + 31) and guard.allow(SRC, T0 + 31)
    assert not guard.allow(SRC, T0 + 31)
    assert guard.bans == 2


def test_refill_rate() -> None:
    guard = FloodGuard(rate=2.0, burst=4, ban_seconds=60.0)
    for _ in range(4):
        assert guard.allow(SRC, T0)
    # 0.5 s at 2 tokens/s gives exactly one token.
    assert guard.allow(SRC, T0 + 0.5)
    # 0.25 s later only half a token: empty -> ban.
    assert not guard.allow(SRC, T0 + 0.75)
    assert guard.bans == 1


def test_refill_is_capped_at_burst() -> None:
    guard = FloodGuard(rate=10.0, burst=3, ban_seconds=60.0)
    assert guard.allow(SRC, T0)
    # A long idle period must not bank more than `burst` tokens.
    results = [guard.allow(SRC, T0 + 3600.0) for _ in range(4)]
    assert results == [True, True, True, False]


def test_steady_rate_within_limit_never_banned() -> None:
    guard = FloodGuard(rate=5.0, burst=5, ban_seconds=60.0)
    now = T0
    for _ in range(1000):
        assert guard.allow(SRC, now)
        now += 0.2  # exactly the refill rate
    assert guard.bans == 0 and guard.dropped == 0


def test_clock_going_backwards_does_not_refill() -> None:
    guard = FloodGuard(rate=1.0, burst=2, ban_seconds=10.0)
    assert guard.allow(SRC, T0) and guard.allow(SRC, T0)
    assert not guard.allow(SRC, T0 - 100.0)


def test_sources_are_independent() -> None:
    guard = FloodGuard(rate=1.0, burst=1, ban_seconds=60.0)
    assert guard.allow("a", T0)
    assert not guard.allow("a", T0)
    assert guard.allow("b", T0)
    assert not guard.is_banned("b", T0)


def test_exempt_sources_never_throttled() -> None:
    guard = FloodGuard(rate=1.0, burst=1, ban_seconds=60.0)
    trunk = "198.51.100.1"
    guard.add_exempt(trunk)
    assert guard.is_exempt(trunk)
    assert all(guard.allow(trunk, T0) for _ in range(1000))
    assert guard.dropped == 0 and guard.bans == 0
    assert len(guard) == 0  # exempt sources use no bucket
    assert guard.exempt_sources == frozenset({trunk})


def test_exempting_a_banned_source_lifts_ban_and_removal_restarts_fresh() -> None:
    guard = FloodGuard(rate=1.0, burst=1, ban_seconds=600.0)
    device = "192.0.2.44"
    assert guard.allow(device, T0)
    assert not guard.allow(device, T0)
    assert guard.is_banned(device, T0)
    guard.add_exempt(device)  # e.g. the device just registered successfully
    assert guard.allow(device, T0 + 1)
    guard.remove_exempt(device)
    assert not guard.is_exempt(device)
    assert guard.allow(device, T0 + 2)  # full bucket again, old ban forgotten
    assert not guard.allow(device, T0 + 2)
    guard.remove_exempt("never-added")  # no error


def test_forget_lifts_ban() -> None:
    guard = FloodGuard(rate=1.0, burst=1, ban_seconds=600.0)
    guard.allow(SRC, T0)
    guard.allow(SRC, T0)
    assert guard.is_banned(SRC, T0)
    guard.forget(SRC)
    assert guard.allow(SRC, T0)


def test_eviction_of_least_recently_seen() -> None:
    guard = FloodGuard(rate=1.0, burst=1, ban_seconds=600.0, max_sources=3)
    assert guard.allow("a", T0)
    assert not guard.allow("a", T0)  # a banned
    assert guard.allow("b", T0)
    assert guard.allow("c", T0)
    assert not guard.allow("a", T0 + 1)  # touching a makes b the least recently seen
    assert guard.allow("d", T0 + 2)  # evicts b
    assert len(guard) == 3
    assert guard.evictions == 1
    assert guard.allow("b", T0 + 2)  # b forgot it had used its token; evicts c
    assert guard.is_banned("a", T0 + 2)  # a is still remembered and banned
    assert guard.evictions == 2
    assert len(guard) == 3


def test_memory_bound_under_spoofed_flood() -> None:
    guard = FloodGuard(rate=1.0, burst=2, ban_seconds=60.0, max_sources=100)
    for i in range(10_000):
        guard.allow(f"10.0.{i // 256}.{i % 256}", T0 + i * 0.001)
    assert len(guard) == 100
    assert guard.evictions == 10_000 - 100


def test_zero_ban_seconds_is_plain_rate_limit() -> None:
    guard = FloodGuard(rate=1.0, burst=2, ban_seconds=0.0)
    assert guard.allow(SRC, T0) and guard.allow(SRC, T0)
    assert not guard.allow(SRC, T0)
    assert not guard.allow(SRC, T0 + 0.5)  # no fresh bucket: still empty
    assert guard.allow(SRC, T0 + 1.0)  # refilled one token
    assert guard.bans == 0
    assert not guard.is_banned(SRC, T0 + 1.0)


def test_stats_snapshot() -> None:
    guard = FloodGuard(rate=1.0, burst=1, ban_seconds=60.0, max_sources=2)
    guard.add_exempt("trunk")
    guard.allow("trunk", T0)
    guard.allow("a", T0)
    guard.allow("a", T0)
    guard.allow("a", T0)
    guard.allow("b", T0)
    guard.allow("c", T0)  # evicts a
    assert guard.stats(T0) == FloodStats(
        allowed=4, dropped=2, bans=1, evictions=1, tracked_sources=2, banned_sources=0, exempt_sources=1
    )
    guard.allow("b", T0)
    assert guard.stats(T0).banned_sources == 1
    assert guard.stats(T0 + 61).banned_sources == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.0, "burst": 1, "ban_seconds": 1.0},
        {"rate": float("inf"), "burst": 1, "ban_seconds": 1.0},
        {"rate": 1.0, "burst": 0, "ban_seconds": 1.0},
        {"rate": 1.0, "burst": 1, "ban_seconds": -1.0},
        {"rate": 1.0, "burst": 1, "ban_seconds": float("nan")},
        {"rate": 1.0, "burst": 1, "ban_seconds": 1.0, "max_sources": 0},
    ],
)
def test_argument_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FloodGuard(**kwargs)
