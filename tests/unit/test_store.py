import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from callcenter.store.cdr import CallRecordData, CdrWriter, recent_calls
from callcenter.store.db import create_engine_for, run_migrations, sync_url
from callcenter.store.models import Base, CallRecord

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def record(index: int, **changes) -> CallRecordData:
    values = dict(call_id=f"call-{index}@10.0.0.1", direction="inbound", started_at=T0 + timedelta(seconds=index),
                  from_uri=f"sip:138{index:08d}@carrier", from_number=f"138{index:08d}", to_uri="sip:12349@cc",
                  to_number="12349", trunk="carrier", source="127.0.0.1:5080", transport="udp",
                  answered_at=T0 + timedelta(seconds=index + 2), ended_at=T0 + timedelta(seconds=index + 60),
                  end_reason="caller_bye", sip_status=200, ended_by="caller", node="node1")
    values.update(changes)
    return CallRecordData(**values)


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'callcenter.db'}"
    run_migrations(url)
    return url


def test_migrations_create_table_matching_models(tmp_path, db_url):
    path = tmp_path / "sub" / "callcenter.db"
    with sqlite3.connect(path) as conn:
        assert conn.execute("select version_num from alembic_version").fetchall() == [("0005",)]
        columns = [row[1] for row in conn.execute("pragma table_info(call_records)")]
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)
    assert columns == [c.name for c in CallRecord.__table__.columns]
    run_migrations(db_url)  # idempotent
    engine = create_engine(sync_url(db_url))
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_sync_url():
    assert str(sync_url("sqlite+aiosqlite:///data/x.db")) == "sqlite:///data/x.db"
    assert sync_url("postgresql+asyncpg://u:p@db/cc").drivername in ("postgresql+psycopg", "postgresql+psycopg2")
    assert str(sync_url("sqlite:///x.db")) == "sqlite:///x.db"


def test_engine_pragmas(db_url):
    async def main():
        engine = create_engine_for(db_url)
        async with engine.connect() as conn:
            mode = (await conn.execute(text("pragma journal_mode"))).scalar()
            timeout = (await conn.execute(text("pragma busy_timeout"))).scalar()
        await engine.dispose()
        return mode, timeout

    assert asyncio.run(main()) == ("wal", 5000)


def test_thousand_records_written_after_close(db_url):
    async def main():
        engine = create_engine_for(db_url)
        writer = CdrWriter(engine)
        await writer.start()
        for index in range(1000):
            writer.submit(record(index))
        assert writer.pending == 1000
        await writer.close()
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(CallRecord))).scalar()
        latest = await recent_calls(engine, limit=3)
        await engine.dispose()
        return writer, count, latest

    writer, count, latest = asyncio.run(main())
    assert count == 1000 and writer.written == 1000 and writer.pending == 0
    assert [r.call_id for r in latest] == ["call-999@10.0.0.1", "call-998@10.0.0.1", "call-997@10.0.0.1"]
    assert latest[0].started_at == T0 + timedelta(seconds=999) and latest[0].started_at.tzinfo is not None
    assert latest[0].sip_status == 200 and latest[0].to_number == "12349"


def test_flush_and_batching_interval(db_url):
    async def main():
        engine = create_engine_for(db_url)
        writer = CdrWriter(engine, interval=0.05)
        await writer.start()
        writer.submit(record(1, started_at=datetime(2025, 3, 1, 16, 0, tzinfo=timezone(timedelta(hours=8)))))
        await asyncio.sleep(0.3)  # written without a flush, after the batching interval
        first = await recent_calls(engine, 10)
        writer.submit(record(2))
        writer.submit(record(2, end_reason="local_bye"))  # same call again: the later record wins
        await writer.flush()
        second = await recent_calls(engine, 10)
        await writer.close()
        await engine.dispose()
        return first, second

    first, second = asyncio.run(main())
    assert [r.call_id for r in first] == ["call-1@10.0.0.1"]
    assert first[0].started_at == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)  # stored in UTC
    assert {r.call_id: r.end_reason for r in second} == {"call-1@10.0.0.1": "caller_bye",
                                                         "call-2@10.0.0.1": "local_bye"}


def test_failing_write_is_retried(db_url):
    class FlakyWriter(CdrWriter):
        attempts = 0

        async def _write_batch(self, batch):
            FlakyWriter.attempts += 1
            if FlakyWriter.attempts <= 2:
                raise OperationalError("INSERT", {}, Exception("database is locked"))
            await super()._write_batch(batch)

    async def main():
        engine = create_engine_for(db_url)
        writer = FlakyWriter(engine, retry_delay=0.01)
        await writer.start()
        for index in range(250):
            writer.submit(record(index))
        await writer.close()
        count = len(await recent_calls(engine, 1000))
        await engine.dispose()
        return writer, count

    writer, count = asyncio.run(main())
    assert writer.failures == 2 and writer.written == 250 and count == 250 and writer.lost == 0


def test_rejected_record_is_isolated(db_url):
    class PickyWriter(CdrWriter):
        async def _write_batch(self, batch):
            if any(r.call_id == "call-5@10.0.0.1" for r in batch):
                from sqlalchemy.exc import DataError
                raise DataError("INSERT", {}, Exception("value too long"))
            await super()._write_batch(batch)

    async def main():
        engine = create_engine_for(db_url)
        writer = PickyWriter(engine)
        await writer.start()
        for index in range(10):
            writer.submit(record(index))
        await writer.flush()
        await writer.close()
        count = len(await recent_calls(engine, 100))
        await engine.dispose()
        return writer, count

    writer, count = asyncio.run(main())
    assert (writer.written, writer.rejected, count) == (9, 1, 9)


def test_close_timeout_logs_lost_records(db_url):
    class DownWriter(CdrWriter):
        async def _write_batch(self, batch):
            raise OperationalError("INSERT", {}, Exception("connection refused"))

    async def main():
        engine = create_engine_for(db_url)
        writer = DownWriter(engine, retry_delay=0.01)
        await writer.start()
        writer.submit(record(1))
        await writer.close(timeout=0.2)
        await engine.dispose()
        return writer

    writer = asyncio.run(main())
    assert writer.lost == 1 and writer.failures >= 1 and writer.pending == 0


def test_record_validation():
    with pytest.raises(ValueError, match="direction"):
        record(1, direction="sideways")
    with pytest.raises(ValueError, match="timezone-aware"):
        record(1, started_at=datetime(2025, 1, 1))
