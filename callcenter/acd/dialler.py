"""Calls an operator places from the desktop: callbacks (回访, a callback task's attempt) and ordinary outbound calls
(外呼: ringing an elder from the profile, the search, the history or a contact; a care call, 主动关爱).

Every placed call walks the same way; only the bookkeeping differs by kind. The operator is reserved in the ACD under
the call's key (``callback-<task id>`` or ``outbound-<random>``: the desktop pops the elder on it) as soon as the call
is known, and is "talking" once the elder answers; no queued call is offered meanwhile.

* Desk phone: the operator's phone rings first (showing the number to call); when the operator picks up, the elder
  is called through a trunk as an ordinary outbound call (never on the channels kept for emergencies, and an
  emergency that needs the channel ends it). When the elder answers, the two are bridged (and recorded).
* Browser softphone (needs it connected, else 409): no desk phone rings, the elder is called at once, and the
  softphone is on that call from then on (the desktop's hang-up ends it, even while the elder's phone rings); when the
  elder answers the elder's leg is bridged with the browser's.

Ending and wrap-up are the desk phone's for both devices; the desktop's hang-up of a call not answered yet cancels it
(:meth:`Dialler.hang_up`).

Callbacks: every attempt is counted on the task. An attempt that does not reach the elder (no answer, busy, failure)
puts the task back to "open" with the next due time from ``retry`` (backoff); after ``attempts`` tries it stays open,
marked for a supervisor. A task ends only when the operator completes or closes it with a reason
(:meth:`CallbackTasks.finish`). An ordinary outbound call has no bookkeeping here: its record is the elder's call
detail record (direction "outbound") and the service record the operator writes for it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from twisted.internet.defer import Deferred

from callcenter.acd.callbacks import CallbackTasks
from callcenter.acd.operators import Operator
from callcenter.acd.router import Distributor
from callcenter.calls.model import Call, EndReason
from callcenter.calls.outbound import OutboundError
from callcenter.calls.trunks import Admission

if TYPE_CHECKING:
    from callcenter.calls.ua import UserAgentCore
    from callcenter.media.service import MediaService

log = structlog.get_logger("callcenter.acd")

KINDS = ("callback", "outbound")
NUMBER = re.compile(r"\+?[0-9]{2,32}")


class DialError(Exception):
    """The call cannot be placed: ``status`` 404/409/422, ``field`` the input at fault (if one is)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass
class Placed:
    """A call an operator places, from the reservation to its end."""

    kind: str  # "callback" | "outbound"
    key: str  # what the operator is reserved with: "callback-<task id>" | "outbound-<random>"
    number: str  # the elder's number (as dialled through the trunk)
    operator: str
    task_id: int | None = None  # a callback's task
    elder_id: int | None = None  # the elder called, when known (the pop, the service record)
    started_at: float = 0.0
    phone: Call | None = None
    elder: Call | None = None
    reached: bool = False
    done: bool = False
    browser: bool = False  # the operator talks on the browser softphone (no desk phone call)

    def ids(self) -> dict[str, Any]:
        """What names it in the log: a callback's task, an outbound call's key."""
        return {"task_id": self.task_id} if self.kind == "callback" else {"key": self.key}


Attempt = Placed  # a callback task's attempt (the name the callback API speaks)


