"""A dry run of a flow without SIP or audio: ``callcenter flows simulate`` and the runner's unit tests.

:class:`ScriptedCall` is a :class:`~callcenter.ivr.runner.FlowCall` whose caller presses scripted keys: each
entry of ``digits`` is what the caller types after one prompt ("1", "12#", "" for nothing). A prompt
starts a new entry, so keys never leak from one question to the next. Prompts take the time they would
take spoken (about 4.5 characters a second, files by their length) on a :class:`twisted.internet.task.Clock`,
so timeouts, rings and hours behave as on a real call, in microseconds.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from callcenter.ivr.context import CallerProfile, CallFacts, FlowContext
from callcenter.ivr.runner import (
    FlowResult,
    FlowRunner,
    FlowSet,
    QueueOutcome,
    QueueRequest,
    RecordedMessage,
    Step,
    Utterance,
)
from callcenter.media.service import DigitResult

CHARS_PER_SECOND = 4.5


def spoken_seconds(utterance: Utterance) -> float:
    if utterance.file is not None:
        try:
            from callcenter.media.prompts import read_wav

            pcm, rate = read_wav(utterance.file)
            return len(pcm) / rate
        except (OSError, ValueError):
            return 1.0
    return max(0.3, len(utterance.text or "") / CHARS_PER_SECOND) * 150 / max(utterance.rate, 1)


@dataclass
class Event:
    at: float
    kind: str  # answer | ring | say | play | keys | timeout | queue | transfer | record | callback | hangup
    text: str


@dataclass
class ScriptedCall:
    clock: Clock
    digits: Sequence[str] = ()
    call_id: str = "simulated-call"
    transfer_answers: bool = True
    queue_result: str = "answered"
    events: list[Event] = field(default_factory=list)
    queued: list[QueueRequest] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    _answered: bool = False
    _script: deque[str] = field(default_factory=deque)
    _current: str | None = None
    hung_up: str | None = None

    def __post_init__(self) -> None:
        self._script = deque(self.digits)

    def _note(self, kind: str, text: str) -> None:
        self.events.append(Event(self.clock.seconds(), kind, text))

    @property
    def answered(self) -> bool:
        return self._answered

    def ring(self) -> None:
        self._note("ring", "")

    def answer(self) -> Deferred[None]:
        self._answered = True
        self._note("answer", "")
        return succeed(None)

    def play(self, utterance: Utterance, *, barge_in: bool) -> Deferred[None]:
        self._current = None  # a new question: the next keys are the next script entry
        self._note("play" if utterance.file else "say", utterance.describe())
        seconds = spoken_seconds(utterance)
        if barge_in and self._script and self._script[0]:
            seconds = 0.5  # the caller knows the menu and presses at once
        return self._later(seconds, None)

    def _later(self, seconds: float, value: Any) -> Deferred[Any]:
        """A Deferred firing after ``seconds``; cancelling it (the caller hung up) cancels the timer."""
        timer = self.clock.callLater(seconds, lambda: done.callback(value))
        done: Deferred[Any] = Deferred(lambda _: timer.cancel() if timer.active() else None)
        return done

    def collect(self, *, max_digits: int, timeout: float, inter_digit_timeout: float,
                terminators: str) -> Deferred[DigitResult]:
        if self._current is None:
            self._current = self._script.popleft() if self._script else ""
        typed = ""
        while self._current and len(typed) < max_digits:
            key, self._current = self._current[0], self._current[1:]
            if key in terminators:
                self._note("keys", typed + key)
                return succeed(DigitResult(typed, "terminator", key))
            typed += key
        if typed:
            self._note("keys", typed)
            reason = "max_digits" if len(typed) >= max_digits else "timeout"
            delay = 0.2 if reason == "max_digits" else inter_digit_timeout
        else:
            reason, delay = "timeout", timeout
            self._note("timeout", f"{timeout:g} s without a key")
        return self._later(delay, DigitResult(typed, reason))

    def record_message(self, *, max_seconds: float, terminators: str, beep: bool, flow: str,
                       node: str) -> Deferred[RecordedMessage | None]:
        self._current = None
        seconds = min(10.0, max_seconds)
        self._note("record", f"the caller speaks for {seconds:g} s")
        return self._later(seconds, RecordedMessage("(simulated)", seconds))

    def enqueue(self, request: QueueRequest) -> Deferred[QueueOutcome]:
        self.queued.append(request)
        skills = ", ".join(f"{k}={v}" for k, v in request.skills.items())
        self._note("queue", f"{request.queue} priority={request.priority} level={request.level}"
                            + (f" skills: {skills}" if skills else ""))
        return succeed(QueueOutcome(self.queue_result))

    def transfer_number(self, number: str, *, trunk: str | None, ring_timeout: float) -> Deferred[bool]:
        self._note("transfer", f"{number}" + (f" via {trunk}" if trunk else "")
                               + ("" if self.transfer_answers else " (no answer)"))
        return succeed(self.transfer_answers)

    def create_callback(self, *, reason: str, due_in: float, flow: str) -> Deferred[None]:
        self.callbacks.append({"reason": reason, "due_in": due_in, "flow": flow})
        self._note("callback", reason)
        return succeed(None)

    def hangup(self, reason: str) -> None:
        self.hung_up = reason
        self._note("hangup", reason)


@dataclass
class Simulation:
    result: FlowResult
    call: ScriptedCall
    steps: list[Step]
    seconds: float


def simulate(flows: FlowSet, flow: str, *, caller: CallerProfile, facts: CallFacts, at: dt.datetime,
             digits: Sequence[str] = (), transfer_answers: bool = True, queue_result: str = "answered",
             max_steps: int = 200, time_limit: float = 3600.0) -> Simulation:
    """Run ``flow`` to its end on a simulated clock."""
    clock = Clock()
    call = ScriptedCall(clock, digits, transfer_answers=transfer_answers, queue_result=queue_result)
    start = clock.seconds()
    language = caller.language if caller.language in ("cmn", "yue") else flows[flow].document.language
    context = FlowContext(caller, facts, at, language or "cmn")
    def on_step(step: Step) -> None:
        call.events.append(Event(step.at, "node", f"{step.flow} v{step.version} · {step.node} ({step.type})"
                                 + (f": {step.detail}" if step.detail else "")))

    runner = FlowRunner(call, flows, flow, context, clock=clock, max_steps=max_steps, on_step=on_step)
    outcome: list[FlowResult] = []
    runner.run().addCallback(outcome.append)
    while not outcome and clock.getDelayedCalls() and clock.seconds() - start < time_limit:
        nxt = min(c.getTime() for c in clock.getDelayedCalls())
        clock.advance(max(0.0, nxt - clock.seconds()))
        context.now = at + dt.timedelta(seconds=clock.seconds() - start)
    if not outcome:
        runner.cancel()
        result = outcome[0] if outcome else FlowResult("error", "the flow did not finish", runner.steps)
        result.outcome, result.detail = "error", f"the flow did not finish within {time_limit:g} s"
    else:
        result = outcome[0]
    return Simulation(result, call, result.steps, clock.seconds() - start)


def report(sim: Simulation) -> str:
    """The simulation as a supervisor reads it."""
    lines = [f"{e.at:7.1f}s → {e.text}" if e.kind == "node" else f"{e.at:7.1f}s     {e.kind:<8} {e.text}"
             for e in sim.call.events]
    lines.append(f"result: {sim.result.outcome}" + (f" ({sim.result.detail})" if sim.result.detail else "")
                 + f" after {sim.seconds:.1f} s")
    return "\n".join(lines)
