"""The distributor's telephones: operators' desk phones over SIP, callers' legs through the media service.

:class:`SipConnector` is the :class:`~callcenter.acd.router.Connector` of the engine. An offer rings the
operator's registered desk phone with the elder's number shown; when it answers, the caller's leg (hearing
music in the queue) is bridged to it and the ACD is told. A phone that is busy, does not answer or cannot be
reached is reported as a missed offer (an unreachable phone pauses its operator at once: nobody should wait
for a phone that is off). The browser softphone of the desktop is another endpoint behind the same calls.

Line seize: the pre-empted caller is unbridged, hears one sentence in their language, then music (or is
told they will be called back and is hung up), and the operator's phone is released with a BYE before it
rings with the emergency.

Lost BYEs: every ``keepalive`` seconds both legs of a conversation get an in-dialog OPTIONS; no answer or
481 ends that leg, so neither the caller nor the operator can stay "talking" to nobody.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred

from callcenter.acd.model import Offer, QueuedCall
from callcenter.acd.router import Distributor
from callcenter.calls.model import Call, CallState, EndReason
from callcenter.calls.outbound import OutboundError
from callcenter.ivr.runner import Utterance
from callcenter.sip.dialog import DialogState

if TYPE_CHECKING:
    from callcenter.calls.ua import UserAgentCore
    from callcenter.media.service import MediaService

log = structlog.get_logger("callcenter.acd")

PREEMPTED_REQUEUE = {
    "cmn": "请稍候，有一个紧急呼叫需要优先处理，我们会尽快回到您的电话。",
    "yue": "請稍等，有一個緊急電話要優先處理，我哋會盡快返嚟聽你電話。",
}
PREEMPTED_CALLBACK = {
    "cmn": "对不起，有一个紧急呼叫需要优先处理，我们稍后会给您回电话，再见。",
    "yue": "對唔住，有一個緊急電話要優先處理，我哋稍後會覆你電話，再見。",
}
OPERATOR_LOST = {
    "cmn": "对不起，线路出现了问题，请稍候，正在为您转接其他话务员。",
    "yue": "對唔住，線路出咗問題，請稍等，而家幫你轉駁其他接線員。",
}
OFFER_CALLBACK = {
    "cmn": "现在话务员都在忙。需要我们给您回电话，请按1；继续等待，请不要挂机。",
    "yue": "而家接線員都好忙。想我哋覆你電話，請按1；繼續等候，請唔好收線。",
}
OVERFLOW_CALLBACK = {
    "cmn": "好的，我们已经记下您的电话，会尽快给您回电话，再见。",
    "yue": "好，我哋已經記低你嘅電話，會盡快覆你，再見。",
}
OVERFLOW_VOICEMAIL = {
    "cmn": "现在话务员都在忙，请在提示音后留言，说完请按井号键。",
    "yue": "而家接線員都好忙，請喺提示音之後留言，講完請按井字鍵。",
}


def position_text(language: str, position: int, minutes: int | None) -> str:
    parts = []
    if language == "yue":
        if position:
            parts.append(f"你前面仲有{position - 1}位。" if position > 1 else "下一位就到你。")
        if minutes is not None:
            parts.append(f"預計等候大約{minutes}分鐘。")
        return "".join(parts) + "請唔好收線。"
    if position:
        parts.append(f"您前面还有{position - 1}位。" if position > 1 else "下一位就是您。")
    if minutes is not None:
        parts.append(f"预计等待大约{minutes}分钟。")
    return "".join(parts) + "请不要挂机。"


@dataclass
class SipConnector:
    ua: UserAgentCore
    media: MediaService
    flows: Any  # callcenter.ivr.service.FlowService: TTS, directory, voicemail, callbacks
    ring_timeout: float = 15.0
    keepalive: float = 30.0
    speech_rate: int = 150  # words per minute of the ACD's own sentences (the flows' default voice rate)
    acd: Distributor | None = None
    create_callback: Callable[[QueuedCall, str, str], None] | None = None  # (call, reason, source)
    phones: dict[int, Call] = field(default_factory=dict)  # offer id → the operator phone's call
    talking: dict[str, Call] = field(default_factory=dict)  # caller call id → operator phone's call
    lost_phones: set[str] = field(default_factory=set)  # phone calls that stopped answering keepalives
    softphones: Any = None  # callcenter.acd.softphone.Softphones: operators whose device is "browser"
    _keepalive_timer: Any = None

    # -- life cycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.keepalive > 0:
            self._keepalive_timer = self.ua.clock.callLater(self.keepalive, self._ping)

    def stop(self) -> None:
        if self._keepalive_timer is not None and self._keepalive_timer.active():
            self._keepalive_timer.cancel()

    def _caller(self, call: QueuedCall) -> Call | None:
        found = self.ua.calls.get(call.call_id)
        return found if found is not None and found.active else None

    def _connected(self, caller: Call) -> bool:
        """Is the caller talking with an operator (a desk phone linked, or a browser softphone)?"""
        if caller.linked is not None:
            return True
        return self.softphones is not None and self.softphones.operator_for(caller.call_id) is not None

    def _language(self, call: QueuedCall) -> str:
        language = call.data.get("language")
        if language is None:  # the IVR's lookup of this caller (no waiting here), else what the flow chose
            try:
                profile = self.flows.directory.recent(call.caller_number)
            except Exception:
                profile = None
            language = (profile.language if profile is not None else None) or call.request.language
            call.data["language"] = language
        return str(language) if language in ("cmn", "yue") else "cmn"

    # -- offers ---------------------------------------------------------------------------------------
    def ring(self, offer: Offer) -> None:
        assert self.acd is not None
        caller, operator = self._caller(offer.call), offer.operator
        if caller is None:
            self.acd.leave(offer.call.call_id, "caller_hangup", fire=False)
            return
        if operator.device == "browser" and self.softphones is not None:
            self.softphones.ring(offer)  # the desktop pops and rings; answered with a click
            return
        if operator.phone is None:
            self._unreachable(offer, "no desk phone configured")
            return
        try:
            phone = self.ua.outbound.call_phone(
                operator.phone, caller_number=caller.caller_number, caller_display=caller.caller_display,
                ring_timeout=self.ring_timeout,
                on_answer=lambda answered: self._phone_answered(offer, answered),
                on_end=lambda ended: self._phone_ended(offer, ended))
        except OutboundError as exc:
            self._unreachable(offer, str(exc))
            return
        offer.handle = phone
        self.phones[offer.id] = phone
        log.info("acd.phone.ringing", call_id=caller.call_id, operator=operator.name, phone=operator.phone,
                 phone_call_id=phone.call_id, emergency=offer.call.emergency)

    def _unreachable(self, offer: Offer, why: str) -> None:
        assert self.acd is not None
        operator = offer.operator
        log.warning("acd.phone.unreachable", call_id=offer.call.call_id, operator=operator.name, reason=why)
        self.acd.not_answered(offer, "unreachable")
        if operator.state.value in ("available", "paused"):  # paused too: the reason says why now
            self.acd.set_state(operator.name, "paused", "phone_unreachable")

    def stop_ringing(self, offer: Offer) -> None:
        if self.softphones is not None:
            self.softphones.stop_ringing(offer)
        phone = self.phones.pop(offer.id, None)
        if phone is not None and phone.active:
            phone.linked = None
            self.ua.outbound.hangup(phone, EndReason.LOCAL_BYE)

    def _phone_answered(self, offer: Offer, phone: Call) -> None:
        assert self.acd is not None
        self.phones.pop(offer.id, None)
        caller = self._caller(offer.call)
        if caller is None or self.acd.offers.get(offer.id) is not offer:
            log.info("acd.phone.answered_late", call_id=offer.call.call_id, phone_call_id=phone.call_id)
            self.ua.outbound.hangup(phone, EndReason.LOCAL_BYE)  # withdrawn meanwhile
            return
        a, b = caller.caller_leg.media, phone.caller_leg.media
        if a is None or b is None:
            self.ua.outbound.hangup(phone, EndReason.FAILED)
            return
        self.media.bridge(a, b)
        caller.linked, phone.linked = phone, caller
        self.talking[caller.call_id] = phone
        self.acd.answered(offer)

    def _phone_ended(self, offer: Offer, phone: Call) -> None:
        assert self.acd is not None
        self.phones.pop(offer.id, None)
        if self.acd.offers.get(offer.id) is offer:  # still ringing: a missed offer
            status = phone.sip_status
            reason = "busy" if status in (486, 600, 603) else "no_answer" if status in (408, 480, 487) else "failed"
            self.acd.not_answered(offer, reason)
            return
        caller_id = offer.call.call_id
        if self.talking.get(caller_id) is not phone:
            return  # released on purpose (pre-emption, withdrawn offer)
        del self.talking[caller_id]
        caller = self.ua.calls.get(caller_id)
        if phone.call_id in self.lost_phones:
            self.lost_phones.discard(phone.call_id)
            if caller is not None and caller.active:
                caller.linked = None
                self.acd.operator_lost(caller_id)
                self._say(offer.call, caller, OPERATOR_LOST, then="music")
                return
        log.info("acd.operator.hung_up", call_id=caller_id, operator=offer.operator.name,
                 phone_call_id=phone.call_id)
        self.acd.conversation_ended(caller_id)
        if caller is not None and caller.active:
            self.ua.inbound.callee_ended(caller, phone)  # hangs up unless 120/family stay in a three-way call

    def alive(self, call: QueuedCall) -> bool:
        return self._caller(call) is not None

    def caller_ended(self, call_id: str) -> None:
        self.talking.pop(call_id, None)

    # -- the caller's side ----------------------------------------------------------------------------
    def waiting(self, call: QueuedCall) -> None:
        """The call waits again (after a missed offer it never stopped hearing music; nothing to do)."""

    def preempted(self, call: QueuedCall, operator: Any, *, requeued: bool) -> None:
        if self.softphones is not None:
            self.softphones.preempted(call.call_id)  # a browser conversation: unbridged
        phone = self.talking.pop(call.call_id, None)
        caller = self._caller(call)
        if caller is not None:
            caller.linked = None
        if phone is not None:
            phone.linked = None
            if phone.active:
                self.ua.outbound.hangup(phone, EndReason.LOCAL_BYE)
        if caller is None:
            return
        texts = PREEMPTED_REQUEUE if requeued else PREEMPTED_CALLBACK
        self._say(call, caller, texts, then="music" if requeued else "hangup")

    def announce(self, call: QueuedCall, position: int, wait_estimate: float | None) -> None:
        """Position / expected wait (if the queue or the node asks for them), then the node's own prompt."""
        caller = self._caller(call)
        if caller is None:
            return
        utterances = []
        if position or wait_estimate is not None:
            minutes = None if wait_estimate is None else max(1, round(wait_estimate / 60))
            language = self._language(call)
            text = position_text(language, position, minutes)
            utterances.append(Utterance(text, None, language, self.speech_rate))
        if call.request.periodic is not None:
            utterances.append(call.request.periodic)
        if utterances:
            self._play_then(call, caller, utterances, then="music")

    def overflow(self, call: QueuedCall, target: str) -> None:
        caller = self._caller(call)
        if caller is None:
            return
        if target == "callback":
            job = ensureDeferred(self._offer_callback(call, caller))
            job.addErrback(lambda failure: failure.trap(CancelledError))
            job.addErrback(lambda failure: log.error("acd.callback.offer_failed", call_id=call.call_id,
                                                     error=str(failure.value)))
        else:
            self._say(call, caller, OVERFLOW_VOICEMAIL, then="voicemail")

    async def _offer_callback(self, call: QueuedCall, caller: Call) -> None:
        """"Press 1 and we call you back; stay on the line to keep waiting": the caller keeps the place.

        The queue asks again every ``max_wait``; an offer still being said or listened to is heard out first
        (restarting it would cut the sentence before "press 1" whenever max_wait is shorter than it)."""
        if call.data.get("callback_offer"):
            log.info("acd.callback.offer_in_progress", call_id=call.call_id)
            return
        call.data["callback_offer"] = True
        try:
            await self._ask_callback(call, caller)
        finally:
            call.data["callback_offer"] = False

    async def _ask_callback(self, call: QueuedCall, caller: Call) -> None:
        assert self.acd is not None
        session = caller.caller_leg.media
        language = self._language(call)
        utterance = Utterance(OFFER_CALLBACK.get(language, OFFER_CALLBACK["cmn"]), None, language, self.speech_rate)
        prompt = await self.flows.prompt_for(utterance, call_id=call.call_id)
        if session is None or not caller.active or self._connected(caller) or not self.media.is_open(session):
            return
        log.info("acd.callback.offered", call_id=call.call_id, queue=call.queue.name)
        self.media.stop_playing(session)
        if prompt is not None:
            self.media.play(session, prompt, barge_in=True)
        if call.queue.music:
            self.media.music_on_hold(session)  # after the question (or at once when a key cuts it short)
        listen = (prompt.duration if prompt is not None else 0.0) + 8.0
        result = await self.media.collect_digits(session, max_digits=1, timeout=listen, inter_digit_timeout=3.0,
                                                 terminators="", flush=True)
        if not caller.active or self._connected(caller):
            return  # an operator took the call meanwhile: the key was for them
        if result.digits == "1" and self.acd.take_callback(call.call_id):
            if self.create_callback is not None:
                self.create_callback(call, f"queue {call.queue.name}: asked for a callback while waiting", "missed")
            self._say(call, caller, OVERFLOW_CALLBACK, then="hangup")

    def _say(self, call: QueuedCall, caller: Call, texts: dict[str, str], *, then: str) -> None:
        language = self._language(call)
        text = texts.get(language) or texts.get("cmn") or next(iter(texts.values()))
        self._play_then(call, caller, [Utterance(text, None, language, self.speech_rate)], then=then)

    def _play_then(self, call: QueuedCall, caller: Call, utterances: list[Utterance], *, then: str) -> None:
        job = ensureDeferred(self._say_then(call, caller, utterances, then))
        job.addErrback(lambda failure: failure.trap(CancelledError))
        job.addErrback(lambda failure: log.error("acd.announce.failed", call_id=call.call_id,
                                                 error=str(failure.value)))

    async def _say_then(self, call: QueuedCall, caller: Call, utterances: list[Utterance], then: str) -> None:
        session = caller.caller_leg.media
        prompts = [await self.flows.prompt_for(u, call_id=call.call_id) for u in utterances]
        if session is None or not caller.active or not self.media.is_open(session):
            return
        if self._connected(caller):
            return  # connected meanwhile: say nothing over the operator
        self.media.stop_playing(session)
        playback = None
        for prompt in prompts:
            if prompt is not None:
                playback = self.media.play(session, prompt, barge_in=False)
        if then == "music":
            if call.queue.music:
                self.media.music_on_hold(session)  # queued after the sentences
            return
        if playback is not None:
            done: Deferred[None] = Deferred()
            playback.add_done_callback(lambda *_: None if done.called else done.callback(None))
            await done
        if not caller.active:
            return
        if then == "hangup":
            self.ua.inbound.hangup(caller, EndReason.LOCAL_BYE)
        elif then == "voicemail":
            await self.flows.overflow_voicemail(caller, call.queue.name)

    # -- keepalive: a lost BYE cannot leave anyone talking to nobody -----------------------------------
    def _ping(self) -> None:
        self._keepalive_timer = self.ua.clock.callLater(self.keepalive, self._ping)
        for caller_id, phone in list(self.talking.items()):
            caller = self.ua.calls.get(caller_id)
            for leg_call in (caller, phone):
                if leg_call is not None and leg_call.state is CallState.CONFIRMED:
                    self._options(leg_call)
        for caller_id in self.softphones.talking_calls() if self.softphones is not None else ():
            caller = self.ua.calls.get(caller_id)  # the browser's side is watched by WebRTC itself
            if caller is not None and caller.state is CallState.CONFIRMED:
                self._options(caller)

    def _options(self, call: Call) -> None:
        handler = self.ua.inbound if call.direction == "inbound" else self.ua.outbound
        leg = call.caller_leg
        dialog = leg.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED or leg.remote_address is None:
            return
        dest = handler.dialog_destination(leg)
        request = dialog.create_request("OPTIONS", self.ua.new_via(dest[0]))
        request.headers.add("User-Agent", self.ua.user_agent)

        def lost(status: int | None) -> None:
            if call.active:
                log.warning("acd.keepalive.lost", call_id=call.call_id, status=status)
                if call.direction == "outbound":
                    self.lost_phones.add(call.call_id)
                handler.end(call, EndReason.TIMEOUT, ended_by="engine")

        def on_response(resp: Any) -> None:
            if resp.status in (408, 481):
                lost(resp.status)

        self.ua.txl.send_request(request, dest, on_response=on_response, on_timeout=lambda: lost(None))
