"""The flow runner: walks one call through the nodes of a flow version, pinned when the call started.

The runner is pure call logic. It talks to the call only through :class:`FlowCall` (answer, play, collect,
record, queue, transfer, callback, hang up), implemented over SIP and RTP by :mod:`callcenter.ivr.session`,
by the simulator (``callcenter flows simulate``) and by test fakes. Time comes from an injected clock; the
wall-clock time of day (for hours nodes and greetings) from an injected ``now``. A caller who hangs up
cancels the runner's Deferred, which cancels whatever it was waiting for.

Every node visited is a :class:`Step` (flow, version, node, type, what happened): the IVR path shown on the
operator's screen pop and kept with the call.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from markupsafe import Markup
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from callcenter.ivr import document as d
from callcenter.ivr.context import FlowContext, TemplateError, evaluate, render
from callcenter.media.service import DigitResult

log = structlog.get_logger("callcenter.ivr")

WAITING_NODES = (d.AnswerNode, d.PlayNode, d.SayNode, d.MenuNode, d.CollectNode, d.RecordNode, d.CallbackNode,
                 d.QueueNode, d.TransferNode)


@dataclass(frozen=True)
class CompiledFlow:
    """One published, validated version of a flow, ready to run."""

    name: str
    version: int
    document: d.FlowDocument
    flows_dir: Path

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


FlowSet = Mapping[str, CompiledFlow]  # the live versions when the call started (subflows are pinned too)


@dataclass(frozen=True)
class Utterance:
    """Something to say: a text for the TTS voice, or a recorded file (absolute path)."""

    text: str | None
    file: Path | None
    language: str
    rate: int

    def describe(self) -> str:
        return self.text if self.text is not None else f"[{self.file.name if self.file else '?'}]"


@dataclass(frozen=True)
class QueueRequest:
    queue: str
    priority: str  # emergency | urgent | normal
    level: int
    skills: Mapping[str, str]
    max_wait: float | None
    announcements: d.Announcements | None
    flow: str
    node: str
    language: str = "cmn"  # the caller's (for what the queue says to them)
    periodic: Utterance | None = None  # the node's announcements.prompt, rendered for this caller


@dataclass(frozen=True)
class QueueOutcome:
    result: str  # "answered" | "timeout" | "refused"
    detail: str = ""


@dataclass(frozen=True)
class RecordedMessage:
    path: str  # relative to the recordings root
    seconds: float


class FlowCall(Protocol):
    """What a flow can do with its call."""

    call_id: str

    @property
    def answered(self) -> bool: ...

    def ring(self) -> None: ...

    def answer(self) -> Deferred[None]: ...

    def play(self, utterance: Utterance, *, barge_in: bool) -> Deferred[None]: ...

    def collect(self, *, max_digits: int, timeout: float, inter_digit_timeout: float,
                terminators: str) -> Deferred[DigitResult]: ...

    def record_message(self, *, max_seconds: float, terminators: str, beep: bool,
                       flow: str, node: str) -> Deferred[RecordedMessage | None]: ...

    def enqueue(self, request: QueueRequest) -> Deferred[QueueOutcome]: ...

    def transfer_number(self, number: str, *, trunk: str | None, ring_timeout: float) -> Deferred[bool]: ...

    def create_callback(self, *, reason: str, due_in: float, flow: str) -> Deferred[None]: ...

    def hangup(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Step:
    flow: str
    version: int
    node: str
    type: str
    detail: str = ""
    at: float = 0.0  # clock seconds

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "version": self.version, "node": self.node, "type": self.type,
                "detail": self.detail, "at": round(self.at, 3)}


@dataclass
class FlowResult:
    outcome: str  # queued | transferred | hangup | caller_hangup | error
    detail: str = ""
    steps: list[Step] = field(default_factory=list)


class FlowRuntimeError(Exception):
    pass


class _Exit(Exception):
    def __init__(self, outcome: str, detail: str = "") -> None:
        super().__init__(outcome)
        self.outcome, self.detail = outcome, detail


@dataclass
class _Frame:
    flow: CompiledFlow
    return_to: str | None  # the node of the calling flow to continue at (None: the main flow)


class FlowRunner:
    """Runs one call through a flow. ``run()`` returns a Deferred[FlowResult]; cancel it when the caller
    hangs up (the result is then ``caller_hangup``)."""

    def __init__(self, call: FlowCall, flows: FlowSet, start_flow: str, context: FlowContext, *,
                 clock: IReactorTime, max_steps: int = 200,
                 on_step: Callable[[Step], None] | None = None) -> None:
        if start_flow not in flows:
            raise FlowRuntimeError(f"no live flow named {start_flow!r}")
        self.call = call
        self.flows = flows
        self.context = context
        self.clock = clock
        self.max_steps = max_steps
        self.on_step = on_step
        self.steps: list[Step] = []
        self.stack: list[_Frame] = [_Frame(flows[start_flow], None)]
        self._deferred: Deferred[FlowResult] | None = None

    # -- running -----------------------------------------------------------------------------------------
    def run(self) -> Deferred[FlowResult]:
        self._deferred = ensureDeferred(self._run())
        return self._deferred

    def cancel(self) -> None:
        if self._deferred is not None and not self._deferred.called:
            self._deferred.cancel()

    async def _run(self) -> FlowResult:
        flow = self.stack[-1].flow
        node_name = flow.document.start
        unwaited = 0
        try:
            while True:
                flow = self.stack[-1].flow
                node = flow.document.nodes[node_name]
                if isinstance(node, WAITING_NODES):
                    unwaited = 0
                else:
                    unwaited += 1
                    if unwaited > self.max_steps:
                        raise FlowRuntimeError(f"{self.max_steps} nodes in a row without waiting for the "
                                               f"caller (a loop?) at {flow.label} node {node_name!r}")
                node_name = await self._visit(flow, node_name, node)
        except _Exit as stop:
            return FlowResult(stop.outcome, stop.detail, self.steps)
        except CancelledError:
            log.info("ivr.flow.caller_hangup", call_id=self.call.call_id, flow=flow.label,
                     node=self.steps[-1].node if self.steps else None)
            return FlowResult("caller_hangup", "", self.steps)
        except Exception as exc:  # a bug or a runtime failure: never leave the call silent
            log.error("ivr.flow.error", call_id=self.call.call_id, flow=flow.label, error=str(exc),
                      exc_info=not isinstance(exc, FlowRuntimeError))
            return FlowResult("error", str(exc), self.steps)

    def _step(self, flow: CompiledFlow, name: str, node: d._Node, detail: str = "") -> None:
        step = Step(flow.name, flow.version, name, node.type, detail, self.clock.seconds())  # type: ignore[attr-defined]
        self.steps.append(step)
        log.info("ivr.node", call_id=self.call.call_id, flow=flow.label, node=name, type=step.type, detail=detail)
        if self.on_step is not None:
            self.on_step(step)

    async def _visit(self, flow: CompiledFlow, name: str, node: Any) -> str:
        handler = getattr(self, f"_node_{node.type}")
        return await handler(flow, name, node)  # type: ignore[no-any-return]

    # -- helpers -------------------------------------------------------------------------------------------
    def _text(self, template: str) -> str:
        return html.unescape(str(render(template, self.context)))

    def _utterance(self, flow: CompiledFlow, spec: d.SayPrompt | d.PlayPrompt) -> Utterance | None:
        rate = flow.document.voice.rate
        if isinstance(spec, d.PlayPrompt):
            return Utterance(None, flow.flows_dir / spec.play, self.context.language, rate)
        texts = spec.texts(flow.document.language)
        language = spec.language or (self.context.language if self.context.language in texts else None) \
            or (flow.document.language if flow.document.language in texts else next(iter(texts)))
        try:
            text = self._text(texts[language])
        except TemplateError as exc:
            log.error("ivr.prompt.template_failed", call_id=self.call.call_id, flow=flow.label, error=str(exc))
            return None
        return Utterance(text, None, language, spec.rate or rate)

    async def _say(self, flow: CompiledFlow, spec: d.SayPrompt | d.PlayPrompt | None, *, barge_in: bool) -> str:
        if spec is None:
            return ""
        utterance = self._utterance(flow, spec)
        if utterance is None:
            return ""
        await self._ensure_answered(flow)
        await self.call.play(utterance, barge_in=barge_in)
        return utterance.describe()

    async def _ensure_answered(self, flow: CompiledFlow) -> None:
        if not self.call.answered:
            log.info("ivr.auto_answer", call_id=self.call.call_id, flow=flow.label)
            await self.call.answer()

    async def _digits(self, *, max_digits: int, timeout: float, inter_digit_timeout: float,
                      terminators: str) -> DigitResult:
        return await self.call.collect(max_digits=max_digits, timeout=timeout,
                                       inter_digit_timeout=inter_digit_timeout, terminators=terminators)

    # -- nodes ----------------------------------------------------------------------------------------------
    async def _node_answer(self, flow: CompiledFlow, name: str, node: d.AnswerNode) -> str:
        self._step(flow, name, node)
        if not self.call.answered:
            if node.ring > 0:
                self.call.ring()
                await deferLater(self.clock, node.ring, lambda: None)
            await self.call.answer()
        return node.next

    async def _node_play(self, flow: CompiledFlow, name: str, node: d.PlayNode) -> str:
        self._step(flow, name, node, node.file)
        await self._say(flow, d.PlayPrompt(play=node.file), barge_in=node.barge_in)
        return node.next

    async def _node_say(self, flow: CompiledFlow, name: str, node: d.SayNode) -> str:
        spec = d.SayPrompt(say=node.text, language=node.language, rate=node.rate)
        utterance = self._utterance(flow, spec)
        self._step(flow, name, node, utterance.describe() if utterance else "(template failed)")
        if utterance is not None:
            await self._ensure_answered(flow)
            await self.call.play(utterance, barge_in=node.barge_in)
        return node.next

    async def _node_menu(self, flow: CompiledFlow, name: str, node: d.MenuNode) -> str:
        self._step(flow, name, node)
        longest = max(len(option) for option in node.options)
        attempt = 0
        while True:
            await self._say(flow, node.prompt, barge_in=True)
            digits, reason = "", "timeout"
            while True:
                result = await self._digits(max_digits=1, timeout=node.timeout if not digits else
                                            node.inter_digit_timeout, inter_digit_timeout=node.inter_digit_timeout,
                                            terminators="")
                if result.reason == "hangup":
                    raise CancelledError()
                if not result.digits:
                    reason = "timeout" if not digits else ("choice" if digits in node.options else "invalid")
                    break
                digits += result.digits
                longer = any(opt.startswith(digits) and opt != digits for opt in node.options)
                if digits in node.options and not longer:
                    reason = "choice"
                    break
                if not longer or len(digits) >= longest:
                    reason = "invalid"
                    break
            if reason == "choice":
                self.context.last_digits = digits
                self._step(flow, name, node, f"pressed {digits}")
                return node.options[digits]
            attempt += 1
            self._step(flow, name, node, f"{reason} {digits}".strip())
            if attempt > node.retries:
                return node.fallback
            await self._say(flow, node.invalid_prompt if reason == "invalid" else node.timeout_prompt,
                            barge_in=True)

    async def _node_collect(self, flow: CompiledFlow, name: str, node: d.CollectNode) -> str:
        self._step(flow, name, node)
        for attempt in range(node.retries + 1):
            await self._say(flow, node.prompt, barge_in=True)
            result = await self._digits(max_digits=node.max_digits, timeout=node.timeout,
                                        inter_digit_timeout=node.inter_digit_timeout, terminators=node.terminator)
            if result.reason == "hangup":
                raise CancelledError()
            if len(result.digits) >= node.min_digits:
                self.context.variables[node.variable] = result.digits
                self._step(flow, name, node, f"{node.variable}={result.digits}")
                return node.next
            self._step(flow, name, node, f"too short: {result.digits!r}" if result.digits else "no input")
            if attempt < node.retries:
                await self._say(flow, node.invalid_prompt, barge_in=True)
        self.context.variables[node.variable] = ""
        return node.no_input or node.next

    async def _node_switch(self, flow: CompiledFlow, name: str, node: d.SwitchNode) -> str:
        for index, case in enumerate(node.cases):
            try:
                matched = evaluate(case.when, self.context)
            except TemplateError as exc:
                log.error("ivr.switch.condition_failed", call_id=self.call.call_id, flow=flow.label, node=name,
                          case=index, error=str(exc))
                matched = False
            if matched:
                self._step(flow, name, node, f"when {case.when}")
                return case.next
        self._step(flow, name, node, "default")
        return node.default

    async def _node_hours(self, flow: CompiledFlow, name: str, node: d.HoursNode) -> str:
        state = hours_state(node, self.context.now)
        self._step(flow, name, node, state)
        if state == "holiday":
            return node.holiday or node.closed
        return node.open if state == "open" else node.closed

    async def _node_set(self, flow: CompiledFlow, name: str, node: d.SetNode) -> str:
        for key, value in node.variables.items():
            if isinstance(value, str):
                try:
                    value = Markup(render(value, self.context))
                except TemplateError as exc:
                    log.error("ivr.set.template_failed", call_id=self.call.call_id, flow=flow.label, node=name,
                              variable=key, error=str(exc))
                    value = ""
            self.context.variables[key] = value
        self._step(flow, name, node, ", ".join(node.variables))
        return node.next

    def _queue_request(self, flow: CompiledFlow, name: str, queue: str, priority: str, level: int,
                       skills: Mapping[str, str], max_wait: float | None,
                       announcements: d.Announcements | None) -> QueueRequest:
        rendered = {}
        for skill, template in skills.items():
            try:
                rendered[skill] = self._text(template)
            except TemplateError as exc:
                log.error("ivr.queue.skill_failed", call_id=self.call.call_id, skill=skill, error=str(exc))
        periodic = None
        if announcements is not None and announcements.prompt is not None:
            periodic = self._utterance(flow, announcements.prompt)
        return QueueRequest(queue, priority, level, rendered, max_wait, announcements, flow.name, name,
                            self.context.language, periodic)

    async def _node_queue(self, flow: CompiledFlow, name: str, node: d.QueueNode) -> str:
        self._step(flow, name, node, f"{node.queue} ({node.priority})")
        await self._ensure_answered(flow)
        request = self._queue_request(flow, name, node.queue, node.priority, node.level, node.skills,
                                      node.max_wait, node.announcements)
        outcome = await self.call.enqueue(request)
        if outcome.result in ("timeout", "refused") and node.on_timeout:
            self._step(flow, name, node, "max wait reached" if outcome.result == "timeout" else outcome.detail)
            return node.on_timeout
        _check_queued(node.queue, outcome)
        if outcome.result == "timeout":  # max_wait with nowhere to go: end the call rather than leave it in limbo
            self._step(flow, name, node, "max wait reached, no on_timeout")
            self.call.hangup("queue max wait")
            raise _Exit("hangup", f"{node.queue}: max wait")
        raise _Exit("queued", f"{node.queue}: {outcome.result}")

    async def _node_transfer(self, flow: CompiledFlow, name: str, node: d.TransferNode) -> str:
        if node.flow is not None:
            target = self.flows.get(node.flow)
            if target is None:
                raise FlowRuntimeError(f"transfer to flow {node.flow!r}: no such live flow")
            self._step(flow, name, node, f"flow {target.label}")
            self.stack[-1] = _Frame(target, self.stack[-1].return_to)
            return target.document.start
        if node.queue is not None:
            self._step(flow, name, node, f"queue {node.queue}")
            await self._ensure_answered(flow)
            outcome = await self.call.enqueue(self._queue_request(flow, name, node.queue, node.priority, 5, {},
                                                                  None, None))
            _check_queued(node.queue, outcome)
            raise _Exit("queued", f"{node.queue}: {outcome.result}")
        assert node.number is not None
        try:
            number = re.sub(r"[\s\-()]", "", self._text(node.number))
        except TemplateError as exc:
            number, why = "", str(exc)
        else:
            why = "empty number" if not number else ""
        if number and not re.fullmatch(r"\+?[0-9]{2,20}", number):
            number, why = "", f"not a phone number: {number[:30]!r}"
        if not number:
            self._step(flow, name, node, f"no number ({why})")
            if node.on_failure:
                return node.on_failure
            raise _Exit("hangup", f"transfer failed: {why}")
        self._step(flow, name, node, f"number {number}")
        await self._ensure_answered(flow)
        connected = await self.call.transfer_number(number, trunk=node.trunk, ring_timeout=node.ring_timeout)
        if connected:
            raise _Exit("transferred", number)
        self._step(flow, name, node, "not answered")
        if node.on_failure:
            return node.on_failure
        raise _Exit("hangup", f"transfer to {number} failed")

    async def _node_record(self, flow: CompiledFlow, name: str, node: d.RecordNode) -> str:
        self._step(flow, name, node)
        await self._say(flow, node.prompt, barge_in=False)
        await self._ensure_answered(flow)
        message = await self.call.record_message(max_seconds=node.max_seconds, terminators=node.terminator,
                                                 beep=node.beep, flow=flow.name, node=name)
        seconds = message.seconds if message else 0.0
        self.context.variables["message_seconds"] = round(seconds, 1)
        self._step(flow, name, node, f"recorded {seconds:.1f} s" if message else "nothing recorded")
        return node.next

    async def _node_callback(self, flow: CompiledFlow, name: str, node: d.CallbackNode) -> str:
        self._step(flow, name, node)
        await self._say(flow, node.prompt, barge_in=True)
        result = await self._digits(max_digits=1, timeout=node.timeout, inter_digit_timeout=node.timeout,
                                    terminators="")
        if result.reason == "hangup":
            raise CancelledError()
        if result.digits != node.accept:
            self._step(flow, name, node, f"declined ({result.digits or 'no key'})")
            return node.declined
        await self.call.create_callback(reason=node.reason, due_in=node.due_in, flow=flow.name)
        self._step(flow, name, node, "callback task created")
        await self._say(flow, node.confirm_prompt, barge_in=False)
        return node.next

    async def _node_subflow(self, flow: CompiledFlow, name: str, node: d.SubflowNode) -> str:
        target = self.flows.get(node.flow)
        if target is None:
            raise FlowRuntimeError(f"subflow {node.flow!r}: no such live flow")
        if len(self.stack) >= 8:
            raise FlowRuntimeError(f"subflows nested more than 8 deep at {flow.label} node {name!r}")
        self._step(flow, name, node, target.label)
        self.stack.append(_Frame(target, node.next))
        return target.document.start

    async def _node_return(self, flow: CompiledFlow, name: str, node: d.ReturnNode) -> str:
        self._step(flow, name, node)
        frame = self.stack.pop() if len(self.stack) > 1 else None
        if frame is None or frame.return_to is None:
            self.call.hangup("return from the main flow")
            raise _Exit("hangup", "return from the main flow")
        return frame.return_to

    async def _node_hangup(self, flow: CompiledFlow, name: str, node: d.HangupNode) -> str:
        self._step(flow, name, node, node.reason or "")
        self.call.hangup(node.reason or "flow ended")
        raise _Exit("hangup", node.reason or "")


def _check_queued(queue: str, outcome: QueueOutcome) -> None:
    """A queue that refused the call (it no longer exists) must not leave the caller with music for ever."""
    if outcome.result == "refused":
        raise FlowRuntimeError(f"queue {queue!r} refused the call: {outcome.detail}")


def hours_state(node: d.HoursNode, now: dt.datetime) -> str:
    """"open", "closed" or "holiday" at ``now`` (aware) in the node's time zone."""
    local = now.astimezone(ZoneInfo(node.timezone)) if now.tzinfo else now
    today = local.date()
    if today in node.holidays:
        return "holiday"
    weekday = 0 if today in node.workdays else local.weekday()
    minute = local.hour * 60 + local.minute
    return "open" if any(start <= minute < end for start, end in node.ranges_for(weekday)) else "closed"
