"""The personal-data access log, written off the request path: who saw or changed which elder, when.

Every profile view, pop, search, history read and write of the desktop adds one ``profile_access`` row. A commit
per row made every read a write and put the desktop's reads behind SQLite's single writer (p99 of hundreds of
milliseconds under 50 operators). :class:`AccessLogWriter` queues the rows without touching the database and
writes them in batches (:class:`callcenter.store.batches.BatchWriter`, as the CDR writer and the ACD's queue
event log do):

- a row is in the table at most ``interval`` seconds (0.2 s) after it was logged while the database answers, and
  :meth:`callcenter.directory.store.DirectoryStore.access_log` (the auditors' query) first waits for every row
  logged before it (``flush``): an auditor never misses a view that already happened;
- a failed write is logged (``directory.access_log.write_failed``) and retried with backoff, a row the database
  refuses is logged whole (``directory.access_log.rejected``), and rows still queued when ``close`` gives up are
  logged one by one (``directory.access_log.lost``, error level, every field): no row disappears without a trace;
- ``close`` writes what is queued (the engine closes the writer after its web server, before the database).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.directory.models import ProfileAccess
from callcenter.store.batches import BatchWriter

A = ProfileAccess.__table__


class AccessLogWriter(BatchWriter[dict[str, Any]]):
    """Writes ``profile_access`` rows (dicts of its columns, ``at`` an aware datetime) in the background."""

    prefix = "directory.access_log"
    noun = "rows"

    def __init__(self, db: AsyncEngine, *, batch_size: int = 500, interval: float = 0.2, retry_delay: float = 0.5,
                 max_retry_delay: float = 30.0, backlog_warning: int = 10_000) -> None:
        super().__init__(batch_size=batch_size, interval=interval, retry_delay=retry_delay,
                         max_retry_delay=max_retry_delay, backlog_warning=backlog_warning)
        self._db = db

    def record(self, row: dict[str, Any]) -> None:
        """Queue ``row``; returns at once (call it from the event loop's thread). After close() the row is
        logged (``directory.access_log.lost``) instead."""
        self._add(row)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    def _fields(self, item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "at": item["at"].isoformat(), "call_id": _call_id(item)}

    def _call_id(self, item: dict[str, Any]) -> str | None:
        return _call_id(item)

    async def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        async with self._db.begin() as conn:
            await conn.execute(insert(A), batch)


def _call_id(row: dict[str, Any]) -> str | None:
    """A pop's row says "call <id>" in its detail."""
    detail = row.get("detail") or ""
    return detail[5:] if detail.startswith("call ") else None
