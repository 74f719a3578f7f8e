"""The IVR room in the running engine: live flow versions, publishing, hot reload, and running calls.

- **Live flows.** ``flows`` maps each flow name to its live :class:`CompiledFlow`. A call pins the whole
  mapping when it starts (subflows included), so publishing never changes a call in progress.
- **Publishing.** :meth:`publish` lints the text against the configuration (queues, trunks, other flows,
  prompt files), renders every fixed text with the TTS voice on a worker thread (no caller ever waits
  for TTS), stores an immutable version in the database and swaps the live mapping. A flow that fails is
  refused with every problem in Chinese and English and the live version keeps serving.
- **Hot reload.** ivr_flows/ is watched; a changed file is published (author ``file:<name>``). At start,
  a file is published only if it differs from what was last published from that file (a rollback made
  with ``callcenter flows rollback`` survives a restart); the database's live pointers are polled so a
  publish or rollback from the command line reaches a running engine within seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.task import LoopingCall

from callcenter.calls.model import Call, CallState, EndReason
from callcenter.calls.outbound import OutboundError
from callcenter.ivr import document as d
from callcenter.ivr.context import CallerProfile, CallFacts, FlowContext, is_template
from callcenter.ivr.lint import LintEnvironment, LintIssue, lint_text
from callcenter.ivr.messages import bilingual
from callcenter.ivr.runner import CompiledFlow, FlowResult, FlowRunner, QueueRequest, Step, Utterance
from callcenter.ivr.session import SipFlowCall, load_prompt_file
from callcenter.ivr.tts import SpeechSynthesizer, TtsError
from callcenter.ivr.versions import FlowStore, FlowVersion
from callcenter.ivr.watcher import FileChange, FlowWatcher
from callcenter.media.prompts import Prompt

log = structlog.get_logger("callcenter.ivr")


@dataclass
class _Starting:
    """A call whose flow is about to start (reading the terminal's button code): cancellable like a runner."""

    deferred: Deferred[None]

    def cancel(self) -> None:
        if not self.deferred.called:
            self.deferred.cancel()


class PublishRefused(Exception):
    def __init__(self, issues: list[LintIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(bilingual(issue) for issue in issues))


def fixed_texts(flow: CompiledFlow) -> list[tuple[str, str, int]]:
    """(text, language, rate) of every prompt text without template variables: rendered at publish."""
    doc = flow.document
    out: list[tuple[str, str, int]] = []
    for node in doc.nodes.values():
        for _, spec in node.prompts():
            if isinstance(spec, d.SayPrompt):
                for language, text in spec.texts(doc.language).items():
                    if not is_template(text):
                        out.append((text.strip(), language, spec.rate or doc.voice.rate))
    return out


def files_of(flow: CompiledFlow) -> list[Path]:
    return [flow.flows_dir / spec.play for node in flow.document.nodes.values()
            for _, spec in node.prompts() if isinstance(spec, d.PlayPrompt)]


@dataclass
class FlowService:
    """Wired by the composition root (callcenter/app.py)."""

    config: Any  # callcenter.config.Config
    clock: Any  # IReactorTime (the reactor)
    media: Any  # MediaService
    ua: Any  # UserAgentCore
    store: FlowStore
    tts: SpeechSynthesizer
    queues: Any  # the ACD (callcenter.acd.router.Distributor): enqueue, leave, known, snapshot
    directory: Any  # callcenter.directory.lookup.Directory
    callbacks: Any  # callcenter.acd.callbacks.CallbackTasks
    recordings_root: Path
    flows: Mapping[str, CompiledFlow] = field(default_factory=dict)
    running: dict[str, FlowRunner | _Starting] = field(default_factory=dict)  # what to cancel when a call ends
    paths: dict[str, list[Step]] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)  # flow -> messages of the last refusal
    counters: dict[str, int] = field(default_factory=lambda: {"started": 0, "queued": 0, "transferred": 0,
                                                              "hangup": 0, "caller_hangup": 0, "error": 0})
    now: Callable[[], dt.datetime] = field(default_factory=lambda: lambda: dt.datetime.now(dt.UTC))
    on_ivr_abandon: Callable[[Call, str | None], None] | None = None  # the caller hung up while in the flow
    _watcher: FlowWatcher | None = None
    _poller: LoopingCall | None = None
    _polling: bool = False

    @property
    def flows_dir(self) -> Path:
        return Path(self.config.flows.directory)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.flows.timezone)

    # -- start / stop -------------------------------------------------------------------------------------
    async def start(self) -> None:
        live = await self.store.live_all()
        for name, version in live.items():
            compiled = self._compile(version)
            if compiled is not None:
                await self._prerender(compiled)
                self.flows = {**self.flows, name: compiled}
        if self.flows_dir.is_dir():
            self._watcher = FlowWatcher(self.flows_dir, self._on_file_change, clock=self.clock,
                                        interval=self.config.flows.watch_interval)
            changes = self._watcher.prime()
            # Publish in dependency-free order; a flow naming another one being published in the same pass
            # is checked against the names of all files present.
            for change in changes:
                await self._publish_file(change, at_start=True)
            if self.config.flows.watch:
                self._watcher.start()
        else:
            log.warning("ivr.flows_dir.missing", directory=str(self.flows_dir))
        self._poller = LoopingCall(lambda: Deferred.fromFuture(asyncio.ensure_future(self._poll_live())))
        self._poller.clock = self.clock
        self._poller.start(max(2.0, self.config.flows.watch_interval * 2), now=False)
        log.info("ivr.started", flows={n: f.version for n, f in self.flows.items()})

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        for runner in list(self.running.values()):
            runner.cancel()
        self.tts.close()

    # -- publishing ---------------------------------------------------------------------------------------
    def lint_environment(self) -> LintEnvironment:
        names = set(self.flows)
        if self.flows_dir.is_dir():
            names |= {p.stem for p in self.flows_dir.glob("*.yaml")}
        graph = {name: frozenset(n.flow for n in flow.document.nodes.values() if isinstance(n, d.SubflowNode))
                 for name, flow in self.flows.items()}  # a publish must not close a subflow cycle
        return LintEnvironment(
            flows_dir=self.flows_dir,
            flow_names=frozenset(names),
            queues=frozenset(q.name for q in self.config.queues),
            trunks=frozenset(t.name for t in self.config.trunks),
            subflow_graph=graph,
        )

    async def publish(self, name: str, text: str, *, source: str, author: str, origin: str,
                      source_path: str | None = None) -> FlowVersion:
        """Validate, pre-render, store and make live; raises PublishRefused (the live version stays)."""
        parsed, issues = lint_text(text, source, self.lint_environment(), name=name)
        errors = [issue for issue in issues if issue.severity == "error"]
        if parsed is None or errors:
            self.refused[name] = [bilingual(issue) for issue in errors]
            raise PublishRefused(errors)
        if parsed.name != name:
            raise PublishRefused([])  # lint reports a flow: key that disagrees with the file name
        candidate = CompiledFlow(name, 0, parsed.document, self.flows_dir)
        await self._prerender(candidate)
        version, created = await self.store.publish(name, text, author=author, origin=origin,
                                                    source_path=source_path)
        self.refused.pop(name, None)
        compiled = CompiledFlow(name, version.version, parsed.document, self.flows_dir)
        self.flows = {**self.flows, name: compiled}
        log.info("ivr.flow.live", flow=name, version=version.version, created=created, author=author,
                 warnings=[str(i) for i in issues if i.severity == "warning"])
        return version

    async def _publish_file(self, change: FileChange, *, at_start: bool = False) -> None:
        name = change.path.stem
        source = str(change.path)
        if change.error is not None:
            log.error("ivr.flow.refused", flow=name, file=source, problems=[change.error])
            self.refused[name] = [change.error]
            return
        if change.text is None:
            log.warning("ivr.flow.file_removed", flow=name, file=source,
                        note="the live version keeps serving; remove it from routing to retire it")
            return
        if at_start:
            last = await self.store.last_from_file(name)
            if last is not None and last.sha256 == change.sha256:
                if name not in self.flows:
                    live = await self.store.live(name)
                    compiled = self._compile(live) if live else None
                    if compiled is not None:
                        self.flows = {**self.flows, name: compiled}
                return
        try:
            await self.publish(name, change.text, source=source, author=f"file:{change.path.name}", origin="file",
                               source_path=source)
        except PublishRefused as exc:
            log.error("ivr.flow.refused", flow=name, file=source, keeps=self._live_label(name),
                      problems=[bilingual(issue) for issue in exc.issues])
        except TtsError as exc:
            log.error("ivr.flow.refused", flow=name, file=source, keeps=self._live_label(name),
                      problems=[f"TTS: {exc}"])

    def _live_label(self, name: str) -> str | None:
        live = self.flows.get(name)
        return live.label if live else None

    def _on_file_change(self, change: FileChange) -> Any:
        return self._publish_file(change)  # a coroutine: the watcher runs it as an asyncio task

    async def _poll_live(self) -> None:
        """Pick up versions published or rolled back by another process (the CLI, another node)."""
        if self._polling:
            return
        self._polling = True
        try:
            pointers = await self.store.live_pointers()
            for name, number in pointers.items():
                current = self.flows.get(name)
                if current is not None and current.version == number:
                    continue
                version = await self.store.get(name, number)
                compiled = self._compile(version)
                if compiled is not None:
                    await self._prerender(compiled)
                    self.flows = {**self.flows, name: compiled}
                    log.info("ivr.flow.live", flow=name, version=number, author=version.author, origin=version.origin)
        except Exception as exc:  # the database may be briefly unavailable: try again next time
            log.warning("ivr.poll.failed", error=str(exc))
        finally:
            self._polling = False

    def _compile(self, version: FlowVersion) -> CompiledFlow | None:
        parsed, issues = lint_text(version.text, f"{version.flow} v{version.version}",
                                   LintEnvironment(flows_dir=self.flows_dir), name=version.flow)
        if parsed is None:
            log.error("ivr.flow.stored_invalid", flow=version.flow, version=version.version,
                      problems=[str(i) for i in issues])
            return None
        return CompiledFlow(version.flow, version.version, parsed.document, self.flows_dir)

    async def _prerender(self, flow: CompiledFlow) -> None:
        texts = fixed_texts(flow)
        if texts:
            await asyncio.get_running_loop().run_in_executor(None, self.tts.render_many, texts)
        for path in files_of(flow):
            load_prompt_file(self.media.prompts, path)

    # -- prompts at call time --------------------------------------------------------------------------------
    async def prompt_for(self, utterance: Utterance, *, call_id: str) -> Prompt | None:
        if utterance.file is not None:
            return load_prompt_file(self.media.prompts, utterance.file)
        assert utterance.text is not None
        text = utterance.text.strip()
        if not text:
            return None
        prompt = self.tts.cached(text, utterance.language, utterance.rate)
        if prompt is not None:
            return prompt
        try:
            return await self.tts.render_async(text, utterance.language, utterance.rate)  # type: ignore[no-any-return]
        except TtsError as exc:
            log.error("ivr.tts.failed", call_id=call_id, error=str(exc))
            return None

    # -- calls ---------------------------------------------------------------------------------------------
    def start_call(self, call: Call, flow_name: str, *, button: str | None,
                   answer: Callable[[], Deferred[None]], ring: Callable[[], None],
                   button_codes: Mapping[str, str] | None = None, button_code_timeout: float = 1.5) -> bool:
        """Run ``flow_name`` for a new inbound call. With ``button_codes`` the call is answered first and the
        terminal's DTMF code names the button. When the flow is not live, an emergency call goes straight to the
        emergency queue; any other call is refused (False)."""
        if flow_name not in self.flows:
            log.error("ivr.flow.not_live", call_id=call.call_id, flow=flow_name, refused=self.refused.get(flow_name))
            if not self._can_fall_back(call):
                return False
            starting = ensureDeferred(self._emergency_fallback(call, answer, f"flow {flow_name!r} is not live"))
        else:
            flows = self.flows  # pinned now: a publish during the call changes nothing for it
            call.flow_version = flows[flow_name].label
            self.counters["started"] += 1
            starting = ensureDeferred(self._begin(call, flows, flow_name, button, answer, ring, button_codes or {},
                                                  button_code_timeout))
        starting.addErrback(lambda failure: failure.trap(CancelledError))
        self.running[call.call_id] = _Starting(starting)
        return True

    def _can_fall_back(self, call: Call) -> bool:
        return call.emergency and "emergency" in self.queues.known

    async def _emergency_fallback(self, call: Call, answer: Callable[[], Deferred[None]], reason: str) -> None:
        """An emergency never meets a broken or missing flow: answer it and queue it with the operators."""
        log.error("ivr.emergency.fallback", call_id=call.call_id, reason=reason)
        if call.active:
            await answer()
        session = call.caller_leg.media
        if not call.active or session is None:
            return
        self.media.music_on_hold(session)
        self.queues.enqueue(call.call_id, call.caller_number,
                            QueueRequest("emergency", "emergency", 9, {}, None, None, "(fallback)", reason))

    async def _begin(self, call: Call, flows: Mapping[str, CompiledFlow], flow_name: str, button: str | None,
                     answer: Callable[[], Deferred[None]], ring: Callable[[], None], codes: Mapping[str, str],
                     code_timeout: float) -> None:
        lookup = asyncio.ensure_future(self.directory.lookup(call.caller_number))  # async directory (DB)
        profile: CallerProfile = await Deferred.fromFuture(lookup)
        call.elder_id = profile.elder_id
        if codes and call.active:
            await answer()
            session = call.caller_leg.media
            if session is not None and call.active:
                longest = max(len(code) for code in codes)
                result = await self.media.collect_digits(session, max_digits=longest, timeout=code_timeout,
                                                         inter_digit_timeout=0.8, terminators="#")
                button = codes.get(result.digits, button)
                log.info("ivr.button_code", call_id=call.call_id, code=result.digits, button=button)
        if not call.active:
            return
        call.button = button
        language = profile.language if profile.language in d.LANGUAGES else flows[flow_name].document.language
        context = FlowContext(profile, CallFacts(call.caller_number, call.dialled, button, call.emergency, call.trunk),
                              self.now().astimezone(self.zone), language)
        steps: list[Step] = []
        self.paths[call.call_id] = steps
        runner = FlowRunner(SipFlowCall(self, call, answer, ring), flows, flow_name, context, clock=self.clock,
                            max_steps=self.config.flows.max_steps, on_step=steps.append)
        self.running[call.call_id] = runner
        runner.run().addCallback(lambda result: self._finished(call, result, answer))

    def _finished(self, call: Call, result: FlowResult, answer: Callable[[], Deferred[None]]) -> None:
        self.running.pop(call.call_id, None)
        self.counters[result.outcome] = self.counters.get(result.outcome, 0) + 1
        log.info("ivr.flow.finished", call_id=call.call_id, outcome=result.outcome, detail=result.detail,
                 steps=len(result.steps))
        if result.outcome == "error" and call.active:
            if self._can_fall_back(call):
                fallback = ensureDeferred(self._emergency_fallback(call, answer, result.detail))
                fallback.addErrback(lambda failure: failure.trap(CancelledError))
                self.running[call.call_id] = _Starting(fallback)
            else:
                self.hangup(call, EndReason.FAILED)

    def call_ended(self, call: Call) -> None:
        runner = self.running.pop(call.call_id, None)
        queued = call.call_id in getattr(self.queues, "calls", {})
        steps = self.paths.pop(call.call_id, None)
        if runner is not None:
            runner.cancel()
            if (not queued and call.answered_at is not None and call.ended_by == "remote"
                    and self.on_ivr_abandon is not None):
                self.on_ivr_abandon(call, steps[-1].node if steps else None)
        self.queues.leave(call.call_id, "caller_hangup", fire=False)

    async def overflow_voicemail(self, call: Call, queue: str) -> None:
        """A queue's overflow: the caller (already told) leaves a message after the beep, then we hang up."""
        flow_call = SipFlowCall(self, call, lambda: succeed(None), lambda: None)
        try:
            await flow_call.record_message(max_seconds=120, terminators="#", beep=True, flow="(overflow)",
                                           node=queue)
        except CancelledError:
            return
        self.hangup(call, EndReason.LOCAL_BYE)

    def hangup(self, call: Call, reason: EndReason) -> None:
        if call.active:
            self.ua.inbound.hangup(call, reason)

    # -- transfers, callbacks, voicemail ---------------------------------------------------------------------
    def transfer(self, call: Call, number: str, *, trunk: str | None, ring_timeout: float) -> Deferred[bool]:
        """Ring ``number`` through a trunk; when it answers, bridge it with the caller (True); False when it
        doesn't answer in ring_timeout, is busy or cannot be called."""
        result: Deferred[bool] = Deferred()
        inbound = self.ua.inbound

        def answered(callee: Call) -> None:
            timer = callee.timers.pop("flow_ring", None)
            if timer is not None and timer.active():
                timer.cancel()
            a, b = call.caller_leg.media, callee.caller_leg.media
            if not call.active or a is None or b is None:
                self.ua.outbound.hangup(callee, EndReason.LOCAL_BYE)
                return
            self.media.bridge(a, b)
            log.info("ivr.transfer.connected", call_id=call.call_id, callee_call_id=callee.call_id, number=number)
            if not result.called:
                result.callback(True)

        def ended(callee: Call) -> None:
            if call.linked is callee:
                call.linked = None
            if callee.answered_at is None:
                if not result.called:
                    result.callback(False)
            elif call.active:
                inbound.hangup(call, EndReason.LOCAL_BYE)  # the transferred party hung up: so does the caller

        try:
            callee = self.ua.outbound.originate(number, trunk_name=trunk, caller_id=call.caller_number or "callcenter",
                                                on_answer=answered, on_end=ended)
        except OutboundError as exc:
            log.info("ivr.transfer.failed", call_id=call.call_id, number=number, reason=str(exc))
            result.callback(False)
            return result
        call.linked, callee.linked = callee, call
        callee.timers["flow_ring"] = self.clock.callLater(
            ring_timeout, lambda: self.ua.outbound.hangup(callee, EndReason.TIMEOUT)
            if callee.state in (CallState.OFFERED, CallState.RINGING) else None)
        return result

    def create_callback(self, call: Call, *, reason: str, due_in: float, flow: str) -> Deferred[None]:
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=due_in)
        return Deferred.fromFuture(asyncio.ensure_future(self.callbacks.create(
            number=call.caller_number, call_id=call.call_id, elder_id=call.elder_id, reason=reason, source="ivr",
            due_at=due, flow=flow)))

    def store_voicemail(self, call: Call, flow: str, node: str, relative: Path, seconds: float) -> None:
        self.callbacks.store_voicemail(call_id=call.call_id, flow=flow, node=node, caller_number=call.caller_number,
                                       path=str(relative), seconds=seconds)

    def status(self) -> dict[str, Any]:
        return {
            "flows": {name: {"version": f.version, "description": f.document.description}
                      for name, f in sorted(self.flows.items())},
            "refused": dict(self.refused),
            "running": len(self.running),
            "counters": dict(self.counters),
            "queues": self.queues.snapshot(),
        }
