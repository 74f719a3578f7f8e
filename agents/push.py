"""Push to the desktop: ``GET /api/desk/events`` (Server-Sent Events, docs/desktop.md) and the :class:`DeskHub`
that feeds every open stream from the engine's bus.

The hub follows ``acd.step`` (offers, withdrawals, queue changes), ``acd.operator`` (operator states; a call the
operator places, callback or outbound, being dialled), ``desk.call`` (the operator's current call, from call
control) and ``call.ended`` (the pop is dropped). On an offer it builds the screen pop once per call
(:mod:`agents.screenpop`), then sends ``offer`` to the operator being offered the call; a withdrawal that comes
before the pop is ready simply cancels the offer. A call being placed pops too, as an offer without ``offer_id``.

Who gets what: an operator gets events about themselves (their state, their offers and calls) and the callback
count; supervisors and admins also get every operator's state and the ``queue`` summary (at most once a second
while something changes), and their own offers and calls when they are operators themselves; auditors get
nothing about calls (``hello`` and keep-alives only).

Nothing here may hold up the loop or one stream another: each stream has a bounded queue, the hub only ever
``put_nowait``s, and a stream whose queue is full is dropped (its connection closed; the browser reconnects and
calls ``GET /api/desk/current``). A keep-alive comment goes out after ``keepalive`` seconds of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.auth import ROLES, User, UserDirectory
from agents.desk import DESK, identity_of
from agents.i18n import choose_lang
from agents.roles import allow
from agents.screenpop import OPEN_TASKS, Builder, PopCache, call_facts, directory_builder, log_pop
from agents.today import TodayTally, queue_rows, step_event, summary
from callcenter.bus.events import Event
from callcenter.config import Config
from callcenter.store.models import CallbackTask

log = structlog.get_logger("agents.web")

CALL_KINDS: Final = frozenset({"offer", "offer_withdrawn", "call"})
WATCHERS: Final = frozenset({"supervisor", "admin"})
# the call ids the dialler reserves an operator with while it places a call (callcenter.acd.dialler), → direction
PLACED_PREFIXES: Final = {"callback-": "callback", "outbound-": "outbound"}


@dataclass(eq=False)
class Stream:
    """One browser tab's event stream."""

    user: User
    operator: str | None  # the operator this user is (operators[].user), if any
    lang: str
    queue: asyncio.Queue[tuple[str, str] | None]
    dropped: str | None = None  # why the hub let go of it
    transport: asyncio.Transport | None = None
    writing: bool = False  # the handler is in a write (stuck there when the browser reads nothing)
    ended: bool = False  # the handler has returned

    def wants(self, kind: str, operator: str | None) -> bool:
        role = self.user.role
        if role == "auditor":
            return False
        if kind in CALL_KINDS:
            return operator is not None and operator == self.operator
        if kind == "operator":
            return role in WATCHERS or (operator is not None and operator == self.operator)
        if kind == "queue":
            return role in WATCHERS
        return kind == "callbacks"


@dataclass(eq=False)
class OfferState:
    offer_id: int | None  # None for a call being placed (no ACD offer)
    call_id: str
    operator: str
    sent: bool = False


PLACED_KINDS: Final = frozenset(PLACED_PREFIXES.values())


def placed_direction(call_id: str) -> str | None:
    """"callback" or "outbound" for the pseudo call id of a call being placed, else None."""
    return next((kind for prefix, kind in PLACED_PREFIXES.items() if call_id.startswith(prefix)), None)


def frame(kind: str, text: str) -> bytes:
    return f"event: {kind}\ndata: {text}\n\n".encode()


