"""The access log written off the request path (callcenter.directory.access): rows queued without touching the
database, written within the interval, flushed before an auditor's read and at close; a failing database is
logged and retried without losing a row; rows that cannot be written by close are logged whole."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callcenter.directory.access import AccessLogWriter
from callcenter.directory.store import DirectoryStore
from callcenter.store.db import create_engine_for, run_migrations

NOW = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    run_migrations(f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}")
    return tmp_path / "cc.db"


def make_store(path: Path) -> DirectoryStore:
    return DirectoryStore(create_engine_for(f"sqlite+aiosqlite:///{path}"), now=lambda: NOW)


def stored(path: Path) -> list[tuple[str, str, int | None, str]]:
    """The rows as another program (an auditor's SQL) sees them."""
    with sqlite3.connect(path) as conn:
        return conn.execute("select username, action, elder_id, detail from profile_access order by id").fetchall()


def rename(path: Path, old: str, new: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"alter table {old} rename to {new}")


async def started(store: DirectoryStore, **options: float) -> AccessLogWriter:
    store.access = AccessLogWriter(store.db, **options)
    await store.access.start()
    return store.access


async def view(store: DirectoryStore, index: int) -> None:
    await store.log_access(username=f"op{index % 3}", role="operator", action="view", elder_id=index,
                           detail=f"call c{index}")


def test_a_read_does_not_write_and_its_row_lands_within_the_interval(path: Path) -> None:
    async def main() -> tuple[int, int, float, int]:
        store = make_store(path)
        await store.start()
        assert store.access is not None and store.access.interval <= 1.0
        writes = 0
        write_batch = store.access._write_batch

        async def counted(batch: list[dict[str, object]]) -> None:
            nonlocal writes
            writes += 1
            await write_batch(batch)

        store.access._write_batch = counted  # type: ignore[method-assign]
        for index in range(1, 51):
            await view(store, index)  # returns at once: no commit of its own
        queued, writes_then = len(stored(path)), writes
        logged = time.monotonic()
        while len(stored(path)) < 50 and time.monotonic() - logged < 5:
            await asyncio.sleep(0.02)
        delay = time.monotonic() - logged
        await store.close()
        await store.db.dispose()
        return queued, writes_then, delay, writes

    queued, writes_then, delay, writes = asyncio.run(main())
    assert queued == 0 and writes_then == 0  # nothing written while the requests ran
    assert delay < 1.0  # the documented bound (0.2 s interval; 1 s leaves room for a busy machine)
    assert writes == 1  # one transaction for the 50 rows
    assert len(stored(path)) == 50 and stored(path)[0] == ("op1", "view", 1, "call c1")


def test_an_auditors_read_sees_every_row_logged_before_it(path: Path) -> None:
    async def main() -> tuple[list[dict[str, object]], int]:
        store = make_store(path)
        writer = await started(store, interval=60.0)  # the interval alone would not write for a minute
        for index in range(1, 4):
            await view(store, index)
        assert stored(path) == []
        rows = await store.access_log()
        only = await store.access_log(elder_id=2)
        await store.close()
        await store.db.dispose()
        return rows, len(only) + writer.lost

    rows, rest = asyncio.run(main())
    assert [(r["username"], r["elder_id"]) for r in rows] == [("op0", 3), ("op2", 2), ("op1", 1)]
    assert rows[0]["at"] == "2026-03-01T02:00:00+00:00" and rest == 1


def test_close_writes_every_queued_row_and_later_rows_are_committed_directly(path: Path) -> None:
    async def main() -> AccessLogWriter:
        store = make_store(path)
        writer = await started(store, interval=60.0, batch_size=100)
        for index in range(1, 1001):
            await view(store, index)
        assert writer.pending == 1000 and stored(path) == []
        await store.close()
        assert len(stored(path)) == 1000
        await view(store, 1001)  # the engine stopping: written at once, not lost
        await store.db.dispose()
        return writer

    writer = asyncio.run(main())
    assert writer.written == 1000 and writer.lost == 0 and writer.pending == 0
    assert len(stored(path)) == 1001 and stored(path)[-1][2] == 1001


def test_a_failing_database_is_logged_and_retried_and_no_row_is_lost(path: Path) -> None:
    async def main() -> tuple[AccessLogWriter, list[dict[str, object]], list[dict[str, object]]]:
        store = make_store(path)
        writer = await started(store, interval=0.01, retry_delay=0.02, max_retry_delay=0.05)
        rename(path, "profile_access", "profile_access_away")  # the table is gone: every write fails
        with capture_logs() as logs:
            for index in range(1, 6):
                await view(store, index)
            deadline = time.monotonic() + 5
            while writer.failures < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            rename(path, "profile_access_away", "profile_access")  # back: the queued rows go in
            rows = await store.access_log()
        await store.close()
        await store.db.dispose()
        return writer, rows, logs

    writer, rows, logs = asyncio.run(main())
    failed = [e for e in logs if e["event"] == "directory.access_log.write_failed"]
    assert writer.failures >= 3 and len(failed) >= 3
    assert failed[0]["log_level"] == "warning" and failed[0]["rows"] == 5 and "no such table" in failed[0]["error"]
    assert failed[0]["call_id"] == "c1"
    assert sorted(r["elder_id"] for r in rows) == [1, 2, 3, 4, 5] and writer.written == 5 and writer.lost == 0
    assert len(stored(path)) == 5  # retries did not write a row twice


def test_rows_that_cannot_be_written_by_close_are_logged_whole(path: Path) -> None:
    async def main() -> tuple[AccessLogWriter, list[dict[str, object]]]:
        store = make_store(path)
        writer = await started(store, interval=0.01, retry_delay=0.02, max_retry_delay=0.05)
        rename(path, "profile_access", "profile_access_away")
        with capture_logs() as logs:
            await store.log_access(username="auditor1", role="auditor", action="view", elder_id=7, detail="history")
            await store.log_access(username="op1", role="operator", action="search", detail="q=王")
            await store.close(timeout=0.3)
        await store.db.dispose()
        return writer, logs

    writer, logs = asyncio.run(main())
    lost = [e for e in logs if e["event"] == "directory.access_log.lost"]
    assert writer.lost == 2 and writer.written == 0 and writer.pending == 0
    assert [(e["log_level"], e["username"], e["role"], e["action"], e["elder_id"], e["detail"], e["at"])
            for e in lost] == [
        ("error", "auditor1", "auditor", "view", 7, "history", "2026-03-01T02:00:00+00:00"),
        ("error", "op1", "operator", "search", None, "q=王", "2026-03-01T02:00:00+00:00")]
