"""Call detail records: queued by the call code without waiting, written in batches by one background task.

``submit()`` never blocks and never touches the database; the writer task takes up to ``batch_size`` records
per transaction (waiting at most ``interval`` seconds for a batch to fill). A failed write is logged and
retried with backoff; records are only dropped when the database rejects one on its own (bad data), and then
the whole record is logged. Writes are upserts on ``call_id``, so a retried batch never duplicates rows."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.logs import get_logger
from callcenter.store.batches import BatchWriter
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
    party_number: str | None = None  # the other party as a directory key; the writer fills it (see CdrWriter)

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


class CdrWriter(BatchWriter[CallRecordData]):
    """Writes CallRecordData to the ``call_records`` table in the background (one writer per engine).

    ``party_key`` turns the other party's number (the caller of an inbound call, the dialled number of an outbound
    one) into the directory's key for ``party_number`` (the engine passes the directory's normalisation, so that
    an elder's calls are found by the elder's numbers); without it the column stays empty."""

    prefix = "store.cdr"
    noun = "records"

    def __init__(self, engine: AsyncEngine, *, batch_size: int = 200, interval: float = 0.1,
                 retry_delay: float = 0.5, max_retry_delay: float = 30.0, backlog_warning: int = 10_000,
                 party_key: Callable[[str], str] | None = None) -> None:
        super().__init__(batch_size=batch_size, interval=interval, retry_delay=retry_delay,
                         max_retry_delay=max_retry_delay, backlog_warning=backlog_warning)
        self._engine = engine
        self._stmt = _upsert(engine.dialect.name)
        self.party_key = party_key

    def submit(self, record: CallRecordData) -> None:
        """Queue ``record`` for writing; returns at once. Call it from the event loop's thread. After close()
        the record can no longer be written: it is logged (``store.cdr.lost``) instead."""
        if record.party_number is None and self.party_key is not None:
            number = record.to_number if record.direction == "outbound" else record.from_number
            try:
                record.party_number = (self.party_key(number)[:64] or None) if number else None
            except Exception:  # a number the key function cannot read must not cost the record
                log.exception("store.cdr.party_number_failed", call_id=record.call_id, number=number)
        self._add(record)

    def _fields(self, item: CallRecordData) -> dict[str, Any]:
        return item.as_row()

    def _call_id(self, item: CallRecordData) -> str:
        return item.call_id

    async def _write_batch(self, batch: list[CallRecordData]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for record in batch:  # one row per call_id per statement (PostgreSQL refuses to upsert a row twice)
            rows.pop(record.call_id, None)
            rows[record.call_id] = record.as_row()
        async with self._engine.begin() as connection:
            await connection.execute(self._stmt, list(rows.values()))


async def recent_calls(engine: AsyncEngine, limit: int = 50) -> list[CallRecord]:
    """The latest ``limit`` call records, newest first (detached objects, safe to read after return)."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        result = await session.scalars(
            select(CallRecord).order_by(CallRecord.started_at.desc(), CallRecord.id.desc()).limit(limit))
        return list(result)
