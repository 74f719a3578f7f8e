"""Per-leg prompt playout, paced by the shared 20 ms media tick (the tick calls :meth:`Player.next_frame`).

Prompts queue and play back to back with no gap. A playback ends once: ``"finished"`` (its last frame was
handed out), ``"interrupted"`` (a DTMF digit barged in, see :meth:`Player.interrupt_for_digit`) or
``"stopped"`` (:meth:`Player.stop` / :meth:`Playback.stop`); then its done-callbacks run. Frames come from
the prompt's per-codec cache, so a tick is a list lookup and a codec change (re-INVITE) continues at the
same 20 ms position in the other codec. Music on hold: ``player.play(hold_music(), loop=True, barge_in=False)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

import structlog

from callcenter.media.g711 import codec_for
from callcenter.media.prompts import Prompt

log = structlog.get_logger("callcenter.media")

Reason = Literal["finished", "interrupted", "stopped"]
DoneCallback = Callable[["Playback"], object]


class Playback:
    """One queued prompt. ``position`` is the index of the next 20 ms frame to send."""

    __slots__ = ("_callbacks", "_player", "barge_in", "done", "loop", "position", "prompt", "reason")

    def __init__(self, player: Player, prompt: Prompt, *, barge_in: bool, loop: bool) -> None:
        self._player: Player | None = player
        self.prompt = prompt
        self.barge_in = barge_in
        self.loop = loop
        self.position = 0
        self.done = False
        self.reason: Reason | None = None
        self._callbacks: list[DoneCallback] = []

    def add_done_callback(self, fn: DoneCallback) -> None:
        """``fn(playback)`` once this playback ends; at once if it already has."""
        if self.done:
            self._run(fn)
        else:
            self._callbacks.append(fn)

    def stop(self) -> bool:
        """Stop this playback only (e.g. the music on hold when the agent comes back). False if already done."""
        player = self._player
        return player is not None and player._remove(self, "stopped")

    def _finish(self, reason: Reason) -> None:
        if self.done:
            return
        self.done, self.reason, self._player = True, reason, None
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._run(fn)

    def _run(self, fn: DoneCallback) -> None:
        try:
            fn(self)
        except Exception:  # a flow bug must not stop the media tick for every call
            log.exception("media.playback.callback_failed", prompt=self.prompt.name, reason=self.reason)

    def __repr__(self) -> str:
        state = self.reason if self.done else f"at frame {self.position}"
        return f"Playback({self.prompt.name!r}, {state})"


class Player:
    """The prompt queue of one leg, in that leg's codec."""

    def __init__(self, codec_name: str) -> None:
        self._codec = codec_for(codec_name).name
        self._queue: deque[Playback] = deque()

    @property
    def codec_name(self) -> str:
        return self._codec

    @property
    def idle(self) -> bool:
        return not self._queue

    @property
    def current(self) -> Playback | None:
        return self._queue[0] if self._queue else None

    @property
    def queued(self) -> list[Playback]:
        """The current playback first, then the waiting ones."""
        return list(self._queue)

    def play(self, prompt: Prompt, *, barge_in: bool = True, loop: bool = False) -> Playback:
        """Queue ``prompt`` after whatever is playing. A looping prompt plays until stopped (or interrupted)."""
        prompt.frames(self._codec)  # encode now, not inside the media tick
        playback = Playback(self, prompt, barge_in=barge_in, loop=loop)
        self._queue.append(playback)
        return playback

    def next_frame(self) -> bytes | None:
        """The next 160-byte frame, or None when idle (the session then sends silence or nothing)."""
        while self._queue:
            playback = self._queue[0]
            frames = playback.prompt.frames(self._codec)
            if playback.position >= len(frames):
                if playback.loop and frames:
                    playback.position = 0
                else:  # an empty prompt: ends without a frame
                    self._queue.popleft()
                    playback._finish("finished")
                    continue
            frame = frames[playback.position]
            playback.position += 1
            if playback.position >= len(frames) and not playback.loop:
                self._queue.popleft()
                playback._finish("finished")  # callbacks may queue the next prompt: it starts next tick
            return frame
        return None

    def stop(self) -> bool:
        """Stop the current and every queued playback (reason "stopped"). True if anything was playing."""
        stopped = list(self._queue)
        self._queue.clear()
        for playback in stopped:
            playback._finish("stopped")
        return bool(stopped)

    def interrupt_for_digit(self) -> bool:
        """A DTMF digit arrived: end the current and queued playbacks that allow barge-in (reason
        "interrupted"); the others (music on hold, legal notices) keep their place. True if any ended."""
        hit = [p for p in self._queue if p.barge_in]
        if hit:
            self._queue = deque(p for p in self._queue if not p.barge_in)
            for playback in hit:
                playback._finish("interrupted")
        return bool(hit)

    def set_codec(self, codec_name: str) -> None:
        """The leg's codec changed (re-INVITE): continue every playback at the same position in the new codec."""
        self._codec = codec_for(codec_name).name
        for playback in self._queue:
            playback.prompt.frames(self._codec)

    def _remove(self, playback: Playback, reason: Reason) -> bool:
        try:
            self._queue.remove(playback)
        except ValueError:
            return False
        playback._finish(reason)
        return True

    def __repr__(self) -> str:
        return f"Player({self._codec}, {len(self._queue)} queued)"
