"""Callback tasks and voicemail messages in the database.

A callback task is created when a caller asks for one in the IVR (and, with the ACD, for abandoned and
missed calls); a voicemail message left in a flow's record node is stored with its call. Writes are
asynchronous (async SQLAlchemy on the engine's loop) and a failure is logged with the call id: the
message file itself is already safe on disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.store.models import CallbackTask, Voicemail

log = structlog.get_logger("callcenter.acd")


class CallbackTasks:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pending: set[asyncio.Task[Any]] = set()

    async def create(self, *, number: str, call_id: str | None, elder_id: int | None, reason: str, source: str,
                     due_at: dt.datetime, flow: str | None = None, queue: str | None = None,
                     merge: bool = False) -> int:
        """A new open task; with ``merge``, an open task for the same number takes the new reason instead
        (an elder who hangs up five times is called back once, with the five reasons in the task)."""
        now = dt.datetime.now(dt.UTC)
        async with AsyncSession(self.engine) as session, session.begin():
            if merge and number:
                existing = await session.scalar(select(CallbackTask).where(
                    CallbackTask.number == number, CallbackTask.state.in_(("open", "dialling")))
                    .order_by(CallbackTask.id).limit(1))
                if existing is not None:
                    existing.reason = f"{existing.reason}; {reason}"[-255:]
                    existing.due_at = min(_aware(existing.due_at), due_at)
                    task_id = int(existing.id)
                    log.info("acd.callback.merged", call_id=call_id, task_id=task_id, number=number,
                             reason=reason, source=source)
                    return task_id
            task = CallbackTask(call_id=call_id, number=number, elder_id=elder_id, reason=reason[:255],
                                source=source, state="open", due_at=due_at, attempts=0, created_at=now, flow=flow,
                                queue=queue)
            session.add(task)
            await session.flush()
            task_id = int(task.id)
        log.info("acd.callback.created", call_id=call_id, task_id=task_id, number=number, reason=reason,
                 source=source, due_at=due_at.isoformat())
        return task_id

    async def close_reached(self, number: str, call_id: str) -> list[int]:
        """The caller called again and an operator answered: their abandoned/missed tasks are done."""
        now = dt.datetime.now(dt.UTC)
        async with AsyncSession(self.engine) as session, session.begin():
            rows = list(await session.scalars(select(CallbackTask).where(
                CallbackTask.number == number, CallbackTask.state == "open",
                CallbackTask.source.in_(("abandoned", "missed")))))
            for task in rows:
                task.state, task.closed_at = "completed", now
                task.outcome = f"the caller called again and was answered (call {call_id})"[:255]
            closed = [int(t.id) for t in rows]
        if closed:
            log.info("acd.callback.reached", call_id=call_id, tasks=closed, number=number)
        return closed

    # -- dialling (callcenter.acd.dialler) -------------------------------------------------------------
    async def start_attempt(self, task_id: int, operator: str) -> CallbackTask | None:
        """open → dialling, one more attempt; None when the task is not open."""
        now = dt.datetime.now(dt.UTC)
        async with AsyncSession(self.engine, expire_on_commit=False) as session, session.begin():
            task = await session.get(CallbackTask, task_id, with_for_update=True)
            if task is None or task.state != "open":
                return None
            task.state, task.attempts = "dialling", task.attempts + 1
            task.last_attempt_at, task.operator = now, operator
            return task

    async def attempt_failed(self, task_id: int, outcome: str, *, retry: list[float], counted: bool = True,
                             max_attempts: int = 0) -> None:
        """dialling → open; the next attempt is due after the backoff for this attempt's number."""
        now = dt.datetime.now(dt.UTC)
        async with AsyncSession(self.engine) as session, session.begin():
            task = await session.get(CallbackTask, task_id, with_for_update=True)
            if task is None or task.state != "dialling":
                return
            if not counted:
                task.attempts = max(0, task.attempts - 1)
            wait = retry[min(max(task.attempts, 1), len(retry)) - 1] if retry else 0.0
            task.state, task.due_at = "open", now + dt.timedelta(seconds=wait if counted else 0.0)
            note = f"attempt {task.attempts}: {outcome}" if counted else \
                f"not dialled ({outcome}); {task.outcome or ''}".rstrip("; ")
            if max_attempts and task.attempts >= max_attempts:
                note += f"; {task.attempts} attempts: a supervisor decides"
            task.outcome = note[:255]
        log.info("acd.callback.not_reached", task_id=task_id, outcome=outcome, counted=counted)

    async def attempt_reached(self, task_id: int) -> None:
        """dialling → open, waiting for the operator to complete or close it with the result."""
        async with AsyncSession(self.engine) as session, session.begin():
            task = await session.get(CallbackTask, task_id, with_for_update=True)
            if task is None or task.state != "dialling":
                return
            task.state = "open"
            task.outcome = f"reached on attempt {task.attempts}: complete or close it with the result"
        log.info("acd.callback.reached_elder", task_id=task_id)

    async def finish(self, task_id: int, *, state: str, outcome: str, by: str) -> CallbackTask | None:
        """The only way a task ends: "completed" or "closed", with the outcome (a reason) and who."""
        if state not in ("completed", "closed"):
            raise ValueError("a task ends as completed or closed")
        now = dt.datetime.now(dt.UTC)
        async with AsyncSession(self.engine, expire_on_commit=False) as session, session.begin():
            task = await session.get(CallbackTask, task_id, with_for_update=True)
            if task is None or task.state != "open":
                return None
            task.state, task.closed_at = state, now
            task.outcome = f"{outcome} ({by})"[:255]
            task.operator = task.operator or by
        log.info("acd.callback.finished", task_id=task_id, state=state, outcome=outcome, by=by,
                 call_id=task.call_id)
        return task

    async def get(self, task_id: int) -> CallbackTask | None:
        async with AsyncSession(self.engine) as session:
            return await session.get(CallbackTask, task_id)

    async def tasks(self, *, states: tuple[str, ...] = ("open", "dialling"), limit: int = 200) -> list[CallbackTask]:
        async with AsyncSession(self.engine) as session:
            rows = await session.scalars(select(CallbackTask).where(CallbackTask.state.in_(states))
                                         .order_by(CallbackTask.due_at, CallbackTask.id).limit(limit))
            return list(rows)

    async def recover_dialling(self) -> int:
        """At start: tasks left "dialling" by a stop or crash go back to "open" (the attempt is kept)."""
        async with AsyncSession(self.engine) as session, session.begin():
            rows = list(await session.scalars(select(CallbackTask).where(CallbackTask.state == "dialling")))
            for task in rows:
                task.state = "open"
                task.outcome = f"attempt {task.attempts} interrupted (engine stopped)"
        if rows:
            log.warning("acd.callback.recovered", tasks=[int(t.id) for t in rows])
        return len(rows)

    async def open_numbers(self, sources: tuple[str, ...]) -> set[str]:
        async with AsyncSession(self.engine) as session:
            rows = await session.scalars(select(CallbackTask.number).where(
                CallbackTask.state.in_(("open", "dialling")), CallbackTask.source.in_(sources)).distinct())
            return set(rows)

    async def open_tasks(self, limit: int = 100) -> list[CallbackTask]:
        async with AsyncSession(self.engine) as session:
            rows = await session.scalars(select(CallbackTask).where(CallbackTask.state == "open")
                                         .order_by(CallbackTask.due_at).limit(limit))
            return list(rows)

    def store_voicemail(self, *, call_id: str, flow: str, node: str, caller_number: str, path: str,
                        seconds: float) -> None:
        """Record a voicemail message (in the background)."""
        task = asyncio.ensure_future(self._store_voicemail(call_id, flow, node, caller_number, path, seconds))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _store_voicemail(self, call_id: str, flow: str, node: str, caller_number: str, path: str,
                               seconds: float) -> None:
        try:
            async with AsyncSession(self.engine) as session, session.begin():
                session.add(Voicemail(call_id=call_id, flow=flow, node=node, caller_number=caller_number or None,
                                      path=path, seconds=round(seconds, 3), created_at=dt.datetime.now(dt.UTC)))
            log.info("ivr.voicemail.stored", call_id=call_id, path=path, seconds=round(seconds, 1))
        except Exception as exc:
            log.error("ivr.voicemail.store_failed", call_id=call_id, path=path, error=str(exc))

    async def voicemails(self, limit: int = 100) -> list[Voicemail]:
        async with AsyncSession(self.engine) as session:
            rows = await session.scalars(select(Voicemail).order_by(Voicemail.created_at.desc()).limit(limit))
            return list(rows)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
