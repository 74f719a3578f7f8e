"""Call detail records: queued by the call code without waiting, written in batches by one background task.

``submit()`` never blocks and never touches the database; the writer task takes up to ``batch_size`` records
per transaction (waiting at most ``interval`` seconds for a batch to fill). A failed write is logged and
retried with backoff; records are only dropped when the database rejects one on its own (bad data), and then
the whole record is logged. Writes are upserts on ``call_id``, so a retried batch never duplicates rows."""

import asyncio
import dataclasses
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, insert, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.logs import get_logger
from callcenter.store.models import CallRecord

log = get_logger(__name__)

DIRECTIONS = ("inbound", "outbound")


@dataclass(slots=True)
class CallRecordData:
    """What the call code hands over when a call ends; mirrors the CallRecord columns (without ``id``)."""

    call_id: str
    direction: str
    started_at: datetime
    from_uri: str | None = None
    from_number: str | None = None
    from_display: str | None = None
    to_uri: str | None = None
    to_number: str | None = None
    trunk: str | None = None
    source: str | None = None
    transport: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    sip_status: int | None = None
    ended_by: str | None = None
    node: str | None = None

    def __post_init__(self) -> None:
        if not self.call_id:
            raise ValueError("call_id is required")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        for name in ("started_at", "answered_at", "ended_at"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")

    def as_row(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def _upsert(dialect_name: str) -> Insert:
    """INSERT … ON CONFLICT (call_id) DO UPDATE where the backend has it, else a plain INSERT."""
    table = CallRecord.__table__
    if dialect_name in ("sqlite", "postgresql"):
        if dialect_name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(table)
        columns = [c.name for c in table.columns if c.name not in ("id", "call_id")]
        return stmt.on_conflict_do_update(index_elements=["call_id"],
                                          set_={name: stmt.excluded[name] for name in columns})
    return insert(table)


def _is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help: the database (or the type layer) rejects the data itself."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


class CdrWriter:
    """Writes CallRecordData to the ``call_records`` table in the background (one writer per engine)."""

    def __init__(self, engine: AsyncEngine, *, batch_size: int = 200, interval: float = 0.1,
                 retry_delay: float = 0.5, max_retry_delay: float = 30.0, backlog_warning: int = 10_000) -> None:
        self._engine = engine
        self._stmt = _upsert(engine.dialect.name)
        self.batch_size = batch_size
        self.interval = interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.backlog_warning = backlog_warning
        self._pending: deque[CallRecordData] = deque()
        self._submitted = 0  # records ever submitted
        self._done = 0  # records written or (permanently) rejected, in submission order
        self.written = 0
        self.rejected = 0  # records the database refused (logged in full)
        self.lost = 0  # records not written at close (logged in full)
        self.failures = 0  # failed write attempts (each one retried)
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()  # skip the batching delay: batch full, flush or close requested
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Records submitted but not written yet."""
        return self._submitted - self._done

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("CdrWriter already started")
        self._task = asyncio.create_task(self._run(), name="cdr-writer")

    def submit(self, record: CallRecordData) -> None:
        """Queue ``record`` for writing; returns at once. Call it from the event loop's thread. After close()
        the record can no longer be written: it is logged (``store.cdr.lost``) instead."""
        if self._closing and (self._task is None or self._task.done()):
            log.error("store.cdr.lost", reason="writer closed", **record.as_row())
            self.lost += 1
            return
        self._pending.append(record)
        self._submitted += 1
        if len(self._pending) >= self.batch_size:
            self._hurry.set()
        if len(self._pending) % self.backlog_warning == 0:
            log.warning("store.cdr.backlog", pending=len(self._pending), call_id=record.call_id)
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every record submitted so far is written (or rejected as invalid)."""
        if self._task is None:
            raise RuntimeError("CdrWriter not started")
        if self._done >= self._submitted:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._submitted, future))
        self._hurry.set()
        self._wakeup.set()
        await asyncio.shield(future)

    async def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop. After ``timeout`` seconds (if given) give up: the records not
        written are logged one by one (``store.cdr.lost``) so they can be recovered from the log."""
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
        for record in self._pending:
            log.error("store.cdr.lost", reason="close timeout", **record.as_row())
        self.lost += len(self._pending)
        self._done += len(self._pending)
        self._pending.clear()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError("CdrWriter closed before these records were written"))
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
                    log.warning("store.cdr.write_failed", records=len(batch), retry_in=delay, error=repr(exc),
                                call_id=batch[0].call_id)
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

    async def _write_batch(self, batch: list[CallRecordData]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for record in batch:  # one row per call_id per statement (PostgreSQL refuses to upsert a row twice)
            rows.pop(record.call_id, None)
            rows[record.call_id] = record.as_row()
        async with self._engine.begin() as connection:
            await connection.execute(self._stmt, list(rows.values()))

    async def _write_one_by_one(self, batch: list[CallRecordData]) -> list[CallRecordData]:
        """Isolate the records the database rejects; return the rest of the batch still to write (empty when
        everything was written or rejected) after a transient failure."""
        for index, record in enumerate(batch):
            try:
                await self._write_batch([record])
            except Exception as exc:
                if not _is_permanent(exc):
                    self.failures += 1
                    log.warning("store.cdr.write_failed", records=1, error=repr(exc), call_id=record.call_id)
                    return batch[index:]
                self.rejected += 1
                log.error("store.cdr.rejected", error=repr(exc), **record.as_row())
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


async def recent_calls(engine: AsyncEngine, limit: int = 50) -> list[CallRecord]:
    """The latest ``limit`` call records, newest first (detached objects, safe to read after return)."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        result = await session.scalars(
            select(CallRecord).order_by(CallRecord.started_at.desc(), CallRecord.id.desc()).limit(limit))
        return list(result)
