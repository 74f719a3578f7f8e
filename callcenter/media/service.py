"""The media API the other rooms call: open a leg, play, collect digits, echo, bridge, conference,
record, hold. One :class:`MediaService` per process owns the port pool and the media clock.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from callcenter.media.clock import MediaClock
from callcenter.media.dtmf import DtmfDigit
from callcenter.media.mixing import Bridge, Conference, Echo, RecordingTap
from callcenter.media.player import Playback, Player
from callcenter.media.ports import PortsExhausted, RtpPortPool
from callcenter.media.prompts import Prompt, PromptCache, hold_music
from callcenter.media.recorder import RecordingInfo, StereoRecorder
from callcenter.media.session import FrameSource, RtpSession

log = structlog.get_logger("callcenter.media")

RTCP_INTERVAL = 5.0  # seconds between our sender/receiver reports (RFC 3550 §6.2 minimum)
FSYNC_INTERVAL = 5.0  # seconds between fsyncs of the open recordings (in a thread)
RTCP_SLICE = 0.1  # how often the report loop looks for legs whose report is due
TYPEAHEAD = 32  # digits kept when nobody is collecting (an elder pressing before the prompt ends)


@dataclass(frozen=True, slots=True)
class DigitResult:
    digits: str
    reason: str  # "max_digits" | "terminator" | "timeout" | "hangup"
    terminator: str | None = None


class _Leg:
    """Per-leg bookkeeping the service keeps next to the RtpSession."""

    def __init__(self, session: RtpSession, listening: Any, rtcp: Any) -> None:
        self.session = session
        self.listening = listening
        self.rtcp = rtcp
        self.player: Player | None = None
        self.typeahead: deque[str] = deque(maxlen=TYPEAHEAD)
        self.collector: _Collector | None = None
        self.handler: Any = None  # Echo/Bridge/Conference driving this leg
        self.tap: RecordingTap | None = None
        self.message_tap: RecordingTap | None = None  # a voicemail message being recorded
        self.rtcp_due = session.clock.seconds() + RTCP_INTERVAL if session.clock is not None else RTCP_INTERVAL
        self.prompt_source: FrameSource | None = None  # the source play() installed
        self.fallback: FrameSource | None = None  # what the leg sends once its prompts have ended


class MediaService:
    def __init__(
        self,
        reactor: Any,
        *,
        address: str,
        port_min: int,
        port_max: int,
        prompts: PromptCache,
        recordings_root: Path,
        inband_dtmf: bool = True,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.pool = RtpPortPool(port_min, port_max)
        self.clock = MediaClock(reactor)
        self.prompts = prompts
        self.recordings_root = recordings_root
        self.inband_dtmf = inband_dtmf
        self._legs: dict[int, _Leg] = {}
        self._closed_totals: dict[str, int] = {}  # counters of legs that have ended
        self._hold_music: Prompt | None = None
        self._muted: set[int] = set()  # id() of legs whose voice bridges and conferences do not pass on
        self._rtcp_loop = LoopingCall(self._send_reports)
        self._rtcp_loop.clock = reactor
        self._sync_loop = LoopingCall(self._sync_recordings)
        self._sync_loop.clock = reactor

    def start(self) -> None:
        self.clock.start()
        self._rtcp_loop.start(RTCP_SLICE, now=False)
        self._sync_loop.start(FSYNC_INTERVAL, now=False)

    def stop(self) -> None:
        self.clock.stop()
        if self._rtcp_loop.running:
            self._rtcp_loop.stop()
        if self._sync_loop.running:
            self._sync_loop.stop()
        for leg in list(self._legs.values()):
            self.close_leg(leg.session)

    # -- legs --------------------------------------------------------------------------------------
    def open_leg(self, call_id: str, role: str) -> RtpSession:
        """Bind an RTP port (and RTCP on port+1) for one call leg; raises PortsExhausted."""
        for _ in range(min(64, max(1, self.pool.free))):
            port = self.pool.acquire()
            session = RtpSession(call_id, role, port, inband_dtmf=self.inband_dtmf)
            session.clock = self.reactor
            try:
                listening = self.reactor.listenUDP(port, session, interface=self.address)
            except Exception:
                self.pool.release(port)
                log.warning("media.port.busy", port=port, call_id=call_id)
                continue
            try:
                rtcp = self.reactor.listenUDP(port + 1, _RtcpSink(session), interface=self.address)
            except Exception:
                rtcp = None  # RTCP is best effort; RTP works without it
            leg = _Leg(session, listening, rtcp)
            self._legs[id(session)] = leg
            session.digit_listeners.append(lambda d, leg=leg: self._on_digit(leg, d))
            self.clock.add(session)
            return session
        raise PortsExhausted("could not bind an RTP port")

    def close_leg(self, session: RtpSession) -> None:
        leg = self._legs.get(id(session))
        if leg is None:
            return
        if leg.tap is not None:
            self.stop_recording(session)  # finalise the WAV (and log it) while the leg is still known
        if leg.message_tap is not None:
            self.stop_message(session)
        del self._legs[id(session)]
        self._muted.discard(id(session))
        for name, value in session.counters.as_dict().items():
            self._closed_totals[name] = self._closed_totals.get(name, 0) + value
        if leg.collector is not None:
            leg.collector.finish("hangup")
        if leg.player is not None:
            leg.player.stop()
        self._detach(leg)
        self.clock.remove(session)
        session.close()
        if leg.listening is not None:  # an adopted leg (adopt_leg) has no port of ours
            leg.listening.stopListening()
            self.pool.release(session.port)
        if leg.rtcp is not None:
            leg.rtcp.stopListening()

    def is_open(self, session: RtpSession) -> bool:
        return id(session) in self._legs

    def adopt_leg(self, session: Any) -> None:
        """Make a leg that brings its own transport (a browser's WebRtcLeg: no port to bind) a media leg of this
        service, as open_leg does for RTP: the clock ticks it; bridge, conference, play, hold, mute, record and
        close_leg (which ends it) accept it."""
        if id(session) in self._legs:
            return
        if session.clock is None:
            session.clock = self.reactor
        leg = _Leg(session, None, None)
        self._legs[id(session)] = leg
        session.digit_listeners.append(lambda d, leg=leg: self._on_digit(leg, d))
        self.clock.add(session)

    def detach_leg(self, session: RtpSession) -> None:
        """Take the leg out of its echo, bridge or conference; it stays open (a conference goes on without it, a
        bridge's other side hears silence)."""
        leg = self._legs.get(id(session))
        if leg is not None:
            self._detach(leg)

    def replace_leg(self, old: RtpSession, new: RtpSession) -> bool:
        """``new`` takes ``old``'s place in its bridge or conference, on hold and muted as ``old`` was (a browser
        that reconnects mid-call). False when ``old`` was in neither. ``old`` stays open (close it after)."""
        leg = self._legs.get(id(old))
        handler = leg.handler if leg is not None else None
        if id(old) in self._muted:
            self.mute(new, True)
        if isinstance(handler, Bridge):
            other = handler.other if handler.caller is old else handler.caller
            held = {(id(new) if key == id(old) else key): music for key, music in handler.hold_sources.items()}
            deaf = {id(new) if key == id(old) else key for key in handler.deaf}
            bridge = self.bridge(other, new) if handler.other is old else self.bridge(new, other)
            bridge.hold_sources.update(held)  # taken before bridge() closed the old one (which clears them)
            bridge.deaf |= deaf
            return True
        if isinstance(handler, Conference):
            self.join(handler, new)
            self.leave(handler, old)
            return True
        return False

    def pending_digits(self, session: RtpSession) -> int:
        """Keys typed ahead (pressed while nobody was collecting) that the next collect will get first."""
        leg = self._legs.get(id(session))
        return len(leg.typeahead) if leg is not None else 0

    def _leg(self, session: RtpSession) -> _Leg:
        leg = self._legs.get(id(session))
        if leg is None:
            raise KeyError(f"media leg of call {session.call_id} is closed")
        return leg

    def _detach(self, leg: _Leg) -> None:
        handler = leg.handler
        if isinstance(handler, Conference) and len(handler.members) > 1:
            handler.remove(leg.session)  # one member leaves (hangs up, is moved): the others go on talking
            leg.handler = None
        elif handler is not None:
            self.clock.remove_handler(handler)
            close = getattr(handler, "close", None)
            if close is not None:
                close()
            for other in self._legs.values():
                if other.handler is handler:
                    other.handler = None
            leg.handler = None

    def _connect(self, leg: _Leg) -> None:
        """Before a leg joins an echo, bridge or conference: leave the old one, end its prompts and music
        (a queued prompt would otherwise wait behind looping hold music for ever)."""
        self._detach(leg)
        if leg.player is not None:
            leg.player.stop()

    def _sync_recordings(self) -> None:
        """fsync every open recording in a worker thread (the files stay valid WAVs on disk at each flush
        anyway; this bounds what a machine crash, not a process crash, can lose)."""
        fds = [fd for leg in self._legs.values() for tap in (leg.tap, leg.message_tap) if tap is not None
               for fd in [tap.recorder.duplicate_fd()] if fd is not None]
        if fds:
            self.reactor.callInThread(_fsync_and_close, fds)

    def _send_reports(self) -> None:
        """One loop for all legs (not a timer per call), every RTCP_SLICE: each leg's SR (or RR) goes out
        RTCP_INTERVAL after its previous one, so the reports of many calls spread over the interval
        instead of landing in one media tick."""
        now = self.reactor.seconds()
        for leg in self._legs.values():
            if leg.rtcp_due > now:
                continue
            leg.rtcp_due = max(leg.rtcp_due + RTCP_INTERVAL, now)
            if leg.rtcp is None or leg.session.peer is None:
                continue
            report = leg.session.rtcp_report(now)
            if report is None:
                continue
            host, port = leg.session.rtcp_peer or (leg.session.peer[0], leg.session.peer[1] + 1)
            try:
                leg.rtcp.write(report, (host, port))
            except (OSError, ValueError):  # ValueError: Twisted's InvalidAddressError (a host name in SDP c=)
                pass

    # -- prompts -------------------------------------------------------------------------------------
    def play(self, session: RtpSession, prompt: Prompt, *, barge_in: bool = True, loop: bool = False) -> Playback:
        """Queue ``prompt`` on the leg; the leg plays it instead of its usual source until it ends."""
        leg = self._leg(session)
        if leg.player is None:
            leg.player = Player(session.codec.name)
        else:
            leg.player.set_codec(session.codec.name)
        playback = leg.player.play(prompt, barge_in=barge_in, loop=loop)
        player = leg.player
        if session.source is None or session.source is not leg.prompt_source:
            # Fall back to the leg's own source (echo, bridge...), not to the wrapper of an earlier prompt:
            # wrappers of wrappers would grow with every prompt of a long call until the tick overflows.
            leg.fallback = session.source if session.source is not player.next_frame else None

            def frame() -> bytes | None:
                out = player.next_frame()
                if out is None and leg.fallback is not None:
                    return leg.fallback()
                return out

            leg.prompt_source = session.source = frame
        return playback

    def stop_playing(self, session: RtpSession) -> None:
        leg = self._leg(session)
        if leg.player is not None:
            leg.player.stop()

    def music_on_hold(self, session: RtpSession) -> Playback:
        if self._hold_music is None:
            self._hold_music = hold_music()
        return self.play(session, self._hold_music, barge_in=False, loop=True)

    # -- digits ---------------------------------------------------------------------------------------
    def collect_digits(
        self,
        session: RtpSession,
        *,
        max_digits: int = 1,
        timeout: float = 5.0,
        inter_digit_timeout: float = 3.0,
        terminators: str = "#",
        flush: bool = False,
    ) -> Deferred[DigitResult]:
        """Collect up to ``max_digits`` (digits typed ahead count first unless ``flush``)."""
        leg = self._leg(session)
        if leg.collector is not None:
            leg.collector.finish("timeout")
        if flush:
            leg.typeahead.clear()
        collector = _Collector(self.reactor, max_digits, timeout, inter_digit_timeout, terminators)
        collector.deferred.addBoth(lambda result: self._collector_done(leg, collector, result))
        leg.collector = collector
        while leg.typeahead and not collector.finished:
            collector.digit(leg.typeahead.popleft())
        return collector.deferred

    def _collector_done(self, leg: _Leg, collector: _Collector, result: Any) -> Any:
        if leg.collector is collector:
            leg.collector = None
        return result

    def inject_digit(self, session: RtpSession, digit: DtmfDigit) -> None:
        """A digit that arrived by signalling (SIP INFO) rather than in the media."""
        session._digit(digit)

    def _on_digit(self, leg: _Leg, digit: DtmfDigit) -> None:
        if leg.player is not None:
            leg.player.interrupt_for_digit()
        if leg.collector is not None and not leg.collector.finished:
            leg.collector.digit(digit.digit)
        else:
            leg.typeahead.append(digit.digit)

    def send_dtmf(self, session: RtpSession, digits: str) -> bool:
        return session.send_dtmf(digits)

    # -- connecting legs -------------------------------------------------------------------------------
    def echo(self, session: RtpSession) -> Echo:
        leg = self._leg(session)
        self._connect(leg)
        echo = Echo(session)
        leg.handler = echo
        self.clock.add_handler(echo)
        return echo

    def bridge(self, caller: RtpSession, other: RtpSession) -> Bridge:
        a, b = self._leg(caller), self._leg(other)
        self._connect(a)
        self._connect(b)
        bridge = Bridge(caller, other, muted=self._muted)
        a.handler = b.handler = bridge
        self.clock.add_handler(bridge)
        log.info("media.bridge", call_id=caller.call_id, other=other.call_id,
                 codecs=f"{caller.codec.name}/{other.codec.name}")
        return bridge

    def conference(self, members: list[RtpSession]) -> Conference:
        legs = [self._leg(m) for m in members]
        for leg in legs:
            self._connect(leg)
        conference = Conference(members, muted=self._muted)
        for leg in legs:
            leg.handler = conference
        self.clock.add_handler(conference)
        log.info("media.conference", call_id=members[0].call_id, members=len(members))
        return conference

    def join(self, conference: Conference, session: RtpSession) -> None:
        leg = self._leg(session)
        self._connect(leg)
        conference.add(session)
        leg.handler = conference

    def leave(self, conference: Conference, session: RtpSession) -> None:
        conference.remove(session)
        leg = self._legs.get(id(session))
        if leg is not None and leg.handler is conference:
            leg.handler = None

    def hold(self, bridge: Bridge, holder: RtpSession) -> None:
        """``holder`` put the call on hold: the other side hears music until :meth:`unhold`."""
        if self._hold_music is None:
            self._hold_music = hold_music()
        other = bridge.other if holder is bridge.caller else bridge.caller
        player = Player(other.codec.name)
        player.play(self._hold_music, barge_in=False, loop=True)
        bridge.hold(holder, player)

    def unhold(self, bridge: Bridge, holder: RtpSession) -> None:
        bridge.unhold(holder)

    def hold_leg(self, session: RtpSession, held: bool) -> bool:
        """An operator's hold button on ``session`` (their leg of a two-leg bridge): the other side hears music
        on hold and ``session`` hears silence, until released. False when the leg is in no bridge."""
        leg = self._legs.get(id(session))
        bridge = leg.handler if leg is not None else None
        if not isinstance(bridge, Bridge):
            return False
        if held:
            if self._hold_music is None:
                self._hold_music = hold_music()
            other = bridge.other if session is bridge.caller else bridge.caller
            player = Player(other.codec.name)
            player.play(self._hold_music, barge_in=False, loop=True)
            bridge.hold(session, player, holder_hears=False)
        else:
            bridge.unhold(session)
        log.info("media.hold", call_id=session.call_id, held=held, leg=session.role, by="operator")
        return True

    def mute(self, session: RtpSession, muted: bool) -> None:
        """``session``'s voice is not passed on by bridges and conferences (now and after moves between them)
        while muted; it still hears the others. Recordings keep what the caller hears."""
        if muted:
            self._muted.add(id(session))
        else:
            self._muted.discard(id(session))
        log.info("media.mute", call_id=session.call_id, muted=muted, leg=session.role)

    def is_muted(self, session: RtpSession) -> bool:
        return id(session) in self._muted

    def remote_hold(self, session: RtpSession, held: bool) -> None:
        """The peer of ``session`` put us on hold (re-INVITE sendonly/inactive) or took us off it: in a
        bridge, the other side hears music on hold meanwhile."""
        leg = self._legs.get(id(session))
        if leg is None or not isinstance(leg.handler, Bridge):
            return
        if held:
            self.hold(leg.handler, session)
        else:
            self.unhold(leg.handler, session)
        log.info("media.hold", call_id=session.call_id, held=held, leg=session.role)

    # -- recording ---------------------------------------------------------------------------------------
    def recording_path(self, call_id: str, started: datetime) -> Path:
        """recordings/YYYY/MM/DD/HHMMSS-<hash of the call id>.wav: never a caller-supplied string in a path."""
        digest = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:20]
        day = started.astimezone(UTC)
        return self.recordings_root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"{day:%H%M%S}-{digest}.wav"

    def start_recording(self, caller: RtpSession, started: datetime | None = None) -> Path:
        """Record the call from the caller leg: caller left, what the caller hears right."""
        leg = self._leg(caller)
        if leg.tap is not None:
            return leg.tap.recorder.path  # type: ignore[no-any-return]
        path = first = self.recording_path(caller.call_id, started or datetime.now(UTC))
        n = 1
        while path.exists():  # recording again within the same second (the recorder never overwrites)
            n += 1
            path = first.with_name(f"{first.stem}-{n}{first.suffix}")
        leg.tap = self._open_tap(caller, path, "media.recording.started")
        return path

    def stop_recording(self, caller: RtpSession) -> RecordingInfo | None:
        return self._close_tap(caller, "tap", "media.recording.finished")

    def start_message(self, caller: RtpSession, path: Path) -> None:
        """Record a message the caller leaves (voicemail) into ``path``: caller left, what they hear (the
        beep) right. Independent of the call's own recording."""
        leg = self._leg(caller)
        if leg.message_tap is not None:
            raise RuntimeError(f"call {caller.call_id} is already recording a message")
        leg.message_tap = self._open_tap(caller, path, "media.message.started")

    def stop_message(self, caller: RtpSession) -> RecordingInfo | None:
        return self._close_tap(caller, "message_tap", "media.message.finished")

    def _open_tap(self, caller: RtpSession, path: Path, event: str) -> RecordingTap:
        path.parent.mkdir(parents=True, exist_ok=True)
        # fsync never runs in the media tick (it can block for tens of ms): the service syncs every
        # recording from a thread every FSYNC_INTERVAL (see _sync_recordings).
        tap = RecordingTap(caller, StereoRecorder(path, fsync_interval_seconds=None))
        self.clock.after_tick.append(tap.after_tick)
        log.info(event, call_id=caller.call_id, path=str(path))
        return tap

    def _close_tap(self, caller: RtpSession, attribute: str, event: str) -> RecordingInfo | None:
        leg = self._legs.get(id(caller))
        tap: RecordingTap | None = getattr(leg, attribute) if leg is not None else None
        if tap is None:
            return None
        if tap.after_tick in self.clock.after_tick:
            self.clock.after_tick.remove(tap.after_tick)
        setattr(leg, attribute, None)
        fd = tap.recorder.duplicate_fd()
        info: RecordingInfo = tap.recorder.close(sync=fd is None)
        if fd is not None:  # the final fsync in a thread, like the periodic ones
            self.reactor.callInThread(_fsync_and_close, [fd])
        log.info(event, call_id=caller.call_id, path=str(info.path), seconds=info.seconds)
        return info

    # -- observability -------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        totals: dict[str, int] = dict(self._closed_totals)
        for leg in self._legs.values():
            for k, v in leg.session.counters.as_dict().items():
                totals[k] = totals.get(k, 0) + v
        return {
            "legs": len(self._legs),
            "ports_in_use": self.pool.in_use,
            "ticks": self.clock.ticks,
            "late_ticks": self.clock.late_ticks,
            "skipped_ticks": self.clock.skipped_ticks,
            **totals,
        }


class _Collector:
    def __init__(self, reactor: Any, max_digits: int, timeout: float, inter_digit: float, terminators: str) -> None:
        self.reactor = reactor
        self.max_digits = max_digits
        self.inter_digit = inter_digit
        self.terminators = terminators
        self.digits = ""
        self.finished = False
        self.deferred: Deferred[DigitResult] = Deferred()
        self.timer = reactor.callLater(timeout, self.finish, "timeout")

    def digit(self, d: str) -> None:
        if self.finished:
            return
        if d in self.terminators:
            self.finish("terminator", d)
            return
        self.digits += d
        if len(self.digits) >= self.max_digits:
            self.finish("max_digits")
            return
        if self.timer.active():
            self.timer.cancel()
        self.timer = self.reactor.callLater(self.inter_digit, self.finish, "timeout")

    def finish(self, reason: str, terminator: str | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer.active():
            self.timer.cancel()
        self.deferred.callback(DigitResult(self.digits, reason, terminator))


class _RtcpSink(protocol.DatagramProtocol):
    """The RTCP port (RTP port + 1): reports from the peer go to the session; ours leave from here."""

    def __init__(self, session: RtpSession) -> None:
        self.session = session

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.session.on_rtcp(datagram, addr)


def _fsync_and_close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError:
            log.warning("media.recording.fsync_failed")
        finally:
            os.close(fd)
