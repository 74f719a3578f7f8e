"""A flow's call over SIP and RTP: the :class:`~callcenter.ivr.runner.FlowCall` of a real inbound call.

Answering sends the 200 OK the inbound handler prepared and waits for the ACK (so the first prompt is
not spoken into a leg whose media isn't flowing yet); prompts come from the TTS cache (rendered at
publish time; a text with the caller's name is rendered on the TTS thread the first time) or from
recorded files; digits, queues, transfers, voicemail and callback tasks go to their rooms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred

from callcenter.calls.model import Call, CallState, EndReason
from callcenter.ivr.runner import QueueOutcome, QueueRequest, RecordedMessage, Utterance
from callcenter.media.prompts import Prompt, PromptError, tone
from callcenter.media.service import DigitResult

if TYPE_CHECKING:
    from callcenter.ivr.service import FlowService

log = structlog.get_logger("callcenter.ivr")

_BEEP = tone([1000.0], 0.4, level_dbfs=-10)


@dataclass
class SipFlowCall:
    """One inbound call as its flow sees it."""

    service: FlowService
    call: Call
    answer_fn: Callable[[], Deferred[None]]  # sends the 200 OK; fires on the ACK
    ring_fn: Callable[[], None]

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def answered(self) -> bool:
        return self.call.state in (CallState.ANSWERED, CallState.CONFIRMED)

    @property
    def _session(self) -> Any:
        session = self.call.caller_leg.media
        if session is None or not self.call.active or not self.service.media.is_open(session):
            raise CancelledError()  # the call is gone (or going): stop the flow
        return session

    def ring(self) -> None:
        self.ring_fn()

    def answer(self) -> Deferred[None]:
        return self.answer_fn()

    # -- prompts ------------------------------------------------------------------------------------------
    def play(self, utterance: Utterance, *, barge_in: bool) -> Deferred[None]:
        return ensureDeferred(self._play(utterance, barge_in))

    async def _play(self, utterance: Utterance, barge_in: bool) -> None:
        if barge_in and self.service.media.pending_digits(self._session):
            return  # the caller already answered this question (pressed a key during the previous prompt)
        prompt = await self.service.prompt_for(utterance, call_id=self.call_id)
        if prompt is None:
            return
        await self._play_prompt(prompt, barge_in)

    def _play_prompt(self, prompt: Prompt, barge_in: bool) -> Deferred[None]:
        media, session = self.service.media, self._session
        playback = media.play(session, prompt, barge_in=barge_in)
        done: Deferred[None] = Deferred(lambda _: playback.stop())
        playback.add_done_callback(lambda *_: None if done.called else done.callback(None))
        return done

    def collect(self, *, max_digits: int, timeout: float, inter_digit_timeout: float,
                terminators: str) -> Deferred[DigitResult]:
        return self.service.media.collect_digits(self._session, max_digits=max_digits, timeout=timeout,
                                                 inter_digit_timeout=inter_digit_timeout, terminators=terminators)

    # -- voicemail -----------------------------------------------------------------------------------------
    def record_message(self, *, max_seconds: float, terminators: str, beep: bool, flow: str,
                       node: str) -> Deferred[RecordedMessage | None]:
        return ensureDeferred(self._record(max_seconds, terminators, beep, flow, node))

    async def _record(self, max_seconds: float, terminators: str, beep: bool, flow: str,
                      node: str) -> RecordedMessage | None:
        media, session = self.service.media, self._session
        if beep:
            await self._play_prompt(_BEEP, False)
        relative = voicemail_path(self.call_id, datetime.now(UTC))
        path = self.service.recordings_root / relative
        media.start_message(session, path)
        started = self.service.clock.seconds()
        try:
            # The terminator key (if the node has one), hanging up or max_seconds ends the message; silence does
            # not (elders pause), nor do other keys.
            await media.collect_digits(session, max_digits=64, timeout=max_seconds, inter_digit_timeout=max_seconds,
                                       terminators=terminators, flush=True)
        finally:
            info = media.stop_message(session) if self.call.active else None
            seconds = info.seconds if info else self.service.clock.seconds() - started
            self.service.store_voicemail(self.call, flow, node, relative, seconds)
        return RecordedMessage(str(relative), seconds)

    # -- leaving the flow ---------------------------------------------------------------------------------
    def enqueue(self, request: QueueRequest) -> Deferred[QueueOutcome]:
        media, session = self.service.media, self._session
        self.call.priority = {"emergency": 0, "urgent": 1}.get(request.priority, 2) * 10 + (9 - request.level)
        queue = getattr(self.service.queues, "queues", {}).get(request.queue)
        music = request.announcements.music if request.announcements is not None else None
        if music is not False and (music or queue is None or queue.music):
            media.music_on_hold(session)
        return self.service.queues.enqueue(self.call_id, self.call.caller_number, request)

    def transfer_number(self, number: str, *, trunk: str | None, ring_timeout: float) -> Deferred[bool]:
        return self.service.transfer(self.call, number, trunk=trunk, ring_timeout=ring_timeout)

    def create_callback(self, *, reason: str, due_in: float, flow: str) -> Deferred[None]:
        return self.service.create_callback(self.call, reason=reason, due_in=due_in, flow=flow)

    def hangup(self, reason: str) -> None:
        log.info("ivr.hangup", call_id=self.call_id, reason=reason)
        self.service.hangup(self.call, EndReason.LOCAL_BYE)


def voicemail_path(call_id: str, when: datetime) -> Path:
    """voicemail/YYYY/MM/DD/HHMMSS-<hash of the call id>.wav (relative to the recordings root): never a
    caller-supplied string in a path."""
    digest = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    day = when.astimezone(UTC)
    return Path("voicemail") / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"{day:%H%M%S}-{digest}.wav"


def load_prompt_file(cache: Any, path: Path) -> Prompt | None:
    try:
        return cache.load(path)  # type: ignore[no-any-return]
    except (OSError, PromptError) as exc:
        log.error("ivr.prompt.file_failed", path=str(path), error=str(exc))
        return None

