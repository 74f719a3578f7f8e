"""One media clock for the whole process: every 20 ms, every leg receives one frame and sends one.

Not one timer per call: a single looping call walks the mixers (bridges, conferences, players) in two
phases — first every leg pulls its received frame from its jitter buffer, then every leg sends — so a
bridge or a recorder always sees the frames of the same tick. When the loop is late (a busy machine),
the next ticks follow at once (one per callback) until the clock has caught up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from callcenter.media.session import RtpSession

log = structlog.get_logger("callcenter.media")

FRAME_SECONDS = 0.020
MAX_CATCH_UP = 5  # beyond 100 ms late we skip ticks rather than burst
CLOCK_JUMP = 1.0  # seconds: more than this early or late means the clock jumped; resynchronise


class TickHandler(Protocol):
    """Something that acts once per tick after every leg has pulled its frame (a bridge, a recorder)."""

    def on_tick(self) -> None: ...


class MediaClock:
    """Self-scheduling: each callback runs ONE tick and schedules the next at its due time on the injected
    clock (the reactor's), immediately when behind. (A LoopingCall that catches up inside one callback gets
    stuck skipping every other slot under load.) Far behind (> MAX_CATCH_UP ticks) the lost ticks are
    skipped rather than sent as a burst; a jump of the clock itself resynchronises."""

    def __init__(self, reactor: Any, now: Callable[[], float] | None = None) -> None:
        self.reactor = reactor
        self.now = now or reactor.seconds
        self.sessions: dict[int, RtpSession] = {}
        self.handlers: list[TickHandler] = []
        self.ticks = 0
        self.late_ticks = 0  # ticks that ran more than 5 ms after their due time
        self.skipped_ticks = 0
        self.busy_seconds = 0.0  # time spent inside ticks (wall time, for the benchmarks)
        self._timer: Any = None
        self._due = 0.0
        self.after_tick: list[Callable[[], None]] = []  # recording taps: run after every leg sent

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        if self._timer is None:
            self._due = self.now() + FRAME_SECONDS
            self._schedule()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self) -> None:
        self._timer = self.reactor.callLater(max(0.0, self._due - self.now()), self._tick)

    def add(self, session: RtpSession) -> None:
        self.sessions[id(session)] = session

    def remove(self, session: RtpSession) -> None:
        self.sessions.pop(id(session), None)

    def add_handler(self, handler: TickHandler) -> None:
        self.handlers.append(handler)

    def remove_handler(self, handler: TickHandler) -> None:
        if handler in self.handlers:
            self.handlers.remove(handler)

    def _tick(self) -> None:
        began = time.perf_counter()
        try:
            self._step(self.now())
        finally:  # whatever happened, the clock goes on: every call's audio depends on it
            self._due += FRAME_SECONDS
            self.busy_seconds += time.perf_counter() - began
            if self._timer is not None:
                self._schedule()

    def _step(self, now: float) -> None:
        lateness = now - self._due
        if lateness > 0.005:
            self.late_ticks += 1
        if lateness > MAX_CATCH_UP * FRAME_SECONDS:
            if lateness > CLOCK_JUMP:  # the clock itself jumped (or the process was stopped): start afresh
                self._due = now
            else:
                lost = int(lateness / FRAME_SECONDS)
                self.skipped_ticks += lost
                self._due += lost * FRAME_SECONDS
        elif lateness < -CLOCK_JUMP:  # the clock went backwards
            self._due = now
        self.run_once(now)

    def run_once(self, now: float) -> None:
        """One 20 ms step for every leg (public so tests can drive the clock by hand)."""
        self.ticks += 1
        sessions = list(self.sessions.values())
        # One leg's failure (a flow's frame source, an odd peer address) must not stop the LoopingCall,
        # which would silence every call in the process.
        for session in sessions:
            try:
                session.pull()
            except Exception:
                log.exception("media.tick.pull_failed", call_id=session.call_id)
        for handler in list(self.handlers):
            try:
                handler.on_tick()
            except Exception:
                log.exception("media.tick.handler_failed")
        for session in sessions:
            try:
                session.tick(now)
            except Exception:
                log.exception("media.tick.send_failed", call_id=session.call_id)
        for fn in list(self.after_tick):
            try:
                fn()
            except Exception:
                log.exception("media.tick.after_failed")
