"""One media clock for the whole process: every 20 ms, every leg receives one frame and sends one.

Not one timer per call: a single looping call walks the mixers (bridges, conferences, players) in two
phases — first every leg pulls its received frame from its jitter buffer, then every leg sends — so a
bridge or a recorder always sees the frames of the same tick. When the loop is late (a busy machine),
the missed ticks are run back to back so RTP timestamps and the wall clock stay in step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from twisted.internet.task import LoopingCall

from callcenter.media.session import RtpSession

log = structlog.get_logger("callcenter.media")

FRAME_SECONDS = 0.020
MAX_CATCH_UP = 5  # beyond 100 ms late we skip ticks rather than burst


class TickHandler(Protocol):
    """Something that acts once per tick after every leg has pulled its frame (a bridge, a recorder)."""

    def on_tick(self) -> None: ...


class MediaClock:
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.sessions: dict[int, RtpSession] = {}
        self.handlers: list[TickHandler] = []
        self.ticks = 0
        self.late_ticks = 0  # ticks that ran more than 5 ms after their due time
        self.skipped_ticks = 0
        self.busy_seconds = 0.0  # time spent inside ticks
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._started = 0.0
        self.after_tick: list[Callable[[], None]] = []  # recording taps: run after every leg sent

    def start(self) -> None:
        if not self._loop.running:
            self._started = time.monotonic()
            self._loop.start(FRAME_SECONDS, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

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
        began = time.monotonic()
        due = self._started + (self.ticks + 1) * FRAME_SECONDS
        behind = int((began - due) / FRAME_SECONDS) + 1
        if began - due > 0.005:
            self.late_ticks += 1
        runs = min(max(behind, 1), MAX_CATCH_UP)
        if behind > MAX_CATCH_UP:
            self.skipped_ticks += behind - MAX_CATCH_UP
            self.ticks += behind - MAX_CATCH_UP
        now = self.reactor.seconds()
        for _ in range(runs):
            self.run_once(now)
        self.busy_seconds += time.monotonic() - began

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
