"""The distributor (排队机): waiting calls meet operators, emergencies first, with line seize (抢线).

Sans-I/O like the SIP core: it keeps the queues and the operators' state machines, reads time from an
injected clock and talks to telephones only through a :class:`Connector` (SIP desk phones today, the
browser softphone later). The connector rings an operator for an :class:`Offer` and later reports
:meth:`Distributor.answered` or :meth:`Distributor.not_answered`; the call side reports
:meth:`Distributor.leave` (the caller hung up) and :meth:`Distributor.conversation_ended`.

**Order.** Priority class (emergency, urgent, normal), then a pre-empted call put back at the head of its
class, then level (9 first; ``aging`` raises it with waiting time, never out of its class), then time of
arrival (first come, first served; a caller who hung up and calls back within ``rejoin_window`` keeps
the old arrival time).

**Operators** for a call: logged in, serving the call's queue, with every required skill at its level.
Among them the queue's ``strategy`` chooses (higher queue weight first, then longest idle / round robin /
fewest calls; ``ring_all`` rings every eligible operator and the first to answer takes the call).
Every offer has a reservation timer (ring timeout plus a margin): whatever the phone does, the operator
cannot stay reserved. After ``max_missed`` missed offers in a row the operator is paused. A call transferred to a
colleague (``enqueue(..., target=NAME)``) is offered to them only, until they miss it or log out (an emergency never
waits for a colleague who is not free).

**Line seize.** An emergency that has waited ``seize_after`` seconds with no eligible operator free takes
one: first an operator in wrap-up, then one whose phone rings with a non-emergency call (that offer is
withdrawn; the call keeps its place), then one talking to a non-emergency call (the victim: lowest
priority first, then shortest talk by default). The victim's caller hears that an emergency must be taken
and waits with music at the head of their class (or gets a callback task, by configuration). An
emergency is never a victim. With nobody at all to take, an operator on a break is rung (and goes back on the
break after); with nobody logged in, ``acd.emergency.no_operator`` is logged and the call waits first in line.

Every step is a :class:`~callcenter.acd.events.QueueEvent` in the event log.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from callcenter.acd.events import EventList, EventSink, QueueEvent
from callcenter.acd.model import (
    AcdSettings,
    CallState,
    Connector,
    Offer,
    QueuedCall,
    QueueSettings,
    replace_queue,
)
from callcenter.acd.operators import DEVICES, Operator, OperatorState
from callcenter.acd.selection import choose_operators, choose_victim
from callcenter.ivr.runner import QueueOutcome, QueueRequest

log = structlog.get_logger("callcenter.acd")

OS = OperatorState
PHONE_PROBLEMS = frozenset({"phone_unreachable", "phone_lost"})  # pauses that no ringing can help


class Distributor:
    def __init__(self, clock: IReactorTime, connector: Connector | None = None, *,
                 queues: Iterable[QueueSettings] = (), operators: Iterable[Operator] = (),
                 settings: AcdSettings | None = None, events: EventSink | None = None,
                 on_abandon: Callable[[QueuedCall, float], None] | None = None,
                 on_preempt_callback: Callable[[QueuedCall], None] | None = None) -> None:
        self.clock = clock
        self.connector = connector
        self.settings = settings or AcdSettings()
        self.queues: dict[str, QueueSettings] = {q.name: q for q in queues}
        self.operators: dict[str, Operator] = {o.name: o for o in operators}
        self._names = sorted(self.operators)  # round robin's order (the operators are fixed by configuration)
        self.events: EventSink = events if events is not None else EventList()
        self.on_abandon = on_abandon  # a callback task for the abandoned caller
        self.on_preempt_callback = on_preempt_callback
        self.calls: dict[str, QueuedCall] = {}
        self.waiting: list[QueuedCall] = []  # WAITING and OFFERED calls (kept unsorted; ordered on use)
        self.offers: dict[int, Offer] = {}
        self.counters = {"entered": 0, "left": 0, "timeouts": 0, "connected": 0, "abandoned": 0,
                         "preemptions": 0, "seized_wrap_up": 0, "seized_paused": 0, "withdrawn_offers": 0,
                         "recovered": 0, "missed": 0, "auto_paused": 0}
        self._recent_abandons: dict[tuple[str, str], tuple[float, float, int]] = {}
        self._sequence = itertools.count()
        self._offer_ids = itertools.count(1)
        self._round_robin: dict[str, int] = {}
        self._handle_time: dict[str, float] = {}  # moving average of talk + wrap-up per queue
        self._dispatching = False
        self._again = False
        self._sweeper: IDelayedCall | None = None
        self.outbound: dict[str, str] = {}  # operator name → the outbound call (a callback) they are on

    # -- compatibility with the IVR's view of the queues ----------------------------------------------
    @property
    def known(self) -> frozenset[str]:
        return frozenset(self.queues)

    # -- the sweeper ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._sweeper is None and self.settings.sweep_interval > 0:
            self._sweeper = self.clock.callLater(self.settings.sweep_interval, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        for call in list(self.calls.values()):
            self._cancel_timers(call)
        for offer in list(self.offers.values()):
            if offer.timer is not None and offer.timer.active():
                offer.timer.cancel()

    def _sweep(self) -> None:
        """Nothing sticks: a call the telephones forgot to report is ended; an operator reserved or
        talking without a live call is recovered."""
        self._sweeper = self.clock.callLater(self.settings.sweep_interval, self._sweep)
        now = self.clock.seconds()
        longest = max((q.rejoin_window for q in self.queues.values()), default=0.0)
        for key, (left_at, _, _) in list(self._recent_abandons.items()):
            if now - left_at > longest:
                del self._recent_abandons[key]
        if self.connector is None:
            return
        for call in list(self.calls.values()):
            if not self.connector.alive(call):
                log.warning("acd.call.lost", call_id=call.call_id, state=call.state.value)
                self.counters["recovered"] += 1
                self.leave(call.call_id, "caller_hangup", fire=False)
        for operator in self.operators.values():
            if operator.state in (OS.RESERVED, OS.TALKING) and operator.name not in self.outbound:
                call = self.calls.get(operator.call_id or "")
                holding = call is not None and (call.operator is operator or
                                                any(o.operator is operator for o in call.offers))
                if not holding:
                    log.warning("acd.operator.recovered", operator=operator.name, state=operator.state.value,
                                call_id=operator.call_id)
                    self.counters["recovered"] += 1
                    self._operator_free(operator)
        self.dispatch()

    # -- calls entering and leaving -------------------------------------------------------------------
    def enqueue(self, call_id: str, caller_number: str, request: QueueRequest,
                on_leave: Callable[[], None] | None = None, *, target: str | None = None,
                detail: str = "") -> Deferred[QueueOutcome]:
        """Add the call; the Deferred fires when it is answered or its node's max_wait passes ("timeout"),
        and is cancelled (the call removed) when the caller hangs up. ``target`` offers it to that operator
        only (until they miss it or log out: then to anyone of its queue); ``detail`` goes into the "enter"
        event ("transfer" when an operator sent the call here)."""
        queue = self.queues.get(request.queue)
        if queue is None:
            log.error("acd.queue.unknown", call_id=call_id, queue=request.queue)
            return succeed(QueueOutcome("refused", f"no queue named {request.queue!r}"))
        if call_id in self.calls:
            self._remove(self.calls[call_id], "requeued", fire=False)
        outcome: Deferred[QueueOutcome] = Deferred(lambda _: self.leave(call_id, "caller_hangup", fire=False))
        self._add(call_id, caller_number, request, queue, outcome, on_leave, detail=detail, target=target)
        return outcome

    def _add(self, call_id: str, caller_number: str, request: QueueRequest, queue: QueueSettings,
             outcome: Deferred[QueueOutcome] | None, on_leave: Callable[[], None] | None,
             detail: str = "", target: str | None = None) -> QueuedCall:
        now = self.clock.seconds()
        entered, sequence = now, next(self._sequence)
        rejoin = self._recent_abandons.pop((queue.name, caller_number), None) if caller_number else None
        if rejoin is not None and now - rejoin[0] <= queue.rejoin_window and not detail:
            entered, sequence, detail = rejoin[1], rejoin[2], "rejoin"
        skills = dict(queue.skills)
        for value in request.skills.values():  # a flow names skills as {language: yue, role: nurse}
            name, _, level = str(value).partition(">=")
            if name.strip():
                skills[name.strip()] = max(skills.get(name.strip(), 1), int(level) if level.isdigit() else 1)
        call = QueuedCall(call_id, caller_number, request, queue, skills, entered, now, sequence, outcome,
                          on_leave=on_leave, target=target if target in self.operators else None)
        self.calls[call_id] = call
        self.waiting.append(call)
        self.counters["entered"] += 1
        self._event(call, "enter", detail=detail)
        log.info("acd.call.queued", call_id=call_id, queue=queue.name, priority=call.priority,
                 level=request.level, skills=skills, detail=detail or None, target=call.target)
        self._arm_call_timers(call)
        self.dispatch()
        return call

    def _arm_call_timers(self, call: QueuedCall) -> None:
        max_wait = call.request.max_wait
        # the flow's max_wait only while the flow waits: a requeued call (pre-empted, operator lost) was
        # already "answered", and a "flow" timeout would drop it silently
        if max_wait is not None and call.outcome is not None and not call.outcome.called:
            call.timers["max_wait"] = self.clock.callLater(max_wait, self._timeout, call, "flow")
        elif call.queue.max_wait is not None and call.queue.overflow is not None:
            call.timers["max_wait"] = self.clock.callLater(call.queue.max_wait, self._timeout, call,
                                                           call.queue.overflow)
        if call.emergency and self.settings.seize_after > 0:
            call.timers["seize"] = self.clock.callLater(self.settings.seize_after, self.dispatch)
        position, wait, every = self._announcing(call)
        if not call.emergency and (position or wait or call.request.periodic is not None):
            call.timers["announce"] = self.clock.callLater(min(15.0, every), self._announce, call)

    def leave(self, call_id: str, result: str, *, fire: bool = True) -> QueuedCall | None:
        """The call leaves the ACD: the caller hung up ("caller_hangup"), or the engine took it away."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        now = self.clock.seconds()
        if call.state is CallState.CONNECTED:
            self.conversation_ended(call_id)
            return call
        if result == "caller_hangup":
            wait = now - call.first_entered_at
            self.counters["abandoned"] += 1
            self._event(call, "abandon", wait=wait)
            if call.caller_number:
                self._recent_abandons[(call.queue.name, call.caller_number)] = (now, call.entered_at, call.sequence)
            if self.on_abandon is not None:
                self.on_abandon(call, wait)
        self._remove(call, result, fire=fire)
        self.dispatch()
        return call

    def _remove(self, call: QueuedCall, result: str, *, fire: bool) -> None:
        self.calls.pop(call.call_id, None)  # first: withdrawing its offers must not put it back on music
        for offer in list(call.offers):
            self._withdraw(offer, "caller_gone", count_miss=False)
        self._cancel_timers(call)
        if call in self.waiting:
            self.waiting.remove(call)
        call.state = CallState.GONE
        self.counters["left"] += 1
        log.info("acd.call.left_queue", call_id=call.call_id, queue=call.queue.name, result=result,
                 waited=round(self.clock.seconds() - call.first_entered_at, 3))
        if call.on_leave is not None:
            call.on_leave()
        if fire and call.outcome is not None and not call.outcome.called:
            call.outcome.callback(QueueOutcome(result))

    def _cancel_timers(self, call: QueuedCall, keep: Iterable[str] = ()) -> None:
        for name, timer in list(call.timers.items()):
            if name in keep:
                continue
            if timer.active():
                timer.cancel()
            del call.timers[name]

    def _timeout(self, call: QueuedCall, target: str) -> None:
        call.timers.pop("max_wait", None)
        if call.state not in (CallState.WAITING, CallState.OFFERED):
            return
        if target == "callback":  # offered, not imposed: the caller keeps the place unless they accept
            call.timers["max_wait"] = self.clock.callLater(call.queue.max_wait or 300.0, self._timeout, call, target)
            if self.connector is not None:
                self.connector.overflow(call, target)
            return
        self._overflowed(call, target)

    def take_callback(self, call_id: str) -> bool:
        """The waiting caller accepted the callback offer: they leave the queue (a timeout to "callback");
        the connector creates the task and says goodbye. False when the call is no longer waiting."""
        call = self.calls.get(call_id)
        if call is None or call.state not in (CallState.WAITING, CallState.OFFERED):
            return False
        self._overflowed(call, "callback")
        return True

    def _overflowed(self, call: QueuedCall, target: str) -> None:
        self.counters["timeouts"] += 1
        self._event(call, "timeout", wait=self.clock.seconds() - call.first_entered_at, detail=target)
        if target.startswith("queue:") and target[6:] in self.queues:
            for offer in list(call.offers):
                self._withdraw(offer, "queue_timeout", count_miss=False)
            self._cancel_timers(call)
            self.waiting.remove(call)
            self.calls.pop(call.call_id)
            moved = self._add(call.call_id, call.caller_number,
                              replace_queue(call.request, target[6:]), self.queues[target[6:]], call.outcome,
                              call.on_leave, detail="overflow")
            moved.first_entered_at = self.clock.seconds()
            moved.data.update(call.data)  # the connector's state (language…) goes along
            return
        if target == "flow":
            self._remove(call, "timeout", fire=True)
        else:  # voicemail / an accepted callback: the connector takes the caller there
            self._remove(call, "timeout", fire=False)
            if call.outcome is not None and not call.outcome.called:
                call.outcome.callback(QueueOutcome("overflow", target))
            if self.connector is not None and target != "callback":
                self.connector.overflow(call, target)
        self.dispatch()

    # -- operators -----------------------------------------------------------------------------------
    def set_state(self, name: str, state: str, reason: str | None = None) -> Operator:
        """An operator (or a supervisor) asks for available / paused / logged_out. During a call the
        request waits until the call ends; "available" during wrap-up ends the wrap-up."""
        operator = self.operators[name]
        wanted = OperatorState(state)
        if wanted not in (OS.AVAILABLE, OS.PAUSED, OS.LOGGED_OUT):
            raise ValueError(f"an operator can ask for available, paused or logged_out, not {state}")
        now = self.clock.seconds()
        if operator.state in (OS.RESERVED, OS.TALKING):
            operator.pending = None if wanted is OS.AVAILABLE else (wanted, reason)
            log.info("acd.operator.pending", operator=name, state=wanted.value, reason=reason,
                     call_id=operator.call_id)
            return operator
        if operator.state is wanted and wanted is not OS.PAUSED:
            return operator
        if operator.state is OS.WRAP_UP:
            self._end_wrap_up(operator, then=wanted, reason=reason)
            return operator
        if operator.state is not wanted or operator.pause_reason != reason:
            if operator.state is OS.PAUSED and wanted is OS.PAUSED:
                operator.pause_reason = reason
            else:
                operator.transition(wanted, now, reason=reason)
        operator.pending = None
        if wanted is OS.AVAILABLE:
            operator.missed_in_row = 0
        self.dispatch()
        return operator

    def set_device(self, name: str, device: str) -> Operator:
        """Where this operator's offers ring from now on: "phone" (the desk phone) or "browser" (the desktop's
        softphone). A call already ringing or talking stays where it is. The operator's listener hears of it
        (old and new state equal) so that desktops update."""
        operator = self.operators[name]
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        if operator.device != device:
            operator.device = device  # type: ignore[assignment]  # checked against DEVICES just above
            log.info("acd.operator.device", operator=name, device=device, call_id=operator.call_id)
            if operator.listener is not None:
                operator.listener(operator, operator.state, operator.state)
        return operator

    def _operator_free(self, operator: Operator) -> None:
        """The operator's call or offer is over: apply a pending pause/logout, else available."""
        now = self.clock.seconds()
        operator.call_id = None
        if operator.pending is not None:
            state, reason = operator.pending
            operator.pending = None
            operator.transition(state, now, reason=reason)
        elif operator.missed_in_row >= max(1, self.settings.max_missed):
            self.counters["auto_paused"] += 1
            operator.transition(OS.PAUSED, now, reason="missed_offers")
        else:
            operator.transition(OS.AVAILABLE, now)

    def _end_wrap_up(self, operator: Operator, *, then: OperatorState | None = None,
                     reason: str | None = None) -> None:
        timer, operator.wrap_timer = operator.wrap_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if operator.state is not OS.WRAP_UP:
            return
        now = self.clock.seconds()
        call_id, queue, priority = operator.wrap_call or ("", "", "normal")
        operator.wrap_call = None
        if queue:  # not after an outbound callback: those are not queue calls
            self.events.record(QueueEvent(now, "wrapup", call_id, queue, priority, operator=operator.name,
                                          seconds=round(now - operator.since, 3)))
        if then is not None:
            operator.pending = None
            operator.transition(then, now, reason=reason)
        else:
            self._operator_free(operator)
        self.dispatch()

    # -- offers ---------------------------------------------------------------------------------------
    def _offer(self, call: QueuedCall, operator: Operator, *, seized: bool = False) -> Offer:
        now = self.clock.seconds()
        offer = Offer(next(self._offer_ids), call, operator, now, seized=seized)
        if operator.state is not OS.RESERVED:  # a seized operator is already reserved for the emergency
            operator.transition(OS.RESERVED, now)
        operator.call_id = call.call_id
        operator.counters["offers"] += 1
        call.offers.append(offer)
        call.state = CallState.OFFERED
        self.offers[offer.id] = offer
        offer.timer = self.clock.callLater(self.settings.ring_timeout + self.settings.reservation_margin,
                                           self._reservation_expired, offer)
        self._event(call, "offer", operator=operator.name, detail="seize" if seized else "")
        log.info("acd.call.offered", call_id=call.call_id, operator=operator.name, queue=call.queue.name,
                 priority=call.priority, seized=seized)
        if self.connector is not None:
            self.connector.ring(offer)
        return offer

    def answered(self, offer: Offer) -> None:
        """The operator's phone answered: connect (other ring-all offers are withdrawn)."""
        if self.offers.get(offer.id) is not offer:
            return  # withdrawn meanwhile (the connector hangs the phone up)
        call, operator = offer.call, offer.operator
        self._drop_offer(offer)
        call.state = CallState.CONNECTED  # first: withdrawing the other offers must not put it back on music
        for other in list(call.offers):
            self._withdraw(other, "answered_elsewhere", count_miss=False)
        now = self.clock.seconds()
        first = call.connected_at is None and "connected_once" not in call.data
        call.data["connected_once"] = True
        call.state = CallState.CONNECTED
        call.operator = operator
        call.connected_at = now
        call.head = False
        if call in self.waiting:
            self.waiting.remove(call)
        self._cancel_timers(call)
        operator.transition(OS.TALKING, now)
        operator.call_id = call.call_id
        operator.missed_in_row = 0
        operator.calls_today += 1
        operator.counters["answers"] += 1
        self.counters["connected"] += 1
        wait = now - call.first_entered_at
        self._event(call, "connect", operator=operator.name, wait=wait)
        log.info("acd.call.connected", call_id=call.call_id, operator=operator.name, queue=call.queue.name,
                 waited=round(wait, 3), first=first)
        if call.outcome is not None and not call.outcome.called:
            call.outcome.callback(QueueOutcome("answered", operator.name))
        self.dispatch()

    def not_answered(self, offer: Offer, reason: str) -> None:
        """The phone did not take the call (no_answer, busy, failed): the call keeps its place."""
        if self.offers.get(offer.id) is not offer:
            return
        self._withdraw(offer, reason, count_miss=True, tell_connector=False)
        self.dispatch()

    def _reservation_expired(self, offer: Offer) -> None:
        offer.timer = None
        if self.offers.get(offer.id) is offer:
            log.warning("acd.offer.reservation_expired", call_id=offer.call.call_id, operator=offer.operator.name)
            self._withdraw(offer, "timeout", count_miss=True)
            self.dispatch()

    def _drop_offer(self, offer: Offer) -> None:
        self.offers.pop(offer.id, None)
        if offer in offer.call.offers:
            offer.call.offers.remove(offer)
        if offer.timer is not None and offer.timer.active():
            offer.timer.cancel()
        offer.timer = None

    def _withdraw(self, offer: Offer, reason: str, *, count_miss: bool, tell_connector: bool = True,
                  free_operator: bool = True) -> None:
        self._drop_offer(offer)
        call, operator = offer.call, offer.operator
        if not call.offers and call.state is CallState.OFFERED:
            call.state = CallState.WAITING
        if tell_connector and self.connector is not None:
            self.connector.stop_ringing(offer)
        self._event(call, "miss", operator=operator.name, detail=reason)
        if count_miss and call.target == operator.name:
            call.target = None  # the colleague did not take it: anyone of its queue may
            log.info("acd.call.untargeted", call_id=call.call_id, operator=operator.name, reason=reason)
        if count_miss:
            operator.missed_in_row += 1
            operator.counters["misses"] += 1
            self.counters["missed"] += 1
        else:
            self.counters["withdrawn_offers"] += 1
        log.info("acd.offer.withdrawn", call_id=call.call_id, operator=operator.name, reason=reason)
        if free_operator and operator.state is OS.RESERVED and operator.call_id == call.call_id:
            self._operator_free(operator)
        if call.state is CallState.WAITING and self.connector is not None and call.call_id in self.calls:
            self.connector.waiting(call)

    # -- conversations ending -------------------------------------------------------------------------
    def conversation_ended(self, call_id: str) -> None:
        """The caller or the operator hung up a connected call: wrap-up for the operator."""
        call = self.calls.get(call_id)
        if call is None:
            return
        if call.state is not CallState.CONNECTED:  # not (or no longer) talking: it simply leaves
            self.leave(call_id, "caller_hangup", fire=False)
            return
        del self.calls[call_id]
        if call in self.waiting:
            self.waiting.remove(call)
        self._cancel_timers(call)
        call.state = CallState.GONE
        operator = call.operator
        now = self.clock.seconds()
        talk = now - (now if call.connected_at is None else call.connected_at)
        self._event(call, "complete", operator=operator.name if operator else None, seconds=talk)
        if call.on_leave is not None:
            call.on_leave()
        if operator is not None and operator.call_id == call_id and operator.state is OS.TALKING:
            average = self._handle_time.get(call.queue.name, 120.0)
            self._handle_time[call.queue.name] = 0.8 * average + 0.2 * (talk + operator.wrap_up)
            self._start_wrap_up(operator, call)
        self.dispatch()

    def transferred(self, call_id: str, target: str) -> None:
        """The operator sent the call elsewhere: the conversation is over for the ACD."""
        call = self.calls.get(call_id)
        if call is not None:
            self._event(call, "transfer", operator=call.operator.name if call.operator else None, detail=target)
            self.conversation_ended(call_id)

    # -- outbound calls (callbacks) --------------------------------------------------------------------
    def begin_outbound(self, name: str, call_id: str) -> Operator:
        """The operator dials out (a callback task): no queued call is offered meanwhile. Refused while
        the operator is offered a call or talking."""
        operator = self.operators[name]
        if operator.state not in (OS.AVAILABLE, OS.PAUSED, OS.WRAP_UP):
            raise ValueError(f"operator {name} is {operator.state.value}")
        resume = operator.state, operator.pause_reason, operator.pending
        operator.call_id = call_id
        self.outbound[name] = call_id
        if operator.state is OS.WRAP_UP:  # straight to reserved: no queued call may slip in between
            self._end_wrap_up(operator, then=OS.RESERVED)
        else:
            operator.transition(OS.RESERVED, self.clock.seconds())
        operator.call_id = call_id
        operator.pending = resume[2]
        if resume[0] is OS.PAUSED and operator.pending is None:
            operator.pending = (OS.PAUSED, resume[1])  # a paused operator who dials a callback stays paused
        return operator

    def outbound_answered(self, name: str) -> None:
        operator = self.operators[name]
        if self.outbound.get(name) is not None and operator.state is OS.RESERVED:
            operator.transition(OS.TALKING, self.clock.seconds())

    def end_outbound(self, name: str) -> None:
        """The outbound call ended: wrap-up after a conversation, else straight back."""
        call_id = self.outbound.pop(name, None)
        operator = self.operators[name]
        if call_id is None or operator.call_id != call_id:
            return
        now = self.clock.seconds()
        if operator.state is OS.TALKING and operator.wrap_up > 0:
            operator.wrap_call = (call_id, "", "normal")
            operator.transition(OS.WRAP_UP, now)
            operator.call_id = None
            operator.wrap_timer = self.clock.callLater(operator.wrap_up, self._end_wrap_up, operator)
        elif operator.state in (OS.RESERVED, OS.TALKING):
            self._operator_free(operator)
        self.dispatch()

    def operator_lost(self, call_id: str) -> None:
        """The operator's phone vanished mid-call (no answer to keepalives): the operator is paused
        ("phone_lost") and the caller waits again at the head of their class."""
        call = self.calls.get(call_id)
        if call is None or call.state is not CallState.CONNECTED:
            return
        operator = call.operator
        now = self.clock.seconds()
        self._event(call, "complete", operator=operator.name if operator else None,
                    seconds=now - (now if call.connected_at is None else call.connected_at),
                    detail="operator_lost")
        if operator is not None and operator.call_id == call_id:
            operator.pending = (OS.PAUSED, "phone_lost")
            self._operator_free(operator)
        call.operator, call.connected_at = None, None
        self._requeue_at_head(call, "operator_lost")
        log.warning("acd.operator.lost", call_id=call_id, operator=operator.name if operator else None)
        self.dispatch()

    def _requeue_at_head(self, call: QueuedCall, reason: str) -> None:
        """A connected call waits again, first in its class (pre-empted, or its operator's phone was lost)."""
        call.state, call.head = CallState.WAITING, True
        self.waiting.append(call)
        self._event(call, "enter", detail="requeue")
        log.info("acd.call.queued", call_id=call.call_id, queue=call.queue.name, priority=call.priority,
                 detail="requeue", reason=reason)
        self._arm_call_timers(call)

    def _start_wrap_up(self, operator: Operator, call: QueuedCall) -> None:
        now = self.clock.seconds()
        operator.wrap_call = (call.call_id, call.queue.name, call.priority)
        operator.transition(OS.WRAP_UP, now)
        operator.call_id = None
        operator.wrap_timer = self.clock.callLater(operator.wrap_up, self._end_wrap_up, operator)

    # -- dispatching ----------------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Offer waiting calls to free operators, in order; seize operators for emergencies. Re-entrant
        calls (a connector reporting synchronously) run the loop again instead of nesting."""
        if self._dispatching:
            self._again = True
            return
        self._dispatching = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._dispatch_once()
        finally:
            self._dispatching = False

    def _dispatch_once(self) -> None:
        now = self.clock.seconds()
        candidates = [c for c in self.waiting if c.state is CallState.WAITING]
        if not candidates:
            return
        free = [o for o in self.operators.values() if o.state is OS.AVAILABLE]
        candidates.sort(key=lambda c: c.sort_key(now))
        for call in candidates:
            if self._again:
                return  # a connector reported inside ring() (an operator is free again…): order afresh
            if call.state is not CallState.WAITING or call.call_id not in self.calls:
                continue
            if call.target is not None and (self.operators[call.target].state is OS.LOGGED_OUT or (
                    call.emergency and self.operators[call.target].state is not OS.AVAILABLE)):
                call.target = None  # the colleague left (an emergency never waits for one): anyone may take it
            if free:
                chosen = self._choose(call, free)
                if chosen:
                    for operator in chosen:
                        if call.call_id not in self.calls or call.state not in (CallState.WAITING,
                                                                                CallState.OFFERED):
                            break  # ring_all: answered or gone while an earlier phone was rung
                        free.remove(operator)
                        self._offer(call, operator)
                    continue
            if call.emergency and now - call.first_entered_at >= self.settings.seize_after - 1e-9:
                if self._seize_for(call):
                    # the seize put a call back (withdrawn offer, requeued victim): order again, so that
                    # it keeps its place before the later calls of this pass
                    self._again = True
                    return

    def _eligible(self, call: QueuedCall, operator: Operator) -> bool:
        if call.target is not None:
            return operator.name == call.target
        return operator.serves(call.queue.name) and operator.has_skills(call.skills)

    def _choose(self, call: QueuedCall, free: list[Operator]) -> list[Operator]:
        if call.target is not None:
            return [o for o in free if o.name == call.target]
        return choose_operators(call, [o for o in free if self._eligible(call, o)], rotation=self._round_robin,
                                names=self._names)

    def _seize_for(self, call: QueuedCall) -> bool:
        """Line seize: give the emergency an operator now. True when an operator was taken."""
        eligible = [o for o in self.operators.values() if self._eligible(call, o)]
        wrapping = [o for o in eligible if o.state is OS.WRAP_UP]
        if wrapping:
            operator = min(wrapping, key=lambda o: (o.since, o.name))  # the longest in wrap-up
            self.counters["seized_wrap_up"] += 1
            log.info("acd.seize.wrap_up", call_id=call.call_id, operator=operator.name)
            pending = operator.pending  # a pause/logout asked for during the last call still applies after
            self._end_wrap_up(operator, then=OS.AVAILABLE)
            operator.pending = pending
            if operator.state is OS.AVAILABLE and call.state is CallState.WAITING:
                self._offer(call, operator, seized=True)
            return True
        chosen = choose_victim(eligible, self.calls, self.clock.seconds(), self.settings.victim)
        if chosen is None:
            return self._seize_paused(call, eligible)
        operator, offer, victim = chosen
        if offer is not None:
            log.info("acd.seize.ringing", call_id=call.call_id, operator=operator.name,
                     victim_call_id=victim.call_id)
            self._withdraw(offer, "seized", count_miss=False, free_operator=False)
            self._offer(call, operator, seized=True)
            return True
        self._preempt(victim, operator, call)
        return True

    def _seize_paused(self, call: QueuedCall, eligible: list[Operator]) -> bool:
        """Nobody free and nobody on a call that may be taken: an operator on a break is still at the center,
        so their phone rings for the emergency (they go back on break afterwards). Not when the pause says
        the phone itself is gone. Otherwise the call waits, first in line, and the log says why."""
        paused = [o for o in eligible if o.state is OS.PAUSED and o.pause_reason not in PHONE_PROBLEMS]
        if not paused:
            if not call.data.get("unstaffed"):
                call.data["unstaffed"] = True
                log.error("acd.emergency.no_operator", call_id=call.call_id, queue=call.queue.name,
                          skilled=len(eligible), busy_on_emergencies=sum(o.state is OS.TALKING for o in eligible))
            return False
        operator = min(paused, key=lambda o: (o.since, o.name))  # the longest on a break
        log.warning("acd.seize.paused", call_id=call.call_id, operator=operator.name, reason=operator.pause_reason)
        self.counters["seized_paused"] += 1
        operator.pending = operator.pending or (OS.PAUSED, operator.pause_reason)
        self._offer(call, operator, seized=True)
        return True

    def _preempt(self, victim: QueuedCall, operator: Operator, emergency: QueuedCall) -> None:
        now = self.clock.seconds()
        requeue = self.settings.on_preempt == "requeue"
        self.counters["preemptions"] += 1
        operator.counters["preempted"] += 1
        talk = now - (now if victim.connected_at is None else victim.connected_at)
        self._event(victim, "preempt", operator=operator.name, wait=now - victim.first_entered_at,
                    seconds=talk, detail=emergency.call_id)
        log.warning("acd.preempt", call_id=emergency.call_id, operator=operator.name,
                    victim_call_id=victim.call_id, victim_priority=victim.priority,
                    talk=round(talk, 3), requeue=requeue)
        if self.connector is not None:
            self.connector.preempted(victim, operator, requeued=requeue)
        victim.operator = None
        victim.connected_at = None
        operator.transition(OS.RESERVED, now)  # talking → reserved for the emergency
        if requeue:
            self._requeue_at_head(victim, "preempted")
        else:
            self.calls.pop(victim.call_id, None)
            victim.state = CallState.GONE
            self.counters["left"] += 1
            log.info("acd.call.left_queue", call_id=victim.call_id, queue=victim.queue.name, result="callback")
            if victim.on_leave is not None:
                victim.on_leave()
            if self.on_preempt_callback is not None:
                self.on_preempt_callback(victim)
        self._offer(emergency, operator, seized=True)

    # -- announcements --------------------------------------------------------------------------------
    def _announce(self, call: QueuedCall) -> None:
        call.timers.pop("announce", None)
        if call.call_id not in self.calls or call.state is CallState.CONNECTED:
            return
        announce_position, announce_wait, every = self._announcing(call)
        if call.state is CallState.WAITING and self.connector is not None:
            position = self.position(call.call_id) or 1
            estimate = self.wait_estimate(call) if announce_wait else None
            self.connector.announce(call, position if announce_position else 0, estimate)
        call.timers["announce"] = self.clock.callLater(max(15.0, every), self._announce, call)

    @staticmethod
    def _announcing(call: QueuedCall) -> tuple[bool, bool, float]:
        """What a waiting caller hears and how often: the flow node's announcements over the queue's."""
        node, queue = call.request.announcements, call.queue
        position = node.position if node is not None and node.position is not None else queue.announce_position
        wait = node.wait_time if node is not None and node.wait_time is not None else queue.announce_wait
        every = node.every if node is not None and node.every is not None else queue.announce_every
        return bool(position), bool(wait), float(every)

    def position(self, call_id: str) -> int | None:
        """1 for the next call an operator of its queue will take."""
        call = self.calls.get(call_id)
        if call is None or call.state is CallState.CONNECTED:
            return None
        now = self.clock.seconds()
        key = call.sort_key(now)
        return 1 + sum(1 for other in self.waiting if other is not call and other.queue is call.queue
                       and other.sort_key(now) < key)

    def wait_estimate(self, call: QueuedCall) -> float:
        staffed = sum(1 for o in self.operators.values() if o.serves(call.queue.name)
                      and o.state not in (OS.LOGGED_OUT, OS.PAUSED)) or 1
        handle = self._handle_time.get(call.queue.name, 120.0)
        return (self.position(call.call_id) or 1) * handle / staffed

    # -- views ----------------------------------------------------------------------------------------
    def _event(self, call: QueuedCall, kind: str, *, operator: str | None = None, wait: float | None = None,
               seconds: float | None = None, detail: str = "") -> None:
        self.events.record(QueueEvent(self.clock.seconds(), kind, call.call_id, call.queue.name, call.priority,
                                      operator, None if wait is None else round(wait, 3),
                                      None if seconds is None else round(seconds, 3), detail))

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        now = self.clock.seconds()
        lines: dict[str, list[dict[str, Any]]] = {name: [] for name in self.queues}
        for call in sorted(self.waiting, key=lambda c: c.sort_key(now)):
            lines[call.queue.name].append({
                "call_id": call.call_id, "caller": call.caller_number, "priority": call.priority,
                "level": call.level_at(now), "skills": dict(call.skills), "state": call.state.value,
                "waited": round(now - call.first_entered_at, 1), "flow": call.request.flow,
                "ringing": [o.operator.name for o in call.offers], "head": call.head})
        return lines

    def live(self) -> dict[str, Any]:
        now = self.clock.seconds()
        queues: dict[str, dict[str, float]] = {name: {"waiting": 0, "longest_wait": 0.0} for name in self.queues}
        for call in self.waiting:
            entry = queues[call.queue.name]
            entry["waiting"] += 1
            entry["longest_wait"] = max(entry["longest_wait"], round(now - call.first_entered_at, 1))
        states = {state.value: 0 for state in OperatorState}
        for operator in self.operators.values():
            states[operator.state.value] += 1
        talking = sum(1 for c in self.calls.values() if c.state is CallState.CONNECTED)
        return {"queues": queues, "operators": states, "calls": len(self.calls), "talking": talking}

    def operators_view(self) -> list[dict[str, Any]]:
        now = self.clock.seconds()
        return [o.as_dict(now) for o in sorted(self.operators.values(), key=lambda o: o.name)]
