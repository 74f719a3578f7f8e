"""The queue event writer (callcenter.acd.eventlog) against a temporary SQLite database with the migrations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.acd.eventlog import QueueEventWriter, event_row, events_between
from callcenter.acd.events import QueueEvent
from callcenter.store.db import create_engine_for, run_migrations
from callcenter.store.models import QueueEventRow

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def event(index: int, **changes) -> QueueEvent:
    values = dict(at=T0.timestamp() + index + 0.25, kind="connect", call_id=f"call-{index}@10.0.0.1",
                  queue="hotline", priority="normal", operator="1001", wait=3.5, seconds=None, detail="")
    values.update(changes)
    return QueueEvent(**values)


@pytest.fixture
def db_url(tmp_path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    return url


async def stored_rows(engine) -> list[QueueEventRow]:
    async with AsyncSession(engine) as session:
        return list(await session.scalars(select(QueueEventRow).order_by(QueueEventRow.id)))


def test_events_round_trip(db_url: str) -> None:
    events = [
        event(0, kind="enter", operator=None, wait=None),
        event(1, kind="offer"),
        event(2, kind="miss", detail="no_answer"),
        event(3, kind="connect", wait=12.25),
        event(4, kind="complete", seconds=61.5, wait=None),
        event(5, kind="preempt", priority="urgent", detail="emergency-call@x"),
        event(6, kind="enter", queue="emergency", priority="emergency", operator=None, wait=None, detail="requeue"),
        event(7, kind="wrapup", seconds=30.0, wait=None, detail="说明 \"quoted\""),
    ]

    async def main():
        engine = create_engine_for(db_url)
        writer = QueueEventWriter(engine, node="node1")
        await writer.start()
        for item in events:
            writer.record(item)
        await writer.close()
        rows = await stored_rows(engine)
        back = await events_between(engine, T0, T0 + timedelta(seconds=5))
        await engine.dispose()
        return writer, rows, back

    writer, rows, back = asyncio.run(main())
    assert writer.written == len(events) and writer.pending == 0 and writer.lost == 0
    assert [(r.kind, r.call_id, r.node) for r in rows] == [(e.kind, e.call_id, "node1") for e in events]
    assert rows[0].at == T0 + timedelta(seconds=0.25) and rows[0].at.tzinfo is not None
    assert rows[3].wait == 12.25 and rows[4].seconds == 61.5 and rows[0].operator is None
    assert back == events[:5]  # [start, end), in recorded order, the same QueueEvents again


def test_record_never_touches_the_database_and_close_flushes_everything(db_url: str) -> None:
    class Watching(QueueEventWriter):
        writes = 0

        async def _write_batch(self, batch):
            Watching.writes += 1
            await super()._write_batch(batch)

    async def main():
        engine = create_engine_for(db_url)
        writer = Watching(engine, batch_size=100, interval=60.0)  # the interval alone would never write
        await writer.start()
        for index in range(1234):
            writer.record(event(index))
        recorded_writes = Watching.writes  # nothing written while record() ran: no await in between
        pending = writer.pending
        await writer.close()
        rows = await stored_rows(engine)
        writer.record(event(9999))  # after close: logged as lost, not queued
        await engine.dispose()
        return writer, recorded_writes, pending, rows

    writer, recorded_writes, pending, rows = asyncio.run(main())
    assert recorded_writes == 0 and pending == 1234
    assert len(rows) == 1234 and writer.written == 1234 and writer.pending == 0 and writer.lost == 1
    assert Watching.writes == 13  # batches of at most 100


def test_flush_waits_for_the_events_so_far(db_url: str) -> None:
    async def main():
        engine = create_engine_for(db_url)
        writer = QueueEventWriter(engine, interval=30.0)
        await writer.start()
        writer.record(event(1))
        writer.record(event(2))
        await writer.flush()
        rows = await stored_rows(engine)
        await writer.close()
        await engine.dispose()
        return rows

    assert [r.call_id for r in asyncio.run(main())] == ["call-1@10.0.0.1", "call-2@10.0.0.1"]


def test_failing_write_is_retried_with_backoff(db_url: str) -> None:
    class Flaky(QueueEventWriter):
        attempts = 0

        async def _write_batch(self, batch):
            Flaky.attempts += 1
            if Flaky.attempts <= 2:
                raise OperationalError("INSERT", {}, Exception("database is locked"))
            await super()._write_batch(batch)

    async def main():
        engine = create_engine_for(db_url)
        writer = Flaky(engine, retry_delay=0.01)
        await writer.start()
        for index in range(50):
            writer.record(event(index))
        await writer.close()
        rows = await stored_rows(engine)
        await engine.dispose()
        return writer, rows

    writer, rows = asyncio.run(main())
    assert writer.failures == 2 and writer.written == 50 and len(rows) == 50  # no duplicates from retries


def test_rejected_event_is_isolated_and_bad_times_refused(db_url: str) -> None:
    class Picky(QueueEventWriter):
        async def _write_batch(self, batch):
            if any(row["call_id"] == "call-3@10.0.0.1" for row in batch):
                from sqlalchemy.exc import DataError
                raise DataError("INSERT", {}, Exception("value too long"))
            await super()._write_batch(batch)

    async def main():
        engine = create_engine_for(db_url)
        writer = Picky(engine)
        await writer.start()
        for index in range(6):
            writer.record(event(index))
        writer.record(event(7, at=float("nan")))
        await writer.close()
        rows = await stored_rows(engine)
        await engine.dispose()
        return writer, rows

    writer, rows = asyncio.run(main())
    assert writer.rejected == 2 and writer.written == 5
    assert "call-3@10.0.0.1" not in {r.call_id for r in rows} and len(rows) == 5


def test_row_conversion() -> None:
    row = event_row(event(0, detail="x" * 300), node="n1")
    assert row["at"] == T0 + timedelta(seconds=0.25) and len(row["detail"]) == 255 and row["node"] == "n1"
    with pytest.raises(ValueError):
        event_row(event(0, at=float("inf")))


def test_close_timeout_logs_what_was_not_written(db_url: str) -> None:
    class Stuck(QueueEventWriter):
        async def _write_batch(self, batch):
            await asyncio.sleep(3600)

    async def main():
        engine = create_engine_for(db_url)
        writer = Stuck(engine)
        await writer.start()
        for index in range(3):
            writer.record(event(index))
        await writer.close(timeout=0.05)
        await engine.dispose()
        return writer

    writer = asyncio.run(main())
    assert writer.lost == 3 and writer.written == 0 and writer.pending == 0
