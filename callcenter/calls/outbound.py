"""Outbound calls through a carrier trunk (to 120, a family number, a callback).

INVITE with our SDP offer → answer digest challenges once → ACK the 2xx ourselves (RFC 3261
§13.2.2.4) → hold until hangup. Outbound calls never take channels reserved for emergencies.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from callcenter.calls.model import Call, CallState, EndReason, Leg
from callcenter.calls.session import CallHandler
from callcenter.calls.trunks import Admission, Trunk
from callcenter.media.ports import PortsExhausted
from callcenter.sip.dialog import Dialog, new_call_id, new_tag
from callcenter.sip.digest import DigestError, authorization_for, challenge_header
from callcenter.sip.message import Headers, Request, Response
from callcenter.sip.sdp import SdpError, SessionDescription, parse_answer
from callcenter.sip.transaction import ClientTransaction
from callcenter.sip.uri import SipUri

if TYPE_CHECKING:
    from callcenter.calls.ua import UserAgentCore

log = structlog.get_logger("callcenter.calls")

Address = tuple[str, str, int]


EMERGENCY_NUMBERS = frozenset({"110", "119", "120", "122"})  # police, fire, ambulance, traffic (China)


class OutboundError(Exception):
    """The call could not be placed (no trunk, trunk busy, phone not registered, no media port)."""


@dataclass(frozen=True, slots=True)
class PhoneTarget:
    """A registered phone or terminal we call directly (looks like a trunk to the INVITE code)."""

    name: str
    transport: str
    address: tuple[str, str, int]
    username: str | None = None
    password: str | None = None


class OutboundCalls(CallHandler):
    def __init__(self, ua: UserAgentCore) -> None:
        super().__init__(ua)
        self._acks: dict[str, bytes] = {}  # call_id → the ACK we sent for its 2xx (re-sent on retransmitted 2xx)
        self._invite_tx: dict[str, ClientTransaction] = {}
        self._on_end: dict[str, Callable[[Call], None]] = {}
        self._on_answer: dict[str, Callable[[Call], None]] = {}
        self._cancelling: dict[str, EndReason] = {}  # call_id → why we CANCELled (a 2xx may still cross it)
        self.counters = {"placed": 0, "answered": 0, "failed": 0}

    def originate(
        self,
        number: str,
        *,
        trunk_name: str | None = None,
        caller_id: str = "callcenter",
        max_duration: float | None = None,
        on_end: Callable[[Call], None] | None = None,
        on_answer: Callable[[Call], None] | None = None,
        emergency: bool | None = None,
    ) -> Call:
        """Call ``number`` through a trunk. Emergency numbers (120, 110, 119, 122 by default) may use the
        channels a trunk keeps in reserve; every other outbound call leaves them free."""
        ua = self.ua
        if emergency is None:
            emergency = number in EMERGENCY_NUMBERS
        if not ua.accepting:
            raise OutboundError("the engine is shutting down")
        trunk = ua.trunks.for_outbound(trunk_name)
        if trunk is None:
            raise OutboundError(f"no outbound trunk named {trunk_name!r}" if trunk_name else "no outbound trunk")
        if trunk.admit(emergency=emergency) is not Admission.ACCEPT and not (
                emergency and ua.seize_trunk_channel(trunk, number)):
            kind = "" if emergency else "non-emergency "
            raise OutboundError(f"trunk {trunk.name} has no free {kind}channel")
        local_host = ua.local(trunk.transport)[0]
        call_id = new_call_id(local_host if ":" not in local_host else "callcenter")
        now = ua.clock.seconds()
        target = SipUri(host=trunk.host, user=number, port=trunk.port)
        if trunk.transport == "TCP":
            target.params["transport"] = "tcp"
        from_user = trunk.username or caller_id
        call = Call(
            call_id=call_id,
            direction="outbound",
            from_uri=f"sip:{from_user}@{trunk.host}",
            to_uri=str(target),
            caller_number=caller_id,
            caller_display=None,
            dialled=number,
            source=trunk.address,
            started_at=now,
            trunk=trunk.name,
            emergency=emergency,
        )
        self._prepare(call, trunk.address, on_answer, on_end)
        trunk.active_calls.add(call_id)
        ua.call_started(call)
        log.info("call.outbound.placing", call_id=call_id, number=number, trunk=trunk.name)
        self._send_invite(call, trunk, cseq=1, auth=None, max_duration=max_duration)
        return call

    def call_phone(
        self,
        account: str,
        *,
        caller_number: str,
        caller_display: str | None = None,
        ring_timeout: float = 30.0,
        on_answer: Callable[[Call], None] | None = None,
        on_end: Callable[[Call], None] | None = None,
    ) -> Call:
        """Ring a registered phone (an operator's desk phone, a terminal) with the caller's number shown."""
        ua = self.ua
        contacts = ua.lookup_contacts(account)
        if not contacts:
            raise OutboundError(f"{account} is not registered")
        contact, address = contacts[0]
        target = PhoneTarget(name=account, transport=address[0], address=address)
        call_id = new_call_id(ua.local(address[0])[0] if ":" not in ua.local(address[0])[0] else "callcenter")
        display = caller_display or caller_number
        call = Call(
            call_id=call_id,
            direction="outbound",
            from_uri=f"sip:{caller_number or 'anonymous'}@{ua.domain}",
            to_uri=contact,
            caller_number=caller_number,
            caller_display=display,
            dialled=account,
            source=address,
            started_at=ua.clock.seconds(),
        )
        self._prepare(call, address, on_answer, on_end)
        ua.call_started(call)
        log.info("call.phone.ringing", call_id=call_id, account=account, contact=contact)
        call.timers["ring_timeout"] = ua.clock.callLater(ring_timeout, self._ring_timeout, call)
        self._send_invite(call, target, cseq=1, auth=None, max_duration=None, display=display)
        return call

    def _prepare(
        self,
        call: Call,
        address: Address,
        on_answer: Callable[[Call], None] | None,
        on_end: Callable[[Call], None] | None,
    ) -> None:
        """The callee leg with its RTP port and our SDP offer, and the caller's callbacks."""
        leg = Leg(role="callee", remote_address=address, local_tag=new_tag())
        try:
            leg.media = self.open_media(call, "callee")
        except PortsExhausted as exc:
            raise OutboundError("no free media port for the call") from exc
        call.legs.append(leg)
        self.local_offer(leg)
        if on_answer is not None:
            self._on_answer[call.call_id] = on_answer
        if on_end is not None:
            self._on_end[call.call_id] = on_end
        self.counters["placed"] += 1

    def _ring_timeout(self, call: Call) -> None:
        call.timers.pop("ring_timeout", None)
        if call.state in (CallState.OFFERED, CallState.RINGING):
            log.info("call.phone.no_answer", call_id=call.call_id)
            self.hangup(call, EndReason.TIMEOUT)

    def _send_invite(
        self,
        call: Call,
        trunk: Trunk | PhoneTarget,
        *,
        cseq: int,
        auth: tuple[str, str] | None,
        max_duration: float | None,
        display: str | None = None,
    ) -> None:
        ua = self.ua
        leg = call.caller_leg
        headers = Headers()
        headers.add("Via", str(ua.new_via(trunk.transport)))
        headers.add("Max-Forwards", "70")
        name = f'"{display}" ' if display and '"' not in display and "\\" not in display else ""
        headers.add("From", f"{name}<{call.from_uri}>;tag={leg.local_tag}")
        headers.add("To", f"<{call.to_uri}>")
        headers.add("Call-ID", call.call_id)
        headers.add("CSeq", f"{cseq} INVITE")
        headers.add("Contact", ua.contact(trunk.username or call.caller_number, trunk.transport))
        headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")
        headers.add("User-Agent", ua.user_agent)
        if auth is not None:
            headers.add(auth[0], auth[1])
        headers.add("Content-Type", "application/sdp")
        invite = Request(
            method="INVITE", uri=SipUri.parse(call.to_uri), headers=headers, body=bytes(leg.local_offer)
        )

        def on_response(resp: Response) -> None:
            self._on_invite_response(call, trunk, invite, resp, retried=auth is not None, max_duration=max_duration)

        def on_timeout() -> None:
            self._invite_tx.pop(call.call_id, None)
            if call.state in (CallState.OFFERED, CallState.RINGING):
                self.counters["failed"] += 1
                self.end(call, EndReason.TIMEOUT, status=408, ended_by="remote")

        self._invite_tx[call.call_id] = ua.txl.send_request(
            invite, trunk.address, on_response=on_response, on_timeout=on_timeout
        )

    def _on_invite_response(
        self,
        call: Call,
        trunk: Trunk | PhoneTarget,
        invite: Request,
        resp: Response,
        *,
        retried: bool,
        max_duration: float | None,
    ) -> None:
        status = resp.status
        leg = call.caller_leg
        if status < 200:
            if status in (180, 183) and call.state is CallState.OFFERED:
                call.transition(CallState.RINGING)
            return
        self._invite_tx.pop(call.call_id, None)
        if status < 300:
            self._on_answered(call, invite, resp, max_duration)
            return
        hung_up = call.call_id in self._cancelling
        if status in (401, 407) and not retried and trunk.username and trunk.password and call.active and not hung_up:
            try:
                auth = authorization_for(
                    status,
                    resp.headers.get_all(challenge_header(status)),
                    method="INVITE",
                    uri=str(invite.uri),
                    username=trunk.username,
                    password=trunk.password,
                    cnonce=secrets.token_hex(8),
                )
            except DigestError as exc:
                log.warning("call.outbound.auth_error", call_id=call.call_id, error=str(exc))
            else:
                self._send_invite(
                    call,
                    trunk,
                    cseq=invite.cseq.number + 1,
                    auth=auth,
                    max_duration=max_duration,
                )
                return
        self.counters["failed"] += 1
        log.info("call.outbound.failed", call_id=call.call_id, status=status, reason=resp.reason)
        if call.active:
            leg.invite_tx = None
            reason = EndReason.CANCELLED if status == 487 or hung_up else EndReason.FAILED
            self.end(call, reason, status=status, ended_by="remote")

    def _on_answered(self, call: Call, invite: Request, resp: Response, max_duration: float | None) -> None:
        ua = self.ua
        leg = call.caller_leg
        if leg.dialog is None:
            leg.dialog = Dialog.from_uac(invite, resp)
        # §13.2.2.4: the ACK carries the INVITE's CSeq number and the same credentials.
        credentials = [(name, value) for name in ("Authorization", "Proxy-Authorization")
                       if (value := invite.headers.get(name)) is not None]
        ack = leg.dialog.create_request("ACK", ua.new_via(leg.remote_address[0] if leg.remote_address else "UDP"),
                                        cseq=invite.cseq.number, extra=credentials)
        dest = self.dialog_destination(leg)
        data = bytes(ack)
        self._acks[call.call_id] = data
        ua.send(data, dest)
        if call.state not in (CallState.OFFERED, CallState.RINGING):
            return
        cancelled = self._cancelling.pop(call.call_id, None)
        if cancelled is not None:  # the 2xx crossed our CANCEL: ACK it, then BYE (§9.1, §15)
            call.transition(CallState.ANSWERED)
            call.transition(CallState.CONFIRMED)
            self.send_bye(call, leg, cancelled)
            return
        try:
            self.apply_negotiated(leg, parse_answer(leg.local_offer, SessionDescription.parse(resp.body)))
        except SdpError as exc:
            log.warning("call.outbound.bad_answer", call_id=call.call_id, error=str(exc))
            call.transition(CallState.ANSWERED)
            call.transition(CallState.CONFIRMED)
            self.send_bye(call, leg, EndReason.FAILED)
            return
        call.transition(CallState.ANSWERED)
        call.transition(CallState.CONFIRMED)
        call.answered_at = ua.clock.seconds()
        call.sip_status = resp.status
        self.counters["answered"] += 1
        self.arm_max_duration(call, max_duration)
        ring = call.timers.pop("ring_timeout", None)
        if ring is not None and ring.active():
            ring.cancel()
        log.info("call.outbound.answered", call_id=call.call_id, codec=leg.codec)
        on_answer = self._on_answer.pop(call.call_id, None)
        if on_answer is not None:
            on_answer(call)
        elif self.record_calls and self.media is not None and leg.media is not None:
            self.media.start_recording(leg.media)
        ua.call_answered(call)

    def on_stray_response(self, response: Response, source: Address) -> None:
        """A retransmitted 2xx for an INVITE whose transaction is gone: ACK it again (§13.2.2.4)."""
        try:
            is_invite_2xx = 200 <= response.status < 300 and response.cseq.method == "INVITE"
        except Exception:
            return
        if is_invite_2xx:
            ack = self._acks.get(response.call_id)
            if ack is not None:
                self.ua.send(ack, source)

    def hangup(self, call: Call, reason: EndReason) -> None:
        if call.state in (CallState.OFFERED, CallState.RINGING):
            tx = self._invite_tx.get(call.call_id)
            if tx is not None:
                self._cancelling[call.call_id] = reason
                self.ua.txl.cancel(tx)  # the 487 ends the call
            else:
                self.end(call, reason, ended_by="engine")
        elif call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            self.send_bye(call, call.caller_leg, reason)

    def end(self, call: Call, reason: EndReason, *, status: int | None = None, ended_by: str | None = None) -> None:
        self._invite_tx.pop(call.call_id, None)
        self._cancelling.pop(call.call_id, None)
        callback = self._on_end.pop(call.call_id, None)
        self._on_answer.pop(call.call_id, None)
        super().end(call, reason, status=status, ended_by=ended_by)
        # Keep the ACK a little while for retransmitted 2xx, then forget it.
        self.ua.clock.callLater(32, self._acks.pop, call.call_id, None)
        if callback is not None:
            callback(call)

