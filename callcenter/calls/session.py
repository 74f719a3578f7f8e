"""What inbound and outbound calls share: in-dialog requests, hanging up with BYE, ending a call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from callcenter.calls.model import Call, CallState, EndReason, Leg
from callcenter.media.dtmf import DtmfDigit, parse_dtmf_info
from callcenter.media.session import Negotiated
from callcenter.sip.dialog import DialogState
from callcenter.sip.message import Request, Response
from callcenter.sip.sdp import NegotiatedMedia, NoCommonCodec, SdpError, SessionDescription, build_offer, negotiate
from callcenter.sip.transaction import InviteOkRetransmitter, ServerTransaction
from callcenter.sip.uri import SipUri, parse_name_addr

if TYPE_CHECKING:
    from callcenter.calls.ua import UserAgentCore


class CallMedia(Protocol):
    """What call handling needs from the media room (callcenter.media.service.MediaService)."""

    def open_leg(self, call_id: str, role: str) -> Any: ...
    def close_leg(self, session: Any) -> None: ...
    def music_on_hold(self, session: Any) -> Any: ...
    def echo(self, session: Any) -> Any: ...
    def bridge(self, caller: Any, other: Any) -> Any: ...
    def start_recording(self, caller: Any) -> Any: ...
    def inject_digit(self, session: Any, digit: DtmfDigit) -> None: ...
    def remote_hold(self, session: Any, held: bool) -> None: ...

log = structlog.get_logger("callcenter.calls")

Address = tuple[str, str, int]


class CallHandler:
    """Base of :class:`InboundCalls` and :class:`OutboundCalls`."""

    def __init__(self, ua: UserAgentCore) -> None:
        self.ua = ua
        self.media: CallMedia | None = None
        self.media_address = "127.0.0.1"
        self.record_calls = False
        self.max_call_duration: float = 3600.0
        # 2xx responses to INVITEs (initial or re-INVITE) waiting for their ACK, by call id.
        self._retransmitters: dict[str, InviteOkRetransmitter] = {}

    # -- media ------------------------------------------------------------------------------------
    def open_media(self, call: Call, role: str) -> Any:
        """An RTP leg for ``call`` (None when the engine runs without media, as unit tests may)."""
        return self.media.open_leg(call.call_id, role) if self.media is not None else None

    def close_media(self, leg: Leg) -> None:
        if leg.media is not None and self.media is not None:
            self.media.close_leg(leg.media)
        leg.media = None

    def apply_negotiated(self, leg: Leg, negotiated: NegotiatedMedia) -> None:
        """Offer/answer settled (initial, ACK of a late offer, re-INVITE): tell the leg's RTP session."""
        leg.codec = negotiated.codec
        leg.remote_media = (negotiated.remote_address, negotiated.remote_port)
        held = negotiated.direction in ("recvonly", "inactive")  # our side of it: the peer holds us
        if held != leg.held:
            leg.held = held
            if leg.media is not None and self.media is not None:
                self.media.remote_hold(leg.media, held)
        if leg.media is not None:
            leg.media.configure(
                Negotiated(
                    codec=negotiated.codec,
                    payload_type=negotiated.payload_type,
                    telephone_event_pt=negotiated.telephone_event_pt,
                    remote=(negotiated.remote_address, negotiated.remote_port),
                    direction=negotiated.direction,
                )
            )

    def local_offer(self, leg: Leg) -> bytes:
        """Our SDP offer for ``leg`` (late-offer INVITE, offerless re-INVITE, outbound call), remembered so the
        answer can be checked against it; each offer gets the next session version."""
        offer = build_offer(
            self.media_address,
            getattr(leg.media, "port", 9),
            session_id=leg.sdp_session_id,
            session_version=leg.next_sdp_version(),
        )
        leg.local_offer = offer
        return bytes(offer)

    def sdp_answer(self, call: Call, leg: Leg, offer_body: bytes) -> bytes:
        """Negotiate an offer for ``leg``; raises SdpError / NoCommonCodec."""
        offer = SessionDescription.parse(offer_body)
        port = getattr(leg.media, "port", 0) or 9
        answer = negotiate(
            offer,
            local_address=self.media_address,
            local_port=port,
            session_id=leg.sdp_session_id,
            session_version=leg.next_sdp_version(),
        )
        self.apply_negotiated(leg, answer)
        return bytes(answer.sdp)

    # -- signalling destinations -------------------------------------------------------------------
    def dialog_destination(self, leg: Leg) -> Address:
        """Where in-dialog requests go: the first route, else where the peer talked to us from."""
        dialog = leg.dialog
        assert leg.remote_address is not None
        if dialog is not None and dialog.route_set:
            uri = parse_name_addr(dialog.route_set[0]).uri
            if isinstance(uri, SipUri):
                transport = uri.transport.upper() if "transport" in uri.params else leg.remote_address[0]
                return (transport, uri.bare_host, uri.default_port())
        return leg.remote_address

    # -- in-dialog requests from the peer ------------------------------------------------------------
    def on_in_dialog(self, call: Call, request: Request, stx: ServerTransaction | None, source: Address) -> None:
        leg = self.leg_for(call, request)
        method = request.method
        if method == "ACK":
            self.on_ack(call, leg, request)
            return
        assert stx is not None
        if leg is None or leg.dialog is None:
            stx.respond(self.ua.response(request, 481))
            return
        if not leg.dialog.accept_remote_cseq(request):
            stx.respond(self.ua.response(request, 500, "Server Internal Error (CSeq out of order)"))
            return
        if method == "BYE":
            stx.respond(self.ua.response(request, 200))
            log.info("call.bye.received", call_id=call.call_id)
            self.end(call, EndReason.CALLER_BYE, ended_by="remote")
        elif method == "INVITE":
            self.on_reinvite(call, leg, request, stx)
        elif method == "INFO":
            self.on_info(call, leg, request, stx)
        elif method in ("OPTIONS", "UPDATE"):
            stx.respond(self.ua.response(request, 200))
        else:
            stx.respond(self.ua.response(request, 501))

    def on_info(self, call: Call, leg: Leg, request: Request, stx: ServerTransaction) -> None:
        """SIP INFO: DTMF relay (application/dtmf-relay, application/dtmf) goes to the leg's digit listeners
        (a bad body: 400); an empty INFO (a keep-alive) gets 200; other bodies 415 with what we accept."""
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type in ("application/dtmf-relay", "application/dtmf"):
            digit = parse_dtmf_info(content_type, request.body)
            if digit is None:
                stx.respond(self.ua.response(request, 400, "Bad Request (unreadable DTMF body)"))
                return
            if leg.media is not None and self.media is not None:
                self.media.inject_digit(leg.media, digit)
            log.info("call.dtmf.info", call_id=call.call_id, digit=digit.digit)
        elif request.body:
            resp = self.ua.response(request, 415)
            resp.headers.add("Accept", "application/dtmf-relay, application/dtmf")
            stx.respond(resp)
            return
        stx.respond(self.ua.response(request, 200))

    def leg_for(self, call: Call, request: Request) -> Leg | None:
        from_tag, to_tag = request.from_.tag, request.to.tag
        for leg in call.legs:
            d = leg.dialog
            if d is not None and d.remote_tag == from_tag and d.local_tag == to_tag:
                return leg
        return None

    def on_ack(self, call: Call, leg: Leg | None, request: Request) -> None:
        """ACK for a 2xx we sent: stop retransmitting it. Subclasses that answer calls extend this."""
        retransmitter = self._retransmitters.pop(call.call_id, None)
        if retransmitter is not None:
            retransmitter.ack_received()

    def retransmit_ok_until_ack(self, call: Call, stx: ServerTransaction, on_give_up: Callable[[], None]) -> None:
        """RFC 3261 §13.3.1.4: the UAS core retransmits a 2xx to INVITE until the ACK arrives (over UDP; on
        TCP only the 64*T1 deadline applies). Through the layer: same destination as the first 2xx, its T1/T2."""
        self.stop_retransmitting(call)
        self._retransmitters[call.call_id] = self.ua.txl.start_ok_retransmitter(
            stx, on_give_up=on_give_up, retransmit=stx.source[0] == "UDP"
        )

    def stop_retransmitting(self, call: Call) -> None:
        retransmitter = self._retransmitters.pop(call.call_id, None)
        if retransmitter is not None:
            retransmitter.stop()

    def on_reinvite(self, call: Call, leg: Leg, request: Request, stx: ServerTransaction) -> None:
        if call.state not in (CallState.CONFIRMED, CallState.ANSWERED):
            stx.respond(self.ua.response(request, 491))
            return
        assert leg.dialog is not None
        resp = self.ua.response(request, 200, to_tag=leg.dialog.local_tag)
        if not request.body:
            # An offerless re-INVITE asks us to offer (RFC 3264 §8); the answer comes in the ACK.
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = self.local_offer(leg)
        else:
            try:
                body = self.sdp_answer(call, leg, request.body)
            except NoCommonCodec:
                stx.respond(self.ua.response(request, 488))
                return
            except SdpError as exc:
                stx.respond(self.ua.response(request, 400, f"Bad Request (SDP: {exc})"))
                return
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        leg.dialog.update_target(request)
        resp.headers.add("Contact", leg.dialog.local_contact)
        stx.respond(resp)
        self.retransmit_ok_until_ack(call, stx, on_give_up=lambda: self._reinvite_not_acked(call, leg))
        log.info("call.reinvite", call_id=call.call_id)

    def _reinvite_not_acked(self, call: Call, leg: Leg) -> None:
        self._retransmitters.pop(call.call_id, None)
        if call.state is CallState.CONFIRMED:
            log.warning("call.reinvite.ack_timeout", call_id=call.call_id)
            self.send_bye(call, leg, EndReason.TIMEOUT)

    # -- hanging up --------------------------------------------------------------------------------
    def send_bye(self, call: Call, leg: Leg, reason: EndReason) -> None:
        dialog = leg.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            self.end(call, reason, ended_by="engine")
            return
        dest = self.dialog_destination(leg)
        bye = dialog.create_request("BYE", self.ua.new_via(dest[0]))
        bye.headers.add("User-Agent", self.ua.user_agent)
        dialog.transition(DialogState.TERMINATED)
        call.transition(CallState.ENDING)
        log.info("call.bye.sent", call_id=call.call_id, reason=reason.value)

        def done(_: Response | None = None) -> None:
            if call.state is CallState.ENDING:
                self.end(call, reason, ended_by="engine")

        def on_response(resp: Response) -> None:
            if resp.status >= 200:
                done()

        self.ua.txl.send_request(bye, dest, on_response=on_response, on_timeout=done)

    def end(self, call: Call, reason: EndReason, *, status: int | None = None, ended_by: str | None = None) -> None:
        if call.state is CallState.ENDED:
            return
        self.stop_retransmitting(call)
        call.cancel_timers()
        for leg in call.legs:
            self.close_media(leg)
            if leg.dialog is not None and leg.dialog.state is not DialogState.TERMINATED:
                leg.dialog.transition(DialogState.TERMINATED)
        call.transition(CallState.ENDED)
        linked, call.linked = call.linked, None
        if linked is not None and linked.active and call.direction == "inbound":
            # The caller left: ring off / hang up the phone we connected it to. (The other way round, the
            # inbound handler's on_end callback decides, because an unanswered phone maps to 486/480.)
            linked.linked = None
            self.ua.outbound.hangup(linked, EndReason.LOCAL_BYE)
        for party in list(call.parties):  # the elder left a three-way call: end the third party's leg too
            if party.active:
                self.ua.outbound.hangup(party, EndReason.LOCAL_BYE)
        call.ended_at = self.ua.clock.seconds()
        call.end_reason = reason
        if status is not None:
            call.sip_status = status
        call.ended_by = ended_by
        duration = call.ended_at - (call.answered_at or call.ended_at)
        log.info(
            "call.ended",
            call_id=call.call_id,
            reason=reason.value,
            sip_status=call.sip_status,
            talk_seconds=round(duration, 3),
            direction=call.direction,
        )
        self.ua.call_ended(call)

    def arm_max_duration(self, call: Call, seconds: float | None) -> None:
        limit = seconds or self.max_call_duration
        call.timers["max_duration"] = self.ua.clock.callLater(limit, self._max_duration, call)

    def _max_duration(self, call: Call) -> None:
        call.timers.pop("max_duration", None)
        log.info("call.max_duration", call_id=call.call_id)
        self.hangup(call, EndReason.MAX_DURATION)

    def hangup(self, call: Call, reason: EndReason) -> None:
        raise NotImplementedError

