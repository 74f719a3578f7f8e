"""The browser softphone as an operator's telephone: the other device behind :class:`SipConnector`.

An operator whose ``device`` is "browser" is rung on the desktop instead of a desk phone. The page keeps one
WebRTC media leg open (``connect``: the offer from ``POST /api/desk/webrtc``); an offer "rings" by the desktop's
pop and ring sound (the ``offer`` push event) and is answered with a click (``answer``), which bridges the
caller's RTP leg with the operator's WebRTC leg. Everything else is what a desk phone gets:

* the ring timer (the connector's ``ring_timeout``) reports a missed offer, "no_answer"; refusing it
  (``decline``) is a miss too, "busy"; a softphone that is not connected is unreachable (the operator is
  paused ``phone_unreachable``, as for a desk phone that cannot be reached);
* hanging up (``hangup``) ends the conversation like the desk phone's BYE: wrap-up for the operator, and the
  elder's call ends unless 120 or family stay in a three-way call;
* pre-emption (``preempted``) takes the operator off the call: the caller hears why and waits at the head of
  the line, the operator's softphone rings with the emergency;
* a browser that goes away while talking (its peer connection failed or closed) gets ``reconnect_grace``
  seconds to come back (a page reload does exactly that: a new offer takes over the running call); after that
  it is a lost phone: the operator is paused ``phone_lost`` and the caller waits again at the head of the line.

Calls the operator places on the softphone (callbacks: the dialler calls the elder through a trunk, no desk phone
rings) are conversations too (:meth:`start_outbound` … :meth:`end_outbound`): :meth:`talking_call` gives the
elder's call id from the moment it is dialled, so the desktop's hang-up (:meth:`hangup`) and call control work on
it; the elder is bridged with the softphone when they answer; hanging up, or a browser that does not come back
within the grace, ends the call through the dialler (``hang_up``), which does the task's bookkeeping.

The leg lives as long as the page, across calls: between calls it sends silence and what it receives goes
nowhere. The caller's ``Call.linked`` stays None (there is no SIP call on the operator's side):
:meth:`talking_call`, :meth:`operator_for` and :meth:`leg` say who talks with whom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from callcenter.acd.model import CallState, Offer
from callcenter.acd.telephony import OPERATOR_LOST, SipConnector
from callcenter.calls.model import CallState as SipCallState
from callcenter.calls.model import EndReason
from callcenter.media.webrtc import WebRtcGateway, WebRtcLeg

log = structlog.get_logger("callcenter.acd")

RECONNECT_GRACE = 10.0  # seconds a talking operator's browser has to come back before the call is requeued


@dataclass(eq=False)
class OutboundTalk:
    """A call the operator placed on the softphone: the far end's call id and how to end it."""

    call_id: str
    hang_up: Callable[[], None]  # ends the call the way its owner (the callback dialler) wants
    kind: str = "callback"
    answered: bool = False