@dataclass
class Dialler:
    ua: UserAgentCore
    media: MediaService
    acd: Distributor
    tasks: CallbackTasks | None
    retry: list[float] = field(default_factory=list)
    max_attempts: int = 0
    ring_timeout: float = 30.0  # the operator's desk phone
    softphones: Any = None  # callcenter.acd.softphone.Softphones: operators whose device is "browser"
    trunk: str | None = None  # the elders' calls go out on this trunk (None: the first outbound trunk)
    placed: dict[str, Placed] = field(default_factory=dict)  # key → the call being placed or talked on
    _updates: set[asyncio.Future[None]] = field(default_factory=set, repr=False)  # task rows being written

    # -- what is going on ---------------------------------------------------------------------------------
    @property
    def attempts(self) -> dict[int, Placed]:
        """The callback attempts in progress, by task id."""
        return {p.task_id: p for p in self.placed.values() if p.task_id is not None}

    def find(self, key: str) -> Placed | None:
        return self.placed.get(key)

    def placed_by(self, operator: str) -> Placed | None:
        """The operator's placed call that is not over."""
        return next((p for p in self.placed.values() if p.operator == operator and not p.done), None)

    def status(self) -> dict[str, Any]:
        return {str(p.task_id) if p.task_id is not None else k: {"number": p.number, "operator": p.operator,
                                                                   "reached": p.reached}
                for k, p in self.placed.items()}

    # -- placing ------------------------------------------------------------------------------------------
    async def dial(self, task_id: int, operator_name: str) -> Placed:
        """Dial a callback task for the operator (an attempt of the task)."""
        operator = self._operator(operator_name)
        browser = self._device(operator)
        key = f"callback-{task_id}"
        if key in self.placed:
            raise DialError(409, "this task is being dialled")
        if self.tasks is None:
            raise DialError(409, "this engine has no callback tasks")
        task = await self.tasks.start_attempt(task_id, operator_name)
        if task is None:
            if await self.tasks.get(task_id) is None:
                raise DialError(404, f"no callback task {task_id}")
            raise DialError(409, "the task is not open (completed, closed or being dialled)")
        placed = Placed("callback", key, task.number, operator_name, task_id=task_id, elder_id=task.elder_id,
                        started_at=self.ua.clock.seconds(), browser=browser)
        self.placed[key] = placed  # first: reserving the operator pops the desktop, which looks it up
        try:
            self.acd.begin_outbound(operator_name, key)
        except ValueError as exc:
            del self.placed[key]
            await self.tasks.attempt_failed(task_id, "operator busy", retry=[0.0], counted=False)
            raise DialError(409, str(exc)) from None
        return self._connect(placed, operator, display=f"回访 {task.number}")

    def call(self, operator_name: str, number: str, *, elder_id: int | None = None) -> Placed:
        """Call ``number`` (a directory key: callcenter.directory.numbers) for the operator: an ordinary outbound
        call, e.g. an elder from the profile or a care call. Refused (409) when the operator is logged out, being
        offered a call or on one, when their softphone is not connected or no trunk line is free."""
        if not isinstance(number, str) or not NUMBER.fullmatch(number):
            raise DialError(422, 'expected 2-32 digits with an optional leading "+"', "number")
        operator = self._operator(operator_name)
        browser = self._device(operator)
        if not browser:
            self._line_free()  # before the desk phone rings for nothing
        key = f"outbound-{secrets.token_hex(6)}"
        placed = Placed("outbound", key, number, operator_name, elder_id=elder_id,
                        started_at=self.ua.clock.seconds(), browser=browser)
        self.placed[key] = placed
        try:
            self.acd.begin_outbound(operator_name, key)
        except ValueError as exc:
            del self.placed[key]
            raise DialError(409, str(exc)) from None
        return self._connect(placed, operator, display=f"外呼 {number}")

    def hang_up(self, operator: str) -> bool:
        """The desktop's hang-up of the operator's placed call before it is a conversation on the desk phone (the
        phone rings, or the elder does): cancel it. False when the operator places no call."""
        placed = self.placed_by(operator)
        if placed is None:
            return False
        log.info(f"acd.{placed.kind}.cancelled", operator=operator, call_id=placed.key, **placed.ids())
        if placed.browser and self.softphones is not None and self.softphones.hangup(operator):
            return True
        if placed.phone is not None and placed.phone.active:
            self.ua.outbound.hangup(placed.phone, EndReason.LOCAL_BYE)  # as if the handset was put down
        elif placed.elder is not None and placed.elder.active:
            self.ua.outbound.hangup(placed.elder, EndReason.LOCAL_BYE)
        else:
            self._finish(placed, "cancelled", counted=False)
        return True

    def _operator(self, name: str) -> Operator:
        operator = self.acd.operators.get(name)
        if operator is None:
            raise DialError(404, f"no operator named {name}", "operator")
        return operator

    def _device(self, operator: Operator) -> bool:
        """True for the browser softphone (connected), False for a desk phone; else 409."""
        if getattr(operator, "device", "phone") == "browser":
            if not self._softphone_ready(operator.name):
                raise DialError(409, f"operator {operator.name}'s browser softphone is not connected")
            return True
        if operator.phone is None:
            raise DialError(409, f"operator {operator.name} has no desk phone")
        return False

    def _softphone_ready(self, operator: str) -> bool:
        return self.softphones is not None and bool(self.softphones.connected(operator))

    def _line_free(self) -> None:
        trunks = getattr(self.ua, "trunks", None)
        if trunks is None:
            return
        trunk = trunks.for_outbound(self.trunk)
        if trunk is None:
            raise DialError(409, "no line: no outbound trunk")
        if trunk.admit(emergency=False) is not Admission.ACCEPT:
            raise DialError(409, f"no line: trunk {trunk.name} has no free non-emergency channel")

    def _connect(self, placed: Placed, operator: Operator, *, display: str) -> Placed:
        """The operator is reserved: ring their desk phone, or call the elder now for the browser softphone."""
        if placed.browser:
            return self._dial_browser(placed)
        assert operator.phone is not None
        try:
            placed.phone = self.ua.outbound.call_phone(
                operator.phone, caller_number=placed.number, caller_display=display, ring_timeout=self.ring_timeout,
                on_answer=lambda phone: self._operator_answered(placed, phone),
                on_end=lambda phone: self._operator_ended(placed, phone))
        except OutboundError as exc:
            self._finish(placed, f"operator phone: {exc}", counted=False)
            raise DialError(409, f"operator phone: {exc}") from None
        log.info(f"acd.{placed.kind}.dialling", operator=placed.operator, number=placed.number,
                 call_id=placed.phone.call_id, **placed.ids())
        return placed

    def _dial_browser(self, placed: Placed) -> Placed:
        """The browser operator is reserved: call the elder now, the softphone is on that call."""
        name = placed.operator
        if not self._softphone_ready(name):  # the page went away while the task was being taken
            self._finish(placed, "browser softphone not connected", counted=False)
            raise DialError(409, f"operator {name}'s browser softphone is not connected")
        error = self._call_elder(placed)
        if error is not None:
            raise DialError(409, f"no line: {error}")
        if placed.done or placed.elder is None:  # the call failed at once (its end is already counted)
            raise DialError(409, "the call to the elder failed at once")
        self.softphones.start_outbound(name, placed.elder.call_id, lambda: self._operator_ended(placed),
                                       kind=placed.kind)
        log.info(f"acd.{placed.kind}.dialling", operator=name, number=placed.number, call_id=placed.elder.call_id,
                 device="browser", **placed.ids())
        return placed

    # -- the two legs ---------------------------------------------------------------------------------------
    def _operator_answered(self, placed: Placed, phone: Call) -> None:
        if self._call_elder(placed) is not None:
            self.ua.outbound.hangup(phone, EndReason.LOCAL_BYE)

    def _call_elder(self, placed: Placed) -> str | None:
        """Call the elder through a trunk; the reason when no line is free (the call is then over, uncounted)."""
        try:
            placed.elder = self.ua.outbound.originate(
                placed.number, trunk_name=self.trunk, caller_id="callcenter", emergency=False,
                on_answer=lambda elder: self._elder_answered(placed, elder),
                on_end=lambda elder: self._elder_ended(placed, elder))
        except OutboundError as exc:
            log.warning(f"acd.{placed.kind}.no_trunk", error=str(exc), call_id=placed.key, **placed.ids())
            self._finish(placed, f"no line: {exc}", counted=False)
            return str(exc)
        if placed.elder_id is not None:
            placed.elder.elder_id = placed.elder_id  # the pop and the service record know whom it is about
        log.info(f"acd.{placed.kind}.calling_elder", call_id=placed.elder.call_id, number=placed.number,
                 **placed.ids())
        return None

    def _elder_answered(self, placed: Placed, elder: Call) -> None:
        a = elder.caller_leg.media
        if placed.browser:
            if self.softphones is None or not self.softphones.outbound_answered(placed.operator, elder.call_id):
                self.ua.outbound.hangup(elder, EndReason.LOCAL_BYE)  # the operator hung up meanwhile
                return
        else:
            phone = placed.phone
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
        placed.reached = True
        self.acd.outbound_answered(placed.operator)
        log.info(f"acd.{placed.kind}.connected", call_id=elder.call_id, operator=placed.operator, **placed.ids())

    def _elder_ended(self, placed: Placed, elder: Call) -> None:
        if not placed.reached:
            status = elder.sip_status
            why = "busy" if status in (486, 600, 603) else "no answer" if status in (408, 480, 487) else \
                f"failed ({status})" if status else "not reached"
            self._finish(placed, why, counted=True)
        else:
            self._finish(placed, "reached", counted=True)
        if placed.phone is not None and placed.phone.active:
            self.ua.outbound.hangup(placed.phone, EndReason.LOCAL_BYE)

    def _operator_ended(self, placed: Placed, phone: Call | None = None) -> None:
        """The operator's side ended: the desk phone hung up, or the desktop's hang-up on the softphone."""
        if placed.elder is None:
            self._finish(placed, "operator did not answer", counted=False)
            return
        if placed.elder.active:
            self.ua.outbound.hangup(placed.elder, EndReason.LOCAL_BYE)  # _elder_ended finishes
        else:
            self._finish(placed, "reached" if placed.reached else "not reached", counted=True)

    # -- the end ------------------------------------------------------------------------------------------------
    def _finish(self, placed: Placed, outcome: str, *, counted: bool) -> None:
        if placed.done:
            return
        placed.done = True
        self.placed.pop(placed.key, None)
        if placed.browser and placed.elder is not None and self.softphones is not None:
            self.softphones.end_outbound(placed.operator, placed.elder.call_id)  # before the operator is free
        self.acd.end_outbound(placed.operator)
        call_id = placed.elder.call_id if placed.elder is not None else placed.key
        if placed.task_id is None:
            log.info("acd.outbound.ended", key=placed.key, call_id=call_id, operator=placed.operator,
                     outcome=outcome, reached=placed.reached)
            return
        self._update_task(placed, outcome, counted=counted)
        log.info("acd.callback.attempt_ended", task_id=placed.task_id, call_id=call_id, outcome=outcome,
                 reached=placed.reached)

    def _update_task(self, placed: Placed, outcome: str, *, counted: bool) -> None:
        assert self.tasks is not None and placed.task_id is not None
        task_id = placed.task_id
        if placed.reached:
            job = self.tasks.attempt_reached(task_id)
        else:
            job = self.tasks.attempt_failed(task_id, outcome, retry=self.retry, counted=counted,
                                            max_attempts=self.max_attempts)
        # the database work runs on asyncio (aiosqlite futures): a Deferred cannot drive it directly
        update = asyncio.ensure_future(job)
        self._updates.add(update)
        update.add_done_callback(self._updates.discard)
        Deferred.fromFuture(update).addErrback(
            lambda failure: log.error("acd.callback.update_failed", task_id=task_id, call_id=placed.key,
                                      error=str(failure.value)))

    async def drain(self) -> None:
        """Wait for the task updates of finished attempts (at shutdown, and in tests)."""
        while self._updates:
            await asyncio.gather(*list(self._updates), return_exceptions=True)


CallbackDialler = Dialler  # the name the engine and the callback tests know