class DeskHub:
    """Fans bus events out to the open streams; builds and caches screen pops; counts today's queue figures."""

    def __init__(self, engine: Any, config: Config, users: UserDirectory | None = None, *,
                 build: Builder | None = None, keepalive: float = 15.0, queue_size: int = 256,
                 queue_interval: float = 1.0, callbacks_interval: float = 5.0,
                 now: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.config = config
        self.users = users
        self.keepalive = keepalive
        self.queue_size = queue_size
        self.queue_interval = queue_interval
        self.callbacks_interval = callbacks_interval
        self.pops = PopCache(build or directory_builder(engine))
        self.today = TodayTally(config, now=now)
        self.streams: set[Stream] = set()
        self.offers: dict[tuple[str, str], OfferState] = {}
        self.dialling: dict[str, str] = {}  # operator → the pseudo call id of the call being placed
        self.operator_of = {o.user.casefold(): o.name for o in config.operators if o.user}
        self.user_of = {o.name: o.user for o in config.operators if o.user}
        self.counters = {"streams": 0, "dropped": 0, "aborted": 0, "sent": 0, "offers": 0, "offers_cancelled": 0}
        self.open_callbacks: int | None = None
        self._chains: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._queue_timer: asyncio.TimerHandle | None = None
        self._last_queue = float("-inf")
        self._poller: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------------------
    async def start(self, _app: Any = None) -> None:
        bus = getattr(self.engine, "bus", None)
        if bus is not None and self._unsubscribe is None:
            self._unsubscribe = bus.subscribe(Event, self.on_event)
        db = getattr(self.engine, "db", None)
        if db is not None and getattr(self.engine, "acd", None) is not None:
            try:
                loaded = await self.today.load(db)
                log.info("desk.hub.started", events_today=loaded)
            except Exception:
                log.exception("desk.hub.today_failed")
        if db is not None and self.callbacks_interval > 0:
            self._poller = asyncio.ensure_future(self._poll_callbacks())

    async def stop(self, _app: Any = None) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._queue_timer is not None:
            self._queue_timer.cancel()
        for task in [*self._tasks, *([self._poller] if self._poller else [])]:
            task.cancel()
        for stream in list(self.streams):
            self.drop(stream, "shutdown")
        self.pops.clear()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("desk.hub.task_failed", error=repr(task.exception()))

    # -- streams ----------------------------------------------------------------------------------------
    def open(self, user: User, lang: str) -> Stream:
        stream = Stream(user, self.operator_of.get(user.username.casefold()), lang, asyncio.Queue(self.queue_size))
        self.streams.add(stream)
        self.counters["streams"] += 1
        log.info("desk.stream.opened", username=user.username, role=user.role, operator=stream.operator,
                 streams=len(self.streams))
        return stream

    def close(self, stream: Stream) -> None:
        """The stream's handler has returned (the browser left, or the hub dropped the stream)."""
        stream.ended = True
        if stream in self.streams:
            self.streams.discard(stream)
            log.info("desk.stream.closed", username=stream.user.username, streams=len(self.streams))

    def drop(self, stream: Stream, reason: str) -> None:
        """Let go of a stream: its handler ends (closing the connection when it is stuck writing)."""
        if stream.dropped is not None:
            return
        stream.dropped = reason
        self.streams.discard(stream)
        if reason != "shutdown":
            self.counters["dropped"] += 1
            log.warning("desk.stream.dropped", username=stream.user.username, reason=reason,
                        queued=stream.queue.qsize())
        with contextlib.suppress(asyncio.QueueFull):
            stream.queue.put_nowait(None)  # wakes a handler waiting for events
        if stream.writing and stream.transport is not None:
            self.counters["aborted"] += 1
            stream.transport.abort()  # wakes a handler stuck in a write; one waiting for events ends cleanly

    def emit(self, kind: str, data: Any, *, operator: str | None = None) -> int:
        """Send an event to every stream that wants it; the JSON is made once. Returns how many got it."""
        text: str | None = None
        sent = 0
        for stream in list(self.streams):
            if not stream.wants(kind, operator):
                continue
            if text is None:
                text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
            try:
                stream.queue.put_nowait((kind, text))
            except asyncio.QueueFull:
                self.drop(stream, "slow")
                continue
            sent += 1
        self.counters["sent"] += sent
        return sent

    def _in_order(self, operator: str, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` after the operator's earlier jobs (an offer waiting for its pop before a call event)."""
        previous = self._chains.get(operator)

        async def run() -> None:
            if previous is not None and not previous.done():
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(previous)
            await job()

        chain = self._spawn(run())
        self._chains[operator] = chain

        def forget(done: asyncio.Future[Any]) -> None:
            if self._chains.get(operator) is done:
                del self._chains[operator]

        chain.add_done_callback(forget)

    # -- the bus ----------------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        name = event.name
        if name == "acd.step":
            self._step(event)
        elif name == "acd.operator":
            self._operator(event)
        elif name == "desk.call":
            self._desk_call(event)
        elif name == "call.ended":
            self.pops.evict(event.call_id)  # type: ignore[attr-defined]

    def _step(self, step: Any) -> None:
        self.today.add(step_event(step))
        self._queue_changed()
        if step.kind == "offer" and step.operator:
            self._offered(step)
        elif step.kind == "miss" and step.operator:
            self._withdrawn(step.call_id, step.operator, step.detail or "withdrawn")
        elif step.kind in ("connect", "preempt", "complete") and step.operator:
            self.offers.pop((step.call_id, step.operator), None)
            if getattr(self.engine, "control", None) is None:  # no call control: say what we know
                self._fallback_call(step)
        elif step.kind == "callback":
            self._spawn(self._refresh_callbacks())

    def _operator(self, event: Any) -> None:
        name = event.operator
        acd = getattr(self.engine, "acd", None)
        operator = acd.operators.get(name) if acd is not None else None
        self.emit("operator", {"name": name, "state": event.new, "reason": event.reason,
                               "device": getattr(operator, "device", "phone"), "call_id": event.call_id},
                  operator=name)
        call_id = event.call_id or ""
        dialled = self.dialling.get(name)
        if event.new == "reserved" and placed_direction(call_id) is not None:
            if dialled != call_id:
                self._placed_dialling(name, call_id)
        elif dialled is not None:
            if event.new == "talking" and call_id == dialled:
                self._withdrawn(dialled, name, "answered")  # the pop stays: it is the call's now
            else:  # the placed call is over
                del self.dialling[name]
                self._withdrawn(dialled, name, "ended")
                self.pops.evict(dialled)
                self._spawn(self._refresh_callbacks())

    # -- offers -----------------------------------------------------------------------------------------
    def _offer_id(self, call_id: str, operator: str) -> int | None:
        acd = getattr(self.engine, "acd", None)
        for offer in (acd.offers.values() if acd is not None else ()):
            if offer.call.call_id == call_id and offer.operator.name == operator:
                return int(offer.id)
        return None

    def _offered(self, step: Any) -> None:
        state = OfferState(self._offer_id(step.call_id, step.operator), step.call_id, step.operator)
        self.offers[(step.call_id, step.operator)] = state
        self.counters["offers"] += 1
        at = step.at.timestamp()
        pop = self.pops.get(step.call_id, lambda: call_facts(self.engine, step.call_id, queue=step.queue,
                                                             priority=step.priority, offered_at=at))
        self._in_order(step.operator, lambda: self._send_offer(state, pop, at))

    def _placed_dialling(self, operator: str, call_id: str) -> None:
        """The dialler reserved the operator to place a call: pop the elder to be called (direction "callback" or
        "outbound"; the elder by the id the call was placed with, else by the number)."""
        self.dialling[operator] = call_id
        find = getattr(getattr(self.engine, "dialler", None), "find", None)
        placed = find(call_id) if find is not None else None
        number = getattr(placed, "number", "") or ""
        elder_id = getattr(placed, "elder_id", None)
        state = OfferState(None, call_id, operator)
        self.offers[(call_id, operator)] = state
        now = time.time()
        pop = self.pops.get(call_id, lambda: call_facts(self.engine, call_id, direction=placed_direction(call_id),
                                                        number=number, elder_id=elder_id, priority="normal",
                                                        offered_at=now))
        self._in_order(operator, lambda: self._send_offer(state, pop, now))

    async def _send_offer(self, state: OfferState, pop_future: asyncio.Future[dict[str, Any]], at: float) -> None:
        try:
            pop = await asyncio.shield(pop_future)
        except (asyncio.CancelledError, Exception):
            if self.offers.get((state.call_id, state.operator)) is not state:
                return
            raise
        if self.offers.get((state.call_id, state.operator)) is not state:
            self.counters["offers_cancelled"] += 1  # withdrawn or answered before the pop was ready
            return
        state.sent = True
        sent = self.emit("offer", {"offer_id": state.offer_id, "call_id": state.call_id, "operator": state.operator,
                                   "pop": pop}, operator=state.operator)
        log.info("desk.offer.sent", call_id=state.call_id, operator=state.operator, offer_id=state.offer_id,
                 streams=sent, after_ms=round((time.time() - at) * 1000, 1))
        username = self.user_of.get(state.operator)
        if sent and username is not None:
            self.shown(username, state.call_id, pop)

    def shown(self, username: str, call_id: str, pop: dict[str, Any]) -> None:
        """``username`` is being shown the pop: audit-log it once per user and call."""
        if self.pops.first_view(call_id, username):
            user = self.users.get(username) if self.users is not None else None
            self._spawn(log_pop(self.engine, username=username, role=user.role if user else "operator", pop=pop,
                                call_id=call_id))

    def _withdrawn(self, call_id: str, operator: str, reason: str) -> None:
        state = self.offers.pop((call_id, operator), None)
        if state is not None and state.sent:
            payload = {"offer_id": state.offer_id, "call_id": call_id, "reason": reason}

            async def send() -> None:
                self.emit("offer_withdrawn", payload, operator=operator)

            self._in_order(operator, send)

    # -- the operator's call ------------------------------------------------------------------------------
    def _desk_call(self, event: Any) -> None:
        operator, call_id, call = event.operator, event.call_id, event.call
        if call is None:
            data: dict[str, Any] = {"call_id": call_id, "state": "ended", "device": None, "muted": False,
                                    "held": False, "parties": [], "started_at": None,
                                    "pop": self.pops.ready(call_id) if call_id else None}
            self._in_order(operator, self._emit_call(operator, data, None))
            return
        data = dict(call)
        self._in_order(operator, self._emit_call(operator, data, self.call_pop(operator, data)))

    def call_pop(self, operator: str, call: dict[str, Any]) -> asyncio.Future[dict[str, Any]] | None:
        """The pop of an operator's call (CALL shape): a placed call's is the one popped while it was dialled."""
        call_id = call.get("call_id")
        dialled = self.dialling.get(operator)
        if call.get("kind") in PLACED_KINDS and dialled is not None:
            call_id = dialled
        if not call_id:
            return None
        return self.pops.get(call_id, lambda: call_facts(self.engine, call_id))

    def _emit_call(self, operator: str, data: dict[str, Any],
                   pop: asyncio.Future[dict[str, Any]] | None) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            if pop is not None:
                try:
                    data["pop"] = await asyncio.shield(pop)
                except (asyncio.CancelledError, Exception):
                    data["pop"] = None
                username = self.user_of.get(operator)
                if data["pop"] is not None and username is not None:
                    self.shown(username, data["call_id"], data["pop"])
            self.emit("call", data, operator=operator)

        return job

    def _fallback_call(self, step: Any) -> None:
        """Without call control (engine.control) the desk still learns that the offer became a call and when it
        ended, from the queue steps."""
        ended = step.kind != "connect"
        data: dict[str, Any] = {"call_id": step.call_id, "state": "ended" if ended else "talking",
                                "device": getattr(self._operator_obj(step.operator), "device", "phone"),
                                "muted": False, "held": False, "parties": [],
                                "started_at": None if ended else step.at.isoformat()}
        pop = None if ended else self.pops.get(step.call_id, lambda: call_facts(self.engine, step.call_id))
        if ended:
            data["pop"] = self.pops.ready(step.call_id)
        self._in_order(step.operator, self._emit_call(step.operator, data, pop))

    def _operator_obj(self, name: str) -> Any:
        acd = getattr(self.engine, "acd", None)
        return acd.operators.get(name) if acd is not None else None

    # -- queues and callbacks -----------------------------------------------------------------------------
    def _queue_changed(self) -> None:
        if self._queue_timer is not None or getattr(self.engine, "acd", None) is None:
            return
        if not any(s.wants("queue", None) for s in self.streams):
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_queue + self.queue_interval - loop.time())
        self._queue_timer = loop.call_later(delay, self._send_queues)

    def _send_queues(self) -> None:
        self._queue_timer = None
        self._last_queue = asyncio.get_running_loop().time()
        report = self.today.report()
        self.emit("queue", {"queues": queue_rows(self.engine.acd, report),
                            "kpi": summary(report, self.today.hourly())})  # the wallboard's tiles, live

    def queue_rows(self) -> list[dict[str, Any]]:
        return queue_rows(self.engine.acd, self.today.report())

    async def count_callbacks(self) -> int:
        async with AsyncSession(self.engine.db) as session:
            count = await session.scalar(select(func.count()).select_from(CallbackTask)
                                         .where(CallbackTask.state.in_(OPEN_TASKS)))
        return int(count or 0)

    async def _refresh_callbacks(self) -> None:
        if getattr(self.engine, "db", None) is None:
            return
        count = await self.count_callbacks()
        if count != self.open_callbacks:
            self.open_callbacks = count
            self.emit("callbacks", {"open": count})

    async def _poll_callbacks(self) -> None:
        while True:
            if self.streams:
                try:
                    await self._refresh_callbacks()
                except Exception:
                    log.exception("desk.hub.callbacks_failed")
            await asyncio.sleep(self.callbacks_interval)


HUB: Final = web.AppKey("desk_hub", DeskHub)


@allow(*ROLES)
async def desk_events(request: web.Request) -> web.StreamResponse:
    """The desktop's push channel (Server-Sent Events): hello, operator, offer, offer_withdrawn, call, queue,
    callbacks; a keep-alive comment after 15 s of silence."""
    hub = request.app[HUB]
    identity = identity_of(request)
    stream = hub.open(identity.user, choose_lang(request, identity.session))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        stream.transport = request.transport
        hello = {"user": identity.user.username, "display_name": identity.user.label, "role": identity.user.role,
                 "operator": stream.operator, "lang": stream.lang}
        await response.write(b"retry: 3000\n" + frame("hello", json.dumps(hello, ensure_ascii=False)))
        while stream.dropped is None:
            try:
                item = await asyncio.wait_for(stream.queue.get(), hub.keepalive)
            except TimeoutError:
                item = ("", "")
            if item is None or stream.dropped is not None:
                break
            stream.writing = True
            try:
                await response.write(frame(*item) if item[0] else b": keep-alive\n\n")
            finally:
                stream.writing = False
    except (ConnectionError, RuntimeError):  # the browser went away (or the hub closed a slow connection)
        pass
    finally:
        hub.close(stream)
    return response


def register(app: web.Application) -> None:
    """The push route and the application's hub (started and stopped with the application)."""
    desk = app[DESK]
    hub = DeskHub(desk.engine, desk.config, desk.users)
    app[HUB] = hub
    app.on_startup.append(hub.start)
    app.on_shutdown.append(hub.stop)
    app.router.add_get("/api/desk/events", desk_events)
