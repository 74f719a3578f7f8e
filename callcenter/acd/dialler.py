"""Callbacks (回访): an operator dials a callback task from the desktop.

The operator's desk phone rings first (showing the number to call); when the operator picks up, the elder
is called through a trunk as an ordinary outbound call (it never uses the channels kept for emergencies, and
an emergency that needs the channel ends it). When the elder answers, the two are bridged; the operator is
"talking" for the ACD and no queued call is offered meanwhile.

An operator whose device is the browser softphone needs it connected (else 409, no attempt counted): no desk
phone rings, the elder is called at once, and the softphone is on that call from then on (the desktop's
hang-up ends it, even while the elder's phone rings); when the elder answers the elder's leg is bridged with
the browser's. Ending, bookkeeping and wrap-up are the desk phone's. The operator is reserved with the call id
``callback-<task id>`` (the desktop pops the elder on that) as soon as the attempt is known.

Every attempt is counted on the task. An attempt that does not reach the elder (no answer, busy, failure)
puts the task back to "open" with the next due time from ``retry`` (backoff); after ``attempts`` tries it
stays open, marked for a supervisor. A task ends only when the operator completes or closes it with a
reason (:meth:`CallbackTasks.finish`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from twisted.internet.defer import Deferred

from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.router import Distributor
from callcenter.calls.model import Call, EndReason
from callcenter.calls.outbound import OutboundError

if TYPE_CHECKING:
    from callcenter.calls.ua import UserAgentCore
    from callcenter.media.service import MediaService

log = structlog.get_logger("callcenter.acd")


class DialError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Attempt:
    task_id: int
    number: str
    operator: str
    phone: Call | None = None
    elder: Call | None = None
    reached: bool = False
    done: bool = False
    browser: bool = False  # the operator talks on the browser softphone (no desk phone call)


@dataclass
class CallbackDialler:
    ua: UserAgentCore
    media: MediaService
    acd: Distributor
    tasks: CallbackTasks
    retry: list[float]
    max_attempts: int
    ring_timeout: float = 30.0
    softphones: Any = None  # callcenter.acd.softphone.Softphones: operators whose device is "browser"
    attempts: dict[int, Attempt] = field(default_factory=dict)  # task id → the attempt in progress
    _updates: set[asyncio.Future[None]] = field(default_factory=set, repr=False)  # task rows being written

    async def dial(self, task_id: int, operator_name: str) -> Attempt:
        operator = self.acd.operators.get(operator_name)
        if operator is None:
            raise DialError(404, f"no operator named {operator_name}")
        browser = getattr(operator, "device", "phone") == "browser"
        if browser:
            if not self._softphone_ready(operator_name):
                raise DialError(409, f"operator {operator_name}'s browser softphone is not connected")
        elif operator.phone is None:
            raise DialError(409, f"operator {operator_name} has no desk phone")
        if task_id in self.attempts:
            raise DialError(409, "this task is being dialled")
        task = await self.tasks.start_attempt(task_id, operator_name)
        if task is None:
            if await self.tasks.get(task_id) is None:
                raise DialError(404, f"no callback task {task_id}")
            raise DialError(409, "the task is not open (completed, closed or being dialled)")
        attempt = Attempt(task_id, task.number, operator_name, browser=browser)
        self.attempts[task_id] = attempt  # first: reserving the operator pops the desktop, which looks it up
        try:
            self.acd.begin_outbound(operator_name, f"callback-{task_id}")
        except ValueError as exc:
            del self.attempts[task_id]
            await self.tasks.attempt_failed(task_id, "operator busy", retry=[0.0], counted=False)
            raise DialError(409, str(exc)) from None
        if browser:
            return self._dial_browser(attempt)
        try:
            attempt.phone = self.ua.outbound.call_phone(
                operator.phone, caller_number=task.number, caller_display=f"回访 {task.number}",
                ring_timeout=self.ring_timeout,
                on_answer=lambda phone: self._operator_answered(attempt, phone),
                on_end=lambda phone: self._operator_ended(attempt, phone))
        except OutboundError as exc:
            self._finish(attempt, f"operator phone: {exc}", counted=False)
            raise DialError(409, f"operator phone: {exc}") from None
        log.info("acd.callback.dialling", task_id=task_id, operator=operator_name, number=task.number,
                 call_id=attempt.phone.call_id)
        return attempt

    def _softphone_ready(self, operator: str) -> bool:
        return self.softphones is not None and bool(self.softphones.connected(operator))

    def _dial_browser(self, attempt: Attempt) -> Attempt:
        """The browser operator is reserved: call the elder now, the softphone is on that call."""
        name = attempt.operator
        if not self._softphone_ready(name):  # the page went away while the task was being taken
            self._finish(attempt, "browser softphone not connected", counted=False)
            raise DialError(409, f"operator {name}'s browser softphone is not connected")
        error = self._call_elder(attempt)
        if error is not None:
            raise DialError(409, f"no line: {error}")
        if attempt.done or attempt.elder is None:  # the call failed at once (its end is already counted)
            raise DialError(409, "the call to the elder failed at once")
        self.softphones.start_outbound(name, attempt.elder.call_id, lambda: self._operator_ended(attempt))
        log.info("acd.callback.dialling", task_id=attempt.task_id, operator=name, number=attempt.number,
                 call_id=attempt.elder.call_id, device="browser")
        return attempt

    def _operator_answered(self, attempt: Attempt, phone: Call) -> None:
        if self._call_elder(attempt) is not None:
            self.ua.outbound.hangup(phone, EndReason.LOCAL_BYE)

    def _call_elder(self, attempt: Attempt) -> str | None:
        """Call the elder through a trunk; the reason when no line is free (the attempt is then over, uncounted)."""
        try:
            attempt.elder = self.ua.outbound.originate(
                attempt.number, caller_id="callcenter", emergency=False,
                on_answer=lambda elder: self._elder_answered(attempt, elder),
                on_end=lambda elder: self._elder_ended(attempt, elder))
        except OutboundError as exc:
            log.warning("acd.callback.no_trunk", task_id=attempt.task_id, error=str(exc))
            self._finish(attempt, f"no line: {exc}", counted=False)
            return str(exc)
        log.info("acd.callback.calling_elder", task_id=attempt.task_id, call_id=attempt.elder.call_id,
                 number=attempt.number)
        return None

    def _elder_answered(self, attempt: Attempt, elder: Call) -> None:
        a = elder.caller_leg.media
        if attempt.browser:
            if self.softphones is None or not self.softphones.outbound_answered(attempt.operator, elder.call_id):
                self.ua.outbound.hangup(elder, EndReason.LOCAL_BYE)  # the operator hung up meanwhile
                return
        else:
            phone = attempt.phone
            if phone is None or not phone.active:
                self.ua.outbound.hangup(elder, EndReason.LOCAL_BYE)
                return
            b = phone.caller_leg.media
            if a is not None and b is not None:
                self.media.bridge(a, b)
            else:
                a = None  # not bridged: nothing to record
        if a is not None and getattr(self.ua.outbound, "record_calls", False):
            self.media.start_recording(a)
        attempt.reached = True
        self.acd.outbound_answered(attempt.operator)
        log.info("acd.callback.connected", task_id=attempt.task_id, call_id=elder.call_id,
                 operator=attempt.operator)

    def _elder_ended(self, attempt: Attempt, elder: Call) -> None:
        if not attempt.reached:
            status = elder.sip_status
            why = "busy" if status in (486, 600, 603) else "no answer" if status in (408, 480, 487) else \
                f"failed ({status})" if status else "not reached"
            self._finish(attempt, why, counted=True)
        else:
            self._finish(attempt, "reached", counted=True)
        if attempt.phone is not None and attempt.phone.active:
            self.ua.outbound.hangup(attempt.phone, EndReason.LOCAL_BYE)

    def _operator_ended(self, attempt: Attempt, phone: Call | None = None) -> None:
        """The operator's side ended: the desk phone hung up, or the desktop's hang-up on the softphone."""
        if attempt.elder is None:
            self._finish(attempt, "operator did not answer", counted=False)
            return
        if attempt.elder.active:
            self.ua.outbound.hangup(attempt.elder, EndReason.LOCAL_BYE)  # _elder_ended finishes
        else:
            self._finish(attempt, "reached" if attempt.reached else "not reached", counted=True)

    def _finish(self, attempt: Attempt, outcome: str, *, counted: bool) -> None:
        if attempt.done:
            return
        attempt.done = True
        self.attempts.pop(attempt.task_id, None)
        if attempt.browser and attempt.elder is not None and self.softphones is not None:
            self.softphones.end_outbound(attempt.operator, attempt.elder.call_id)  # before the operator is free
        self.acd.end_outbound(attempt.operator)
        if attempt.reached:
            job = self.tasks.attempt_reached(attempt.task_id)
        else:
            job = self.tasks.attempt_failed(attempt.task_id, outcome, retry=self.retry, counted=counted,
                                            max_attempts=self.max_attempts)
        # the database work runs on asyncio (aiosqlite futures): a Deferred cannot drive it directly
        update = asyncio.ensure_future(job)
        self._updates.add(update)
        update.add_done_callback(self._updates.discard)
        Deferred.fromFuture(update).addErrback(
            lambda failure: log.error("acd.callback.update_failed", task_id=attempt.task_id,
                                      error=str(failure.value)))
        log.info("acd.callback.attempt_ended", task_id=attempt.task_id, outcome=outcome, reached=attempt.reached)

    async def drain(self) -> None:
        """Wait for the task updates of finished attempts (at shutdown, and in tests)."""
        while self._updates:
            await asyncio.gather(*list(self._updates), return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {str(k): {"number": a.number, "operator": a.operator, "reached": a.reached}
                for k, a in self.attempts.items()}
