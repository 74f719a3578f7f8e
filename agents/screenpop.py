"""The screen pop (来电弹屏) as the desktop serves it: what is known about a call when it is offered (caller number,
DID, button, IVR path and digits, queue, priority; from the engine's Call, the IVR's path and the ACD), completed
by the directory (:func:`callcenter.directory.pop.build_pop`: the elder, records, work orders) and the open
callback tasks of the number, built ONCE per call and cached by call id until the call ends.

Showing a pop to a user is personal data being viewed: :meth:`PopCache.shown` writes one ``pop`` row to the
directory's access log per user and call."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.directory.numbers import national
from callcenter.directory.pop import build_pop, call_part
from callcenter.store.models import CallbackTask

log = structlog.get_logger("agents.web")

Builder = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
OPEN_TASKS = ("open", "dialling")


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _digits(steps: list[Any]) -> str:
    """The keys the caller pressed in the IVR: menu choices ("pressed 1") and collected input ("var=123")."""
    pressed: list[str] = []
    for step in steps:
        detail = str(getattr(step, "detail", ""))
        if step.type == "menu" and detail.startswith("pressed "):
            pressed.append(detail[8:].strip())
        elif step.type == "collect" and "=" in detail and not detail.startswith("too short"):
            pressed.append(detail.split("=", 1)[1].strip())
    return " ".join(p for p in pressed if p)


def call_facts(engine: Any, call_id: str, *, queue: str | None = None, priority: str | None = None,
               direction: str | None = None, number: str | None = None, elder_id: int | None = None,
               offered_at: float | None = None) -> dict[str, Any]:
    """The ``call`` part of a POP from what the engine knows now (the call may be gone: then from the
    arguments; ``elder_id`` names the elder of a call being placed)."""
    ua = getattr(engine, "ua", None)
    call = ua.calls.get(call_id) if ua is not None else None
    acd = getattr(engine, "acd", None)
    queued = acd.calls.get(call_id) if acd is not None else None
    flows = getattr(engine, "flows", None)
    steps = list(flows.paths.get(call_id, ())) if flows is not None else []
    queue = queue or (queued.queue.name if queued is not None else None)
    priority = priority or (queued.priority if queued is not None else None)
    elder_side = None if call is None else (call.dialled if call.direction == "outbound" else call.caller_number)
    caller = number or elder_side or (queued.caller_number if queued is not None else "")
    emergency = priority == "emergency" or bool(call is not None and call.emergency)
    when = dt.datetime.fromtimestamp(offered_at if offered_at is not None else time.time(), dt.UTC)
    return {
        "call_id": call_id,
        "direction": direction or (call.direction if call is not None else "inbound"),
        "caller_number": caller,
        "did": call.dialled if call is not None and call.direction == "inbound" else None,
        "button": call.button if call is not None else None,
        "ivr_path": [f"{s.flow}:{s.node}" for s in steps],
        "digits": _digits(steps),
        "queue": queue,
        "priority": priority or ("emergency" if emergency else "normal"),
        "emergency": emergency,
        "offered_at": iso(when),
        "elder_id": elder_id if elder_id is not None else call.elder_id if call is not None else None,
    }


async def open_callbacks(db: Any, number: str, limit: int = 20) -> list[dict[str, Any]]:
    """The open callback tasks for ``number`` (in its given and its normalised form)."""
    if db is None or not number:
        return []
    numbers = {number, national(number)} - {""}
    async with AsyncSession(db) as session:
        rows = await session.scalars(
            select(CallbackTask).where(CallbackTask.number.in_(sorted(numbers)), CallbackTask.state.in_(OPEN_TASKS))
            .order_by(CallbackTask.due_at).limit(limit))
        return [{"id": t.id, "reason": t.reason, "due_at": iso(t.due_at), "attempts": t.attempts,
                 "source": t.source, "state": t.state} for t in rows]


def empty_pop(facts: Mapping[str, Any], *, error: str | None = None) -> dict[str, Any]:
    """A pop without the directory: "unknown caller" (and why, when the directory failed)."""
    pop: dict[str, Any] = {"call": call_part(facts), "unknown": True, "elder": None, "records": [],
                           "work_orders": [], "callbacks": []}
    if error is not None:
        pop["error"] = error
    return pop


def directory_builder(engine: Any) -> Builder:
    """The production pop: ``build_pop`` over ``engine.directory`` and the number's callbacks, in parallel.
    A failing directory still gives a pop (unknown caller, with ``error``): the offer is never held back."""

    async def build(facts: dict[str, Any]) -> dict[str, Any]:
        callbacks = asyncio.ensure_future(open_callbacks(getattr(engine, "db", None), facts["caller_number"]))
        store = getattr(engine, "directory", None)
        try:
            pop = empty_pop(facts) if store is None else await build_pop(store, call=facts)
        except Exception:
            log.exception("desk.pop.failed", call_id=facts["call_id"])
            pop = empty_pop(facts, error="the directory could not be read")
        try:
            pop["callbacks"] = await callbacks
        except Exception:
            log.exception("desk.pop.callbacks_failed", call_id=facts["call_id"])
        return pop

    return build


@dataclass
class PopEntry:
    task: asyncio.Future[dict[str, Any]]
    shown: set[str] = field(default_factory=set)  # users whose view of it is in the access log


class PopCache:
    """Pops by call id: built once (concurrent askers share the build), kept until :meth:`evict` (the call
    ended) or until ``limit`` newer calls pushed them out."""

    def __init__(self, build: Builder, *, limit: int = 2000) -> None:
        self.build = build
        self.limit = limit
        self.entries: OrderedDict[str, PopEntry] = OrderedDict()
        self.counters = {"built": 0, "reused": 0, "evicted": 0}
        self.latency: list[float] = []  # seconds per build, the last 1000

    def get(self, call_id: str, facts: Callable[[], dict[str, Any]]) -> asyncio.Future[dict[str, Any]]:
        """The pop of ``call_id``: the cached one, or a build started now from ``facts()``."""
        entry = self.entries.get(call_id)
        if entry is not None and not (entry.task.done() and entry.task.cancelled()):
            self.counters["reused"] += 1
            self.entries.move_to_end(call_id)
            return entry.task
        self.counters["built"] += 1
        entry = PopEntry(asyncio.ensure_future(self._timed(facts())))
        self.entries[call_id] = entry
        while len(self.entries) > self.limit:
            _, old = self.entries.popitem(last=False)
            old.task.cancel()
        return entry.task

    async def _timed(self, facts: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        pop = await self.build(facts)
        self.latency = self.latency[-999:] + [time.perf_counter() - started]
        return pop

    def ready(self, call_id: str) -> dict[str, Any] | None:
        entry = self.entries.get(call_id)
        if entry is None or not entry.task.done() or entry.task.cancelled() or entry.task.exception():
            return None
        return entry.task.result()

    def evict(self, call_id: str) -> None:
        entry = self.entries.pop(call_id, None)
        if entry is not None:
            self.counters["evicted"] += 1
            if not entry.task.done():
                entry.task.cancel()

    def first_view(self, call_id: str, username: str) -> bool:
        """True the first time ``username`` is shown the pop of ``call_id`` (then it goes in the access log)."""
        entry = self.entries.get(call_id)
        if entry is None or username in entry.shown:
            return False
        entry.shown.add(username)
        return True

    def clear(self) -> None:
        for entry in self.entries.values():
            if not entry.task.done():
                entry.task.cancel()
        self.entries.clear()


async def log_pop(engine: Any, *, username: str, role: str, pop: Mapping[str, Any], call_id: str) -> None:
    """One ``pop`` row in the directory's access log: who was shown which elder for which call."""
    store = getattr(engine, "directory", None)
    if store is None:
        return
    elder = pop.get("elder") or {}
    try:
        await store.log_access(username=username, role=role, action="pop", elder_id=elder.get("id"),
                               detail=f"call {call_id}")
    except Exception:
        log.exception("desk.pop.audit_failed", call_id=call_id, username=username)
