"""The queue event log in the database (table ``queue_events``): a background writer and the reader the reports
use.

:class:`QueueEventWriter` is an :class:`~callcenter.acd.events.EventSink`: ``record()`` never blocks and never
touches the database; one background task inserts the events in batches (up to ``batch_size`` per transaction,
waiting at most ``interval`` seconds for a batch to fill), like the CDR writer: both are
:class:`~callcenter.store.batches.BatchWriter`.
A failed write is logged and retried with backoff (a failed transaction inserts nothing, so a retry never
duplicates rows); an event is only dropped when the database rejects it on its own (bad data), and then the
whole event is logged (``acd.eventlog.rejected``), as are events that could not be written by close()
(``acd.eventlog.lost``), so nothing is lost without a trace in the log.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.acd.events import QueueEvent
from callcenter.logs import get_logger
from callcenter.store.batches import BatchWriter
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


def _log_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "at": row["at"].isoformat()}


class QueueEventWriter(BatchWriter[dict[str, Any]]):
    """Writes queue events to ``queue_events`` in the background (one writer per engine); ``node`` is stored
    with every row. Use from the event loop's thread: ``await start()``, ``record()`` …, ``await close()``."""

    prefix = "acd.eventlog"
    noun = "events"

    def __init__(self, db_engine: AsyncEngine, *, node: str | None = None, batch_size: int = 500,
                 interval: float = 0.2, retry_delay: float = 0.5, max_retry_delay: float = 30.0,
                 backlog_warning: int = 10_000) -> None:
        super().__init__(batch_size=batch_size, interval=interval, retry_delay=retry_delay,
                         max_retry_delay=max_retry_delay, backlog_warning=backlog_warning)
        self._engine = db_engine
        self.node = node

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
        self._add(row)

    def _fields(self, item: dict[str, Any]) -> dict[str, Any]:
        return _log_fields(item)

    def _call_id(self, item: dict[str, Any]) -> Any:
        return item["call_id"]

    async def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(insert(QueueEventRow.__table__), batch)


async def events_between(engine: AsyncEngine, start: dt.datetime, end: dt.datetime) -> list[QueueEvent]:
    """The events with ``start`` <= at < ``end`` (aware datetimes), in the order they were recorded."""
    async with AsyncSession(engine) as session:
        rows = await session.scalars(
            select(QueueEventRow).where(QueueEventRow.at >= start, QueueEventRow.at < end)
            .order_by(QueueEventRow.at, QueueEventRow.id))
        return [row_event(row) for row in rows]