class Softphones:
    """Operator name → their browser's current :class:`WebRtcLeg`, and the offers and conversations on it."""

    def __init__(self, connector: SipConnector, gateway: WebRtcGateway, *,
                 reconnect_grace: float = RECONNECT_GRACE) -> None:
        self.connector = connector
        self.gateway = gateway
        self.reconnect_grace = reconnect_grace
        self.legs: dict[str, WebRtcLeg] = {}
        self.offers: dict[str, Offer] = {}  # operator → the offer ringing on their desktop
        self.talking: dict[str, str] = {}  # operator → the caller's call id
        self.outbound: dict[str, OutboundTalk] = {}  # operator → the call they placed (a callback)
        self._ring_timers: dict[str, Any] = {}  # operator → the ring timer of their offer
        self._grace: dict[str, Any] = {}  # operator → timer: the browser went away mid-call
        connector.softphones = self

    @property
    def acd(self) -> Any:
        assert self.connector.acd is not None
        return self.connector.acd

    @property
    def media(self) -> Any:
        return self.connector.media

    @property
    def clock(self) -> Any:
        return self.connector.ua.clock

    # -- the media leg ---------------------------------------------------------------------------------------
    async def connect(self, operator: str, offer_sdp: str) -> str:
        """Answer the browser's offer (raises KeyError for an unknown operator, WebRtcError for a bad offer).
        A newer leg replaces the older one and takes over a running call."""
        if operator not in self.acd.operators:
            raise KeyError(f"no operator named {operator!r}")
        answer, leg = await self.gateway.answer(offer_sdp, label=f"softphone:{operator}",
                                                on_gone=lambda gone: self._gone(operator, gone))
        self.media.adopt_leg(leg)
        old = self.legs.get(operator)
        self.legs[operator] = leg
        taken_over = False
        if old is not None:
            taken_over = self.media.replace_leg(old, leg)
            self.media.close_leg(old)
        caller_id = self.talking_call(operator)
        grace = self._grace.pop(operator, None)
        if grace is not None and grace.active():
            grace.cancel()
        placed = self.outbound.get(operator)
        if caller_id is not None and not taken_over and (placed is None or placed.answered):
            self._bridge(caller_id, leg)  # the old leg had gone: the caller waited with music meanwhile
        log.info("acd.softphone.connected", operator=operator, call_id=caller_id, codec=leg.browser_codec,
                 replaced=old is not None)
        return answer

    def connected(self, operator: str) -> bool:
        leg = self.legs.get(operator)
        return leg is not None and not leg.closed

    def leg(self, operator: str) -> WebRtcLeg | None:
        return self.legs.get(operator)

    def _bridge(self, caller_id: str, leg: WebRtcLeg) -> bool:
        caller = self.connector.ua.calls.get(caller_id)
        session = caller.caller_leg.media if caller is not None and caller.active else None
        if session is None or not self.media.is_open(session):
            return False
        self.media.bridge(session, leg)
        return True

    def _gone(self, operator: str, leg: WebRtcLeg) -> None:
        """The browser's peer connection failed or was closed from its side."""
        if self.legs.get(operator) is not leg:
            return  # an older leg, already replaced
        del self.legs[operator]
        self.media.close_leg(leg)
        offer = self.offers.get(operator)
        if offer is not None:
            self._forget_offer(operator)
            self.connector._unreachable(offer, "browser softphone went away")
        caller_id = self.talking_call(operator)
        log.warning("acd.softphone.gone", operator=operator, call_id=caller_id)
        if caller_id is None:
            return
        placed = self.outbound.get(operator)
        caller = self.connector.ua.calls.get(caller_id)
        session = caller.caller_leg.media if caller is not None and caller.active else None
        if session is not None and self.media.is_open(session) and (placed is None or placed.answered):
            self.media.music_on_hold(session)  # rather than dead air while the page comes back
        if self.reconnect_grace > 0:
            self._grace[operator] = self.clock.callLater(self.reconnect_grace, self._lost, operator, caller_id)
        else:
            self._lost(operator, caller_id)

    def _lost(self, operator: str, caller_id: str) -> None:
        """The browser did not come back: like a desk phone that stopped answering (SipConnector._phone_ended)."""
        self._grace.pop(operator, None)
        placed = self.outbound.get(operator)
        if placed is not None and placed.call_id == caller_id:
            del self.outbound[operator]
            log.warning("acd.softphone.lost", call_id=caller_id, operator=operator, kind=placed.kind)
            self.acd.set_state(operator, "paused", "phone_lost")  # applied when the call is over
            placed.hang_up()
            return
        if self.talking.get(operator) != caller_id:
            return
        del self.talking[operator]
        queued = self.acd.calls.get(caller_id)
        caller = self.connector.ua.calls.get(caller_id)
        log.warning("acd.softphone.lost", call_id=caller_id, operator=operator)
        if queued is None:
            return
        if caller is not None and caller.active:
            self.acd.operator_lost(caller_id)
            self.connector._say(queued, caller, OPERATOR_LOST, then="music")
        else:
            self.acd.conversation_ended(caller_id)

    # -- offers ---------------------------------------------------------------------------------------------
    def ring(self, offer: Offer) -> None:
        """SipConnector.ring for a browser operator: the desktop shows the offer until answered, refused or
        timed out."""
        name = offer.operator.name
        if not self.connected(name):
            self.connector._unreachable(offer, "browser softphone not connected")
            return
        self._forget_offer(name)
        self.offers[name] = offer
        offer.handle = self.legs[name]
        self._ring_timers[name] = self.clock.callLater(self.connector.ring_timeout, self._ring_timeout, offer)
        log.info("acd.softphone.ringing", call_id=offer.call.call_id, operator=name, offer_id=offer.id,
                 emergency=offer.call.emergency)

    def _ring_timeout(self, offer: Offer) -> None:
        name = offer.operator.name
        self._ring_timers.pop(name, None)
        if self.offers.get(name) is offer:
            del self.offers[name]
            log.info("acd.softphone.not_answered", call_id=offer.call.call_id, operator=name)
            self.acd.not_answered(offer, "no_answer")

    def _forget_offer(self, operator: str) -> None:
        self.offers.pop(operator, None)
        timer = self._ring_timers.pop(operator, None)
        if timer is not None and timer.active():
            timer.cancel()

    def stop_ringing(self, offer: Offer) -> None:
        """The distributor withdrew the offer (taken elsewhere, caller gone, seized, reservation expired)."""
        if self.offers.get(offer.operator.name) is offer:
            self._forget_offer(offer.operator.name)

    def ringing(self, operator: str) -> Offer | None:
        offer = self.offers.get(operator)
        if offer is not None and self.acd.offers.get(offer.id) is not offer:
            self._forget_offer(operator)  # withdrawn without telling us: never show a stale offer
            return None
        return offer

    def answer(self, operator: str, offer_id: int) -> bool:
        """The operator clicked answer: bridge the caller with the softphone. False when that offer is not
        ringing for this operator (any more), the softphone is not connected, or the caller is gone."""
        offer = self.ringing(operator)
        if offer is None or offer.id != offer_id or not self.connected(operator):
            return False
        caller = self.connector._caller(offer.call)
        session = caller.caller_leg.media if caller is not None else None
        if caller is None or session is None or not self.media.is_open(session):
            self._forget_offer(operator)
            self.acd.leave(offer.call.call_id, "caller_hangup", fire=False)
            return False
        self._forget_offer(operator)
        self.media.bridge(session, self.legs[operator])
        self.talking[operator] = caller.call_id
        log.info("acd.softphone.answered", call_id=caller.call_id, operator=operator, offer_id=offer_id)
        self.acd.answered(offer)
        return True

    def decline(self, operator: str) -> bool:
        """The operator refused the ringing offer: a miss ("busy"), the call keeps its place."""
        offer = self.ringing(operator)
        if offer is None:
            return False
        self._forget_offer(operator)
        log.info("acd.softphone.declined", call_id=offer.call.call_id, operator=operator, offer_id=offer.id)
        self.acd.not_answered(offer, "busy")
        return True

    # -- conversations --------------------------------------------------------------------------------------
    def talking_call(self, operator: str) -> str | None:
        """The caller's call id while this operator talks on the softphone (None otherwise); for a call the
        operator placed (a callback), the far end's call id from the moment it is dialled."""
        placed = self.outbound.get(operator)
        if placed is not None:
            return placed.call_id
        caller_id = self.talking.get(operator)
        if caller_id is None:
            return None
        call = self.acd.calls.get(caller_id)
        if call is None or call.state is not CallState.CONNECTED or call.operator is None \
                or call.operator.name != operator:
            del self.talking[operator]  # ended meanwhile (the caller hung up, a transfer): forget it
            return None
        return caller_id

    def talking_kind(self, operator: str) -> str | None:
        """What the operator's softphone conversation is: "queue" (a call they answered), the placed call's kind
        ("callback"), or None when they talk on nothing."""
        placed = self.outbound.get(operator)
        if placed is not None:
            return placed.kind
        return "queue" if self.talking_call(operator) is not None else None

    def talking_calls(self) -> list[str]:
        names = [*self.talking, *self.outbound]
        return [c for c in (self.talking_call(name) for name in names) if c is not None]

    def operator_for(self, caller_id: str) -> str | None:
        """The operator talking with this caller (or called party) on a softphone."""
        for name in [*self.outbound, *self.talking]:
            if self.talking_call(name) == caller_id:
                return name
        return None

    def hangup(self, operator: str) -> bool:
        """The operator ended the conversation: like a desk phone's BYE (wrap-up; the elder's call ends unless
        third parties stay); a call the operator placed ends through its owner. False when the operator is not
        talking on the softphone."""
        placed = self.outbound.pop(operator, None)
        if placed is not None:
            self._cancel_grace(operator)
            leg = self.legs.get(operator)
            if leg is not None:
                self.media.detach_leg(leg)
            log.info("acd.operator.hung_up", call_id=placed.call_id, operator=operator, device="browser",
                     kind=placed.kind)
            placed.hang_up()
            return True
        caller_id = self.talking_call(operator)
        if caller_id is None:
            return False
        del self.talking[operator]
        self._cancel_grace(operator)
        leg = self.legs.get(operator)
        if leg is not None:
            self.media.detach_leg(leg)
        log.info("acd.operator.hung_up", call_id=caller_id, operator=operator, device="browser")
        self.acd.conversation_ended(caller_id)
        caller = self.connector.ua.calls.get(caller_id)
        if caller is not None and caller.active:
            self._operator_left(caller)
        return True

    def _operator_left(self, caller: Any) -> None:
        """What ua.inbound.callee_ended does for an answered caller when the operator's phone hangs up: 120 or
        family stay with the elder in a three-way call, else the elder's call ends."""
        staying = [p for p in caller.parties if p.state is SipCallState.CONFIRMED]
        session = caller.caller_leg.media
        if staying and session is not None and self.media.is_open(session):
            others = [p.caller_leg.media for p in staying if p.caller_leg.media is not None]
            if len(others) == 1:
                self.media.bridge(session, others[0])
            elif others:
                self.media.conference([session, *others])
            log.info("call.operator.left", call_id=caller.call_id, parties=len(staying))
            return
        self.connector.ua.inbound.hangup(caller, EndReason.LOCAL_BYE)

    def preempted(self, caller_id: str) -> None:
        """An emergency takes the operator talking with this caller: unbridge them (the connector tells the
        caller and the distributor rings the operator with the emergency)."""
        operator = next((name for name in list(self.talking) if self.talking_call(name) == caller_id), None)
        if operator is None:
            return
        del self.talking[operator]
        self._cancel_grace(operator)
        leg = self.legs.get(operator)
        if leg is not None:
            self.media.detach_leg(leg)
        log.info("acd.softphone.preempted", call_id=caller_id, operator=operator)

    def _cancel_grace(self, operator: str) -> None:
        timer = self._grace.pop(operator, None)
        if timer is not None and timer.active():
            timer.cancel()

    # -- calls the operator places (callbacks) ------------------------------------------------------------------
    def start_outbound(self, operator: str, call_id: str, hang_up: Callable[[], None], *,
                       kind: str = "callback") -> None:
        """The operator's softphone is on the call ``call_id`` being placed (the dialler rings the elder): until
        :meth:`end_outbound` it is their conversation; :meth:`hangup` and a browser lost for good call ``hang_up``."""
        self.outbound[operator] = OutboundTalk(call_id, hang_up, kind)
        log.info("acd.softphone.placing", call_id=call_id, operator=operator, kind=kind)

    def outbound_answered(self, operator: str, call_id: str) -> bool:
        """The far end answered: bridge it with the softphone (with music while a browser that went away may
        still come back). False when the softphone is no longer on that call (the operator hung up meanwhile)."""
        placed = self.outbound.get(operator)
        if placed is None or placed.call_id != call_id:
            return False
        placed.answered = True
        leg = self.legs.get(operator)
        if leg is not None and not leg.closed and self._bridge(call_id, leg):
            log.info("acd.softphone.answered", call_id=call_id, operator=operator, kind=placed.kind)
            return True
        call = self.connector.ua.calls.get(call_id)
        session = call.caller_leg.media if call is not None and call.active else None
        if session is not None and self.media.is_open(session):
            self.media.music_on_hold(session)  # the browser is away within its grace: the elder waits with music
        return True

    def end_outbound(self, operator: str, call_id: str) -> None:
        """The placed call ended (either side): the softphone leaves it and stays for the next call."""
        placed = self.outbound.get(operator)
        if placed is None or placed.call_id != call_id:
            return
        del self.outbound[operator]
        self._cancel_grace(operator)
        leg = self.legs.get(operator)
        if leg is not None:
            self.media.detach_leg(leg)
        log.info("acd.softphone.call_ended", call_id=call_id, operator=operator, kind=placed.kind)

    # -- life cycle -----------------------------------------------------------------------------------------
    def views(self) -> dict[str, dict[str, Any]]:
        """Per operator with a softphone: connected, codec, peer connection state, ringing offer id, caller call id."""
        out = {}
        for name in sorted(set(self.legs) | set(self.offers) | set(self.talking) | set(self.outbound)):
            leg, offer = self.legs.get(name), self.ringing(name)
            out[name] = {"connected": self.connected(name), "codec": leg.browser_codec if leg else None,
                         "state": leg.connection_state if leg else None,
                         "offer_id": offer.id if offer else None, "call_id": self.talking_call(name)}
        return out

    async def close(self) -> None:
        """Engine shutdown: every timer off, every leg closed."""
        for name in list(self._ring_timers):
            self._forget_offer(name)
        for name in list(self._grace):
            self._cancel_grace(name)
        for leg in list(self.legs.values()):
            self.media.close_leg(leg)
            leg.close()
        self.legs.clear()
        await self.gateway.close()

