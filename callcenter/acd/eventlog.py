"""The queue event log in the database (table ``queue_events``): a background writer and the reader the reports
use.

:class:`QueueEventWriter` is an :class:`~callcenter.acd.events.EventSink`: ``record()`` never blocks and never
touches the database; one background task inserts the events in batches (up to ``batch_size`` per transaction,
waiting at most ``interval`` seconds for a batch to fill), like the CDR writer (:mod:`callcenter.store.cdr`).
A failed write is logged and retried with backoff (a failed transaction inserts nothing, so a retry never
duplicates rows); an event is only dropped when the database rejects it on its own (bad data), and then the
whole event is logged (``acd.eventlog.rejected``), as are events that could not be written by close()
(``acd.eventlog.lost``), so nothing is lost without a trace in the log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.acd.events import QueueEvent
from callcenter.logs import get_logger
from callcenter.store.models import QueueEventRow

log = get_logger(__name__)

DETAIL_LENGTH = 255  # the column's length; a longer detail is cut (it is free text)


def event_row(event: QueueEvent, node: str | None = None) -> dict[str, Any]:
    """The ``queue_events`` row of ``event``: ``at`` (Unix seconds) becomes an aware UTC datetime. Raises
    ValueError when ``at`` is no usable time."""
    try:
        at = dt.datetime.fromtimestamp(event.at, dt.UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"at={event.at!r} is not a time: {exc}") from None
    return {"at": at, "kind": event.kind, "call_id": event.call_id, "queue": event.queue,
            "priority": event.priority, "operator": event.operator, "wait": event.wait, "seconds": event.seconds,
            "detail": event.detail[:DETAIL_LENGTH], "node": node}


def row_event(row: QueueEventRow) -> QueueEvent:
    """The QueueEvent a stored row came from (``at`` back in Unix seconds)."""
    return QueueEvent(at=row.at.timestamp(), kind=row.kind, call_id=row.call_id, queue=row.queue,
                      priority=row.priority, operator=row.operator, wait=row.wait, seconds=row.seconds,
                      detail=row.detail)


def _is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help: the database (or the type layer) rejects the data itself."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _log_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "at": row["at"].isoformat()}


class QueueEventWriter:
    """Writes queue events to ``queue_events`` in the background (one writer per engine); ``node`` is stored
    with every row. Use from the event loop's thread: ``await start()``, ``record()`` …, ``await close()``."""

    def __init__(self, db_engine: AsyncEngine, *, node: str | None = None, batch_size: int = 500,
                 interval: float = 0.2, retry_delay: float = 0.5, max_retry_delay: float = 30.0,
                 backlog_warning: int = 10_000) -> None:
        self._engine = db_engine
        self.node = node
        self.batch_size = batch_size
        self.interval = interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.backlog_warning = backlog_warning
        self._pending: deque[dict[str, Any]] = deque()
        self._recorded = 0  # events ever queued
        self._done = 0  # events written or (permanently) rejected, in order
        self.written = 0
        self.rejected = 0  # events the database (or event_row) refused; logged in full
        self.lost = 0  # events not written at close; logged in full
        self.failures = 0  # failed write attempts (each one retried)
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()  # skip the batching delay: batch full, flush or close requested
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Events recorded but not written yet."""
        return self._recorded - self._done

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("QueueEventWriter already started")
        self._task = asyncio.create_task(self._run(), name="queue-event-writer")

    def record(self, event: QueueEvent) -> None:
        """Queue ``event`` for writing; returns at once. After close() the event is logged
        (``acd.eventlog.lost``) instead."""
        try:
            row = event_row(event, self.node)
        except ValueError as exc:
            self.rejected += 1
            log.error("acd.eventlog.rejected", error=str(exc), kind=event.kind, call_id=event.call_id,
                      queue=event.queue, priority=event.priority, operator=event.operator, wait=event.wait,
                      seconds=event.seconds, detail=event.detail)
            return
        if self._closing and (self._task is None or self._task.done()):
            log.error("acd.eventlog.lost", reason="writer closed", **_log_fields(row))
            self.lost += 1
            return
        self._pending.append(row)
        self._recorded += 1
        if len(self._pending) >= self.batch_size:
            self._hurry.set()
        if len(self._pending) % self.backlog_warning == 0:
            log.warning("acd.eventlog.backlog", pending=len(self._pending), call_id=event.call_id)
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every event recorded so far is written (or rejected as invalid)."""
        if self._task is None:
            raise RuntimeError("QueueEventWriter not started")
        if self._done >= self._recorded:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._recorded, future))
        self._hurry.set()
        self._wakeup.set()
        await asyncio.shield(future)

    async def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop. After ``timeout`` seconds (if given) give up: the events not
        written are logged one by one (``acd.eventlog.lost``)."""
        self._closing = True
        self._hurry.set()
        self._wakeup.set()
        if self._task is None:
            self._log_lost()
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._log_lost()

    def _log_lost(self) -> None:
        for row in self._pending:
            log.error("acd.eventlog.lost", reason="close timeout", **_log_fields(row))
        self.lost += len(self._pending)
        self._done += len(self._pending)
        self._pending.clear()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError("QueueEventWriter closed before these events were written"))
        self._waiters.clear()

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            await self._wait_for_work()
            if not self._pending:
                return  # closing and drained
            batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
            try:
                await self._write_batch(batch)
            except asyncio.CancelledError:
                self._pending.extendleft(reversed(batch))
                raise
            except Exception as exc:
                if _is_permanent(exc):
                    batch = await self._write_one_by_one(batch)
                    if not batch:
                        delay = self.retry_delay
                        continue
                else:
                    self.failures += 1
                    log.warning("acd.eventlog.write_failed", events=len(batch), retry_in=delay, error=repr(exc),
                                call_id=batch[0]["call_id"])
                self._pending.extendleft(reversed(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            delay = self.retry_delay
            self.written += len(batch)
            self._completed(len(batch))

    async def _wait_for_work(self) -> None:
        while not self._pending and not self._closing:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._pending and len(self._pending) < self.batch_size and not (self._closing or self._waiters):
            self._hurry.clear()
            try:
                await asyncio.wait_for(self._hurry.wait(), self.interval)
            except TimeoutError:
                pass

    async def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(insert(QueueEventRow.__table__), batch)

    async def _write_one_by_one(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Isolate the events the database rejects; return the rest of the batch still to write (empty when
        everything was written or rejected) after a transient failure."""
        for index, row in enumerate(batch):
            try:
                await self._write_batch([row])
            except Exception as exc:
                if not _is_permanent(exc):
                    self.failures += 1
                    log.warning("acd.eventlog.write_failed", events=1, error=repr(exc), call_id=row["call_id"])
                    return batch[index:]
                self.rejected += 1
                log.error("acd.eventlog.rejected", error=repr(exc), **_log_fields(row))
            else:
                self.written += 1
            self._completed(1)
        return []

    def _completed(self, count: int) -> None:
        self._done += count
        ready = [(target, fut) for target, fut in self._waiters if target <= self._done]
        self._waiters = [(target, fut) for target, fut in self._waiters if target > self._done]
        for _, future in ready:
            if not future.done():
                future.set_result(None)


async def events_between(engine: AsyncEngine, start: dt.datetime, end: dt.datetime) -> list[QueueEvent]:
    """The events with ``start`` <= at < ``end`` (aware datetimes), in the order they were recorded."""
    async with AsyncSession(engine) as session:
        rows = await session.scalars(
            select(QueueEventRow).where(QueueEventRow.at >= start, QueueEventRow.at < end)
            .order_by(QueueEventRow.at, QueueEventRow.id))
        return [row_event(row) for row in rows]
