"""What a leg sends each tick: an echo, a two-leg bridge (with transcoding and a recording tap), a
conference mix for three-way calls (each hears the others, never themselves), or a player.

All of these are tick handlers run by :class:`callcenter.media.clock.MediaClock` after every leg pulled
its received frame and before every leg sends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from callcenter.media.g711 import transcode
from callcenter.media.session import SILENCE_PCM, RtpSession


class Echo:
    """The 9196 echo test: the caller hears what it sends, one tick later."""

    def __init__(self, leg: RtpSession) -> None:
        self.leg = leg
        self._frame: bytes | None = None
        leg.source = self._source

    def _source(self) -> bytes | None:
        return self._frame

    def on_tick(self) -> None:
        self._frame = self.leg.last_received

    def close(self) -> None:
        self._frame = None  # a prompt falling back to this source must not repeat the last frame
        if self.leg.source == self._source:
            self.leg.source = None


class Bridge:
    """Caller ↔ other leg (the operator's phone, an outside number), transcoding PCMU ↔ PCMA when needed.

    ``muted`` holds the id() of legs whose voice is not passed on (an operator's mute button; the set may be
    shared with the media service so that mute survives moves between bridge and conference). A leg in
    ``deaf`` hears nothing (an operator who put the caller on hold hears silence, not the caller)."""

    def __init__(self, caller: RtpSession, other: RtpSession, *, muted: set[int] | None = None) -> None:
        self.caller = caller
        self.other = other
        self.held: set[int] = set()  # id() of legs that put the call on hold
        self.hold_sources: dict[int, Any] = {}  # leg id → player giving music to the *other* leg
        self.muted: set[int] = muted if muted is not None else set()
        self.deaf: set[int] = set()
        self._to_caller: bytes | None = None
        self._to_other: bytes | None = None
        caller.source = self._source_for_caller
        other.source = self._source_for_other

    def _source_for_caller(self) -> bytes | None:
        music = self.hold_sources.get(id(self.other))
        if music is not None:
            return music.next_frame()
        return None if id(self.caller) in self.deaf else self._to_caller

    def _source_for_other(self) -> bytes | None:
        music = self.hold_sources.get(id(self.caller))
        if music is not None:
            return music.next_frame()
        return None if id(self.other) in self.deaf else self._to_other

    def on_tick(self) -> None:
        a, b = self.caller, self.other
        pa, pb = a.last_received, b.last_received
        muted = self.muted
        self._to_other = None if id(a) in muted else _convert(pa, a, b)
        self._to_caller = None if id(b) in muted else _convert(pb, b, a)

    def hold(self, holder: RtpSession, music: Any | None, *, holder_hears: bool = True) -> None:
        """``holder`` put the call on hold (re-INVITE sendonly/inactive): the other side hears ``music``;
        with ``holder_hears`` False the holder hears silence meanwhile (an operator's hold button)."""
        if music is None:
            self.hold_sources.pop(id(holder), None)
        else:
            self.hold_sources[id(holder)] = music
            if not holder_hears:
                self.deaf.add(id(holder))

    def unhold(self, holder: RtpSession) -> None:
        self.hold_sources.pop(id(holder), None)
        self.deaf.discard(id(holder))

    def close(self) -> None:
        # A prompt started during the bridge falls back to our sources: they must give silence from now on,
        # not the last frame of the other side (or its hold music) over and over.
        self._to_caller = self._to_other = None
        self.hold_sources.clear()
        self.deaf.clear()
        for leg in (self.caller, self.other):
            if leg.source in (self._source_for_caller, self._source_for_other):
                leg.source = None


def _convert(payload: bytes | None, src: RtpSession, dst: RtpSession) -> bytes | None:
    if payload is None:
        return None
    if src.codec.name == dst.codec.name:
        return payload
    return transcode(payload, src.codec.name, dst.codec.name)


class Conference:
    """N-party mix (three-way calls: operator + elder + 120 or family). Each member hears the sum of the
    others (never itself), clipped to 16 bits. Members in ``muted`` (by id()) are not heard by the others
    but still hear them."""

    def __init__(self, members: list[RtpSession], *, muted: set[int] | None = None) -> None:
        self.members: list[RtpSession] = []
        self._out: dict[int, bytes | None] = {}
        self.muted: set[int] = muted if muted is not None else set()
        for m in members:
            self.add(m)

    def add(self, leg: RtpSession) -> None:
        if leg in self.members:
            return
        self.members.append(leg)
        self._out[id(leg)] = None
        leg.source = lambda leg_id=id(leg): self._out.get(leg_id)

    def remove(self, leg: RtpSession) -> None:
        if leg in self.members:
            self.members.remove(leg)
            self._out.pop(id(leg), None)
            leg.source = None

    def on_tick(self) -> None:
        members = self.members
        if not members:
            return
        muted = self.muted
        pcm = [m.decoded() if m.last_received is not None and id(m) not in muted else SILENCE_PCM
               for m in members]
        total = np.sum(np.stack(pcm).astype(np.int32), axis=0)
        for member, own in zip(members, pcm, strict=True):
            mix = np.clip(total - own, -32768, 32767).astype(np.int16)
            self._out[id(member)] = member.codec.encode(mix) if mix.any() else None

    def close(self) -> None:
        for m in list(self.members):
            self.remove(m)


class RecordingTap:
    """Records one call from its caller leg's point of view: what the caller said (left) and what the
    caller heard (right) — the operator through a bridge, the others in a conference, prompts, music on
    hold. Tied to the caller leg, so it follows the call through hold and transfer. Runs after the sends."""

    def __init__(self, caller: RtpSession, recorder: Any) -> None:
        self.caller = caller
        self.recorder = recorder
        self.paused = False

    def after_tick(self) -> None:
        if self.paused:
            return
        leg = self.caller
        left = leg.decoded() if leg.last_received is not None else None
        sent = leg.last_sent
        right = leg.codec.decode(sent) if sent is not None else None
        self.recorder.write(left, right)
