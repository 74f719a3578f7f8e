"""Inbound calls: admit or refuse an INVITE, then do what the dialled number's route says.

A route runs an IVR flow (``flow``: the flow decides when to ring, answer, queue or transfer), rings a
desk phone and bridges it (``connect``), or answers and holds/echoes (``hold``, ``echo`` for the 9196
echo test). Unknown numbers get 404, and full trunks get 486 (only the emergency reserve is left) or 503.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from twisted.internet.defer import Deferred

from callcenter.calls.model import Call, CallState, EndReason, Leg
from callcenter.calls.outbound import OutboundError
from callcenter.calls.session import CallHandler
from callcenter.calls.trunks import Admission
from callcenter.media.ports import PortsExhausted
from callcenter.sip.dialog import Dialog, new_tag
from callcenter.sip.message import Request
from callcenter.sip.sdp import NoCommonCodec, SdpError, SessionDescription, parse_answer
from callcenter.sip.transaction import ServerTransaction
from callcenter.sip.uri import SipUri, TelUri

if TYPE_CHECKING:
    from callcenter.calls.ua import UserAgentCore

log = structlog.get_logger("callcenter.calls")

Address = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Route:
    number: str
    name: str
    action: str = "hold"  # "hold" | "echo"
    max_duration: float | None = None
    answer_after: float = 0.0  # ring this long before answering
    emergency: bool = False
    target: str | None = None  # "connect": the account to ring (an operator's desk phone)
    ring_timeout: float = 30.0
    flow: str | None = None  # "flow": the IVR flow to run
    button: str | None = None  # the terminal button that dials this number
    button_codes: Mapping[str, str] = field(default_factory=dict)  # DTMF code sent after connecting → button
    button_code_timeout: float = 1.5


def dialled_number(request: Request) -> str | None:
    uri = request.uri
    if isinstance(uri, SipUri) and uri.user is not None:
        user = uri.user_unescaped or ""
        user = user.split(";", 1)[0]  # tel-style parameters in the user part (RFC 3261 §19.1.6)
    elif isinstance(uri, TelUri):
        user = uri.number
    else:
        return None
    return re.sub(r"[\s\-.()]", "", user)


def caller_number(request: Request) -> str:
    uri = request.from_.uri
    if isinstance(uri, SipUri):
        return uri.user_unescaped or ""
    if isinstance(uri, TelUri):
        return uri.number
    return str(uri)


class InboundCalls(CallHandler):
    def __init__(self, ua: UserAgentCore) -> None:
        super().__init__(ua)
        self.routes: dict[str, Route] = {}
        self.max_calls = 10_000
        self.counters = {"offered": 0, "answered": 0, "rejected": 0, "cancelled": 0}
        self.flows: Any = None  # the IVR (callcenter.ivr.service.FlowService), wired by the app
        self._confirm_waiters: dict[str, Deferred[None]] = {}

    # -- a new INVITE ------------------------------------------------------------------------------
    def on_invite(self, request: Request, stx: ServerTransaction, source: Address) -> None:
        ua = self.ua
        call_id = request.call_id
        if not ua.accepting:
            resp = ua.response(request, 503, "Service Unavailable (shutting down)", to_tag=new_tag())
            resp.headers.add("Retry-After", "30")
            stx.respond(resp)
            ua.counters["rejected_shutdown"] += 1
            return
        max_forwards = request.headers.get("Max-Forwards")
        if max_forwards is not None and int(max_forwards) == 0:  # validated as an integer by the parser
            stx.respond(ua.response(request, 483, to_tag=new_tag()))
            return
        trunk = ua.trunks.by_source(source[1])
        account: str | None = None
        if trunk is None:
            account = ua.registered_account(source)
            if account is None and ua.authenticate_unknown:
                account = ua.authenticate(request, stx)
                if account is None:
                    return
        number = dialled_number(request)
        if call_id in ua.calls:
            stx.respond(ua.response(request, 482, "Loop Detected", to_tag=new_tag()))
            return
        route = self.routes.get(number or "")
        trunk_name = trunk.name if trunk else None
        if route is None:
            reason = f"Not Found (no route for {number!r})" if number else None
            self._reject(request, stx, 404, reason, self._new_call(request, source, number or "", trunk_name, None))
            return
        refusal: tuple[int, str] | None = None
        seize = False
        if trunk is not None:
            admission = trunk.admit(route.emergency)
            if admission is not Admission.ACCEPT and route.emergency and ua.trunk_seize_victim(trunk) is not None:
                admission, seize = Admission.ACCEPT, True  # once the call is sure to go ahead (below)
            if admission is Admission.BUSY:
                refusal = (486, "Busy Here (channels reserved for emergencies)")
            elif admission is Admission.FULL:
                refusal = (503, "Service Unavailable (all trunk channels busy)")
        if refusal is None and len(ua.calls) >= self.max_calls:
            refusal = (503, "Service Unavailable (engine at capacity)")
        if refusal is not None:
            self._reject(request, stx, *refusal, self._new_call(request, source, number or "", trunk_name, route))
            return
        call = self._new_call(request, source, number or "", trunk.name if trunk else None, route)
        leg = Leg(role="caller", remote_address=source)
        call.legs.append(leg)
        try:
            leg.media = self.open_media(call, "caller")
        except PortsExhausted:
            self._reject(request, stx, 503, "Service Unavailable (no media ports)", call)
            return
        answer_body = b""
        try:
            if request.body:
                answer_body = self.sdp_answer(call, leg, request.body)
            else:  # late offer: we offer in the 200 OK, the caller answers in the ACK
                answer_body = self.local_offer(leg)
        except NoCommonCodec:
            self.close_media(leg)
            warning = '305 callcenter "no common codec: PCMU or PCMA required"'
            self._reject(request, stx, 488, None, call, warning=warning)
            return
        except SdpError as exc:
            self.close_media(leg)
            self._reject(request, stx, 400, f"Bad Request (SDP: {exc})", call)
            return
        if trunk is not None:
            if seize:  # an outbound non-emergency call gives its channel up to this emergency
                ua.seize_trunk_channel(trunk, call_id)
            trunk.active_calls.add(call_id)
        self.counters["offered"] += 1
        local_tag = leg.local_tag = new_tag()
        ua.call_started(call)
        log.info(
            "call.offered",
            call_id=call_id,
            caller=call.caller_number,
            dialled=call.dialled,
            route=route.name,
            trunk=call.trunk,
            account=account,
            emergency=route.emergency,
            source=f"{source[1]}:{source[2]}",
        )
        stx.on_cancel = lambda cancel: self._on_cancel(call, stx)
        leg.invite_tx = stx
        if route.action == "connect":
            self._connect(call, request, stx, answer_body, route)
        elif route.action == "flow":
            self._start_flow(call, request, stx, answer_body, route)
        elif route.answer_after > 0:
            ringing = ua.response(request, 180, to_tag=local_tag)
            ringing.headers.add("Contact", ua.contact(call.dialled, source[0]))
            stx.respond(ringing)
            call.transition(CallState.RINGING)
            call.timers["answer"] = ua.clock.callLater(
                route.answer_after, self._answer, call, request, stx, answer_body
            )
        else:
            self._answer(call, request, stx, answer_body)

    def _new_call(
        self, request: Request, source: Address, number: str, trunk: str | None, route: Route | None
    ) -> Call:
        return Call(
            call_id=request.call_id,
            direction="inbound",
            from_uri=str(request.from_.uri),
            to_uri=str(request.to.uri),
            caller_number=caller_number(request),
            caller_display=request.from_.display_name,
            dialled=number,
            source=source,
            started_at=self.ua.clock.seconds(),
            trunk=trunk,
            route_name=route.name if route else None,
            emergency=route.emergency if route else False,
        )

    def _reject(
        self,
        request: Request,
        stx: ServerTransaction,
        status: int,
        reason: str | None,
        call: Call,
        *,
        warning: str | None = None,
    ) -> None:
        """Refuse a call we identified (it still gets a call record: every call is kept)."""
        self.counters["rejected"] += 1
        log.info("call.rejected", call_id=request.call_id, status=status, reason=reason, dialled=call.dialled)
        resp = self.ua.response(request, status, reason, to_tag=new_tag())
        if warning:
            resp.headers.add("Warning", warning)
        stx.respond(resp)
        self.ua.call_started(call)
        self.end(call, EndReason.REJECTED, status=status, ended_by="engine")

    # -- answering ---------------------------------------------------------------------------------
    def _answer(self, call: Call, request: Request, stx: ServerTransaction, body: bytes) -> None:
        call.timers.pop("answer", None)
        if call.state not in (CallState.OFFERED, CallState.RINGING):
            return
        call.caller_leg.invite_tx = None
        ua = self.ua
        leg = call.caller_leg
        resp = ua.response(request, 200, to_tag=leg.local_tag)
        contact = ua.contact(call.dialled or "callcenter", call.source[0])
        resp.headers.add("Contact", contact)
        resp.headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = body
        leg.dialog = Dialog.from_uas(request, resp, contact)
        stx.respond(resp)
        self.retransmit_ok_until_ack(call, stx, on_give_up=lambda: self._no_ack(call))
        call.transition(CallState.ANSWERED)
        call.answered_at = ua.clock.seconds()
        call.sip_status = 200
        self.counters["answered"] += 1
        route = self.routes.get(call.dialled)
        self.arm_max_duration(call, route.max_duration if route else None)
        log.info("call.answered", call_id=call.call_id, codec=leg.codec)
        self._start_route_media(call, leg, route)
        ua.call_answered(call)

    # -- flow: the IVR decides when to ring, answer, queue or transfer ---------------------------------
    def _start_flow(self, call: Call, request: Request, stx: ServerTransaction, answer_body: bytes,
                    route: Route) -> None:
        def ring() -> None:
            if call.state is CallState.OFFERED:
                ringing = self.ua.response(request, 180, to_tag=call.caller_leg.local_tag)
                ringing.headers.add("Contact", self.ua.contact(call.dialled, call.source[0]))
                stx.respond(ringing)
                call.transition(CallState.RINGING)

        def answer() -> Deferred[None]:
            """Send the 200 OK; fire when the ACK arrives (media flows), or after 2 s without one."""
            confirmed: Deferred[None] = Deferred()
            if call.state in (CallState.OFFERED, CallState.RINGING):
                self._answer(call, request, stx, answer_body)
            if call.state is CallState.CONFIRMED or not call.active:
                confirmed.callback(None)
                return confirmed
            self._confirm_waiters[call.call_id] = confirmed
            timer = self.ua.clock.callLater(2.0, self._confirmed, call)
            confirmed.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
            return confirmed

        if self.flows is None or route.flow is None or not self.flows.start_call(
                call, route.flow, button=route.button, button_codes=route.button_codes,
                button_code_timeout=route.button_code_timeout, answer=answer, ring=ring):
            log.error("call.flow.unavailable", call_id=call.call_id, flow=route.flow)
            self.hangup(call, EndReason.REJECTED, status=503)

    def _confirmed(self, call: Call) -> None:
        waiter = self._confirm_waiters.pop(call.call_id, None)
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    # -- connect: ring a desk phone and bridge (until the ACD picks operators) ------------------------
    def _connect(self, call: Call, request: Request, stx: ServerTransaction, answer_body: bytes, route: Route) -> None:
        """Ring ``route.target``'s registered phone with the caller's number; answer the caller only when the
        phone answers, then bridge the two legs' media (and record from the caller's side)."""
        ua = self.ua
        ringing = ua.response(request, 180, to_tag=call.caller_leg.local_tag)
        ringing.headers.add("Contact", ua.contact(call.dialled, call.source[0]))
        stx.respond(ringing)
        call.transition(CallState.RINGING)
        assert route.target is not None
        try:
            callee = ua.outbound.call_phone(
                route.target,
                caller_number=call.caller_number,
                caller_display=call.caller_display,
                ring_timeout=route.ring_timeout,
                on_answer=lambda b: self._connected(call, b, request, stx, answer_body),
                on_end=lambda b: self.callee_ended(call, b),
            )
        except OutboundError as exc:
            log.info("call.connect.unavailable", call_id=call.call_id, target=route.target, reason=str(exc))
            self.hangup(call, EndReason.REJECTED)
            return
        call.linked = callee
        callee.linked = call

    def _connected(self, call: Call, callee: Call, request: Request, stx: ServerTransaction, body: bytes) -> None:
        if call.state not in (CallState.OFFERED, CallState.RINGING):
            return  # the caller gave up while the phone was answering; the callee is hung up by callee_ended
        self._answer(call, request, stx, body)
        media, a, b = self.media, call.caller_leg.media, callee.caller_leg.media
        if media is not None and a is not None and b is not None:
            media.bridge(a, b)
        log.info("call.connected", call_id=call.call_id, callee_call_id=callee.call_id, target=callee.dialled)

    def callee_ended(self, call: Call, callee: Call) -> None:
        call.linked = None
        if call.state in (CallState.OFFERED, CallState.RINGING):
            busy = callee.sip_status in (486, 600)
            self.hangup(call, EndReason.REJECTED, status=486 if busy else 480)
        elif call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            staying = [p for p in call.parties if p.state is CallState.CONFIRMED]
            if staying and self.media is not None:
                # The operator left a three-way call: the elder stays with 120 (or the family member).
                media, a, b = self.media, call.caller_leg.media, staying[0].caller_leg.media
                if a is not None and b is not None and len(staying) == 1:
                    media.bridge(a, b)
                elif a is not None:
                    media.conference([a] + [p.caller_leg.media for p in staying])
                log.info("call.operator.left", call_id=call.call_id, parties=len(staying))
                return
            self.hangup(call, EndReason.LOCAL_BYE)

    # -- three-way calls ------------------------------------------------------------------------------
    def add_party(self, call: Call, number: str, *, trunk_name: str | None = None) -> Call:
        """Bring a third party (120, 110, a family number) into a call connected to an operator: when it
        answers, the three legs share a conference (each hears the other two, never itself); when it leaves,
        the elder and the operator go back to a plain bridge."""
        operator = call.linked
        if call.state is not CallState.CONFIRMED or operator is None or operator.state is not CallState.CONFIRMED:
            raise OutboundError("the call is not connected to an operator")
        third = self.ua.outbound.originate(
            number,
            trunk_name=trunk_name,
            caller_id=call.caller_number or "callcenter",
            on_answer=lambda party: self._party_joined(call, party),
            on_end=lambda party: self._party_left(call, party),
        )
        call.parties.append(third)
        log.info("call.party.calling", call_id=call.call_id, party_call_id=third.call_id, number=number)
        return third

    def _party_joined(self, call: Call, party: Call) -> None:
        operator, media = call.linked, self.media
        if media is None or operator is None or not call.active:
            return
        members = [call.caller_leg.media, operator.caller_leg.media]
        members += [p.caller_leg.media for p in call.parties if p.state is CallState.CONFIRMED]
        if all(m is not None for m in members):
            media.conference(members)
            log.info("call.conference", call_id=call.call_id, members=len(members), party_call_id=party.call_id)

    def _party_left(self, call: Call, party: Call) -> None:
        if party in call.parties:
            call.parties.remove(party)
        operator, media = call.linked, self.media
        if (operator is None or not operator.active) and call.active:
            if not any(p.state is CallState.CONFIRMED for p in call.parties):
                self.hangup(call, EndReason.LOCAL_BYE)  # nobody left to talk to
            return
        if media is None or operator is None or not call.active:
            return
        a, b = call.caller_leg.media, operator.caller_leg.media
        if a is not None and b is not None and not any(p.state is CallState.CONFIRMED for p in call.parties):
            media.bridge(a, b)
            log.info("call.conference.ended", call_id=call.call_id, party_call_id=party.call_id)

    def _start_route_media(self, call: Call, leg: Leg, route: Route | None) -> None:
        """What the caller hears once answered: the echo, or music while held; and the recording."""
        media, session = self.media, leg.media
        if media is None or session is None:
            return
        if route is not None and route.action == "echo":
            media.echo(session)
        elif route is None or route.action not in ("connect", "flow"):  # bridged by _connected; flows play
            media.music_on_hold(session)
        if self.record_calls:
            media.start_recording(session)

    def on_ack(self, call: Call, leg: Leg | None, request: Request) -> None:
        super().on_ack(call, leg, request)
        if call.state is CallState.ANSWERED:
            offer = leg.local_offer if leg is not None else None
            if offer is not None and request.body and leg is not None:
                try:
                    self.apply_negotiated(leg, parse_answer(offer, SessionDescription.parse(request.body)))
                except SdpError as exc:
                    log.warning("call.ack.bad_sdp", call_id=call.call_id, error=str(exc))
                    call.transition(CallState.CONFIRMED)
                    self.send_bye(call, leg, EndReason.FAILED)
                    return
            call.transition(CallState.CONFIRMED)
            self._confirmed(call)

    def _no_ack(self, call: Call) -> None:
        self._retransmitters.pop(call.call_id, None)
        if call.state is CallState.ANSWERED:
            log.warning("call.ack.timeout", call_id=call.call_id)
            self.send_bye(call, call.caller_leg, EndReason.TIMEOUT)

    def _on_cancel(self, call: Call, stx: ServerTransaction) -> None:
        if call.state not in (CallState.OFFERED, CallState.RINGING):
            return
        resp = self.ua.response(stx.request, 487, to_tag=call.caller_leg.local_tag)
        stx.respond(resp)
        self.counters["cancelled"] += 1
        log.info("call.cancelled", call_id=call.call_id)
        self.end(call, EndReason.CANCELLED, status=487, ended_by="remote")

    # -- hanging up --------------------------------------------------------------------------------
    def hangup(self, call: Call, reason: EndReason, *, status: int | None = None) -> None:
        if call.state in (CallState.OFFERED, CallState.RINGING):
            leg = call.caller_leg
            status = status or (503 if reason is EndReason.SHUTDOWN else 480)
            if leg.invite_tx is not None:
                leg.invite_tx.respond(self.ua.response(leg.invite_tx.request, status, to_tag=leg.local_tag))
                leg.invite_tx = None
            self.end(call, reason, status=status, ended_by="engine")
        elif call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            self.stop_retransmitting(call)  # no more 200s once we hang up
            self.send_bye(call, call.caller_leg, reason)
