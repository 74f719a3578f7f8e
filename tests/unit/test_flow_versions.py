import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, select

from callcenter.ivr.versions import FlowStore, UnknownVersion, text_sha256, unified_diff
from callcenter.store.db import create_engine_for, run_migrations, sync_url
from callcenter.store.models import Base, CallbackTask, Voicemail

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
V1 = "start: greet\nnodes:\n  greet:\n    type: play\n    prompt: hello\n"
V2 = V1.replace("hello", "welcome")
V3 = V2 + "  bye:\n    type: hangup\n"


class Ticker:
    """A clock that moves one minute per call."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'callcenter.db'}"
    run_migrations(url)
    return url


def run(db_url, scenario):
    """Run ``scenario(store)`` on a fresh engine and return its result."""
    async def main():
        engine = create_engine_for(db_url)
        try:
            return await scenario(FlowStore(engine, clock=Ticker()))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_publish_versions_with_diff(db_url):
    async def scenario(store):
        first = await store.publish("main", V1, author="alice", origin="file", source_path="ivr_flows/main.yaml")
        second = await store.publish("main", V2, author="bob", origin="api", note="friendlier")
        return first, second, await store.live("main"), await store.flows()

    (v1, created1), (v2, created2), live, flows = run(db_url, scenario)
    assert created1 and created2 and flows == ["main"]
    assert (v1.version, v1.author, v1.origin, v1.source_path, v1.diff) == (1, "alice", "file",
                                                                           "ivr_flows/main.yaml", "")
    assert v1.sha256 == text_sha256(V1) and v1.created_at == T0 + timedelta(minutes=1)
    assert v1.created_at.tzinfo is not None
    assert (v2.version, v2.note, v2.text) == (2, "friendlier", V2)
    assert v2.diff.startswith("--- main v1\n+++ main v2\n")
    assert "-    prompt: hello\n" in v2.diff and "+    prompt: welcome\n" in v2.diff
    assert live == v2 and live.live


def test_identical_republish_stores_nothing(db_url):
    async def scenario(store):
        await store.publish("main", V1, author="alice", origin="file")
        again = await store.publish("main", V1, author="bob", origin="cli")
        return again, await store.history("main")

    (version, created), history = run(db_url, scenario)
    assert not created and version.version == 1 and version.author == "alice" and version.live
    assert len(history) == 1


def test_concurrent_publishes_get_consecutive_numbers(db_url):
    async def scenario(store):
        results = await asyncio.gather(store.publish("main", V1, author="a", origin="cli"),
                                       store.publish("main", V2, author="b", origin="api"))
        return results, await store.history("main"), await store.live_pointers()

    results, history, pointers = run(db_url, scenario)
    assert sorted(v.version for v, created in results if created) == [1, 2]
    assert [v.version for v in history] == [2, 1]
    assert pointers == {"main": 2}
    assert history[0].diff.startswith("--- main v1\n+++ main v2\n")  # diffed against the winner's v1


def test_two_stores_on_two_engines_publish_concurrently(db_url):
    async def main():
        engines = [create_engine_for(db_url) for _ in range(2)]
        stores = [FlowStore(engine) for engine in engines]
        texts = [f"{V1}# edit {i}\n" for i in range(4)]
        await asyncio.gather(*(stores[i % 2].publish("main", text, author="x", origin="cli")
                               for i, text in enumerate(texts)))
        history = await stores[0].history("main")
        for engine in engines:
            await engine.dispose()
        return history

    history = asyncio.run(main())
    assert [v.version for v in history] == [4, 3, 2, 1]
    assert sum(v.live for v in history) == 1 and history[0].live


def test_history_rollback_and_live_flag(db_url):
    async def scenario(store):
        for text in (V1, V2, V3):
            await store.publish("main", text, author="alice", origin="file")
        rolled = await store.rollback("main", 1, author="carol")
        with pytest.raises(ValueError, match=r"v1 is already what is live \(v4 has the same text\)"):
            await store.rollback("main", 1, author="carol")
        with pytest.raises(ValueError, match=r"v4 is already what is live$"):
            await store.rollback("main", 4, author="carol")
        return rolled, await store.history("main"), await store.live("main"), await store.get("main", 2)

    rolled, history, live, v2 = run(db_url, scenario)
    assert (rolled.version, rolled.origin, rolled.note, rolled.author, rolled.text) == (
        4, "rollback", "rollback to v1", "carol", V1)
    assert rolled.diff.startswith("--- main v3\n+++ main v4\n")
    assert [(v.version, v.live) for v in history] == [(4, True), (3, False), (2, False), (1, False)]
    assert live.version == 4 and live.text == V1
    assert v2.version == 2 and v2.text == V2 and not v2.live


def test_unknown_version(db_url):
    async def scenario(store):
        for text in (V1, V2, V3):
            await store.publish("main", text, author="alice", origin="cli")
        errors = []
        for flow, version in (("main", 7), ("other", 1)):
            with pytest.raises(UnknownVersion) as info:
                await store.rollback(flow, version, author="carol")
            errors.append(str(info.value))
        return errors, await store.live_pointers()

    errors, pointers = run(db_url, scenario)
    assert errors == ["flow 'main' has no version 7 (versions: 1-3)", "flow 'other' has no version 1 (it has no "
                                                                       "versions)"]
    assert pointers == {"main": 3}


def test_last_from_file_ignores_cli_and_rollback(db_url):
    async def scenario(store):
        assert await store.last_from_file("main") is None
        await store.publish("main", V1, author="file-watcher", origin="file")
        await store.publish("main", V2, author="bob", origin="cli")
        await store.rollback("main", 1, author="carol")
        first = await store.last_from_file("main")
        await store.publish("main", V3, author="file-watcher", origin="file")
        return first, await store.last_from_file("main")

    first, second = run(db_url, scenario)
    assert (first.version, first.origin, first.text, first.live) == (1, "file", V1, False)
    assert (second.version, second.text, second.live) == (4, V3, True)


def test_live_all_and_pointers_for_several_flows(db_url):
    async def scenario(store):
        await store.publish("main", V1, author="a", origin="file")
        await store.publish("night", V1, author="a", origin="file")
        await store.publish("night", V2, author="a", origin="file")
        return await store.live_all(), await store.live_pointers(), await store.flows(), await store.live("none")

    live_all, pointers, flows, missing = run(db_url, scenario)
    assert {name: v.version for name, v in live_all.items()} == {"main": 1, "night": 2} == pointers
    assert all(v.live for v in live_all.values()) and flows == ["main", "night"] and missing is None


def test_bad_arguments_are_refused(db_url):
    async def scenario(store):
        for kwargs, message in ((dict(flow="bad name"), "letters, digits"), (dict(flow="x" * 65), "longer"),
                                (dict(origin="ftp"), "origin"), (dict(author=""), "author")):
            args = dict(flow="main", text=V1, author="a", origin="cli") | kwargs
            with pytest.raises(ValueError, match=message):
                await store.publish(args.pop("flow"), args.pop("text"), **args)
        return await store.flows()

    assert run(db_url, scenario) == []


def test_unified_diff_marks_missing_final_newline():
    diff = unified_diff("a\nb", "a\nc\n", "f v1", "f v2")
    assert diff == "--- f v1\n+++ f v2\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n"


def test_clock_offsets_are_stored_as_utc(db_url):
    async def main():
        engine = create_engine_for(db_url)
        store = FlowStore(engine, clock=lambda: datetime(2025, 3, 1, 16, 0, tzinfo=timezone(timedelta(hours=8))))
        version, _ = await store.publish("main", V1, author="a", origin="cli")
        stored = await store.get("main", 1)
        naive = FlowStore(engine, clock=lambda: datetime(2025, 3, 1))
        with pytest.raises(ValueError, match="naive"):
            await naive.publish("main", V2, author="a", origin="cli")
        await engine.dispose()
        return version, stored

    version, stored = asyncio.run(main())
    assert version.created_at == stored.created_at == T0 and stored.created_at.tzinfo == UTC


def test_migration_upgrades_an_existing_0001_database(tmp_path):
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    run_migrations(url, "0001")
    with sqlite3.connect(path) as conn:
        conn.execute("insert into call_records (call_id, direction, started_at) values ('c1', 'inbound', "
                     "'2025-03-01 08:00:00')")
    run_migrations(url)
    with sqlite3.connect(path) as conn:
        assert conn.execute("select version_num from alembic_version").fetchall() == [("0005",)]
        assert conn.execute("select call_id, direction from call_records").fetchall() == [("c1", "inbound")]
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
    assert {"flow_versions", "flow_live", "voicemails", "callback_tasks", "call_records"} <= tables
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_voicemail_and_callback_defaults(db_url):
    async def main():
        engine = create_engine_for(db_url)
        async with engine.begin() as conn:
            await conn.execute(insert(Voicemail).values(call_id="c1", flow="main", node="vm", caller_number=None,
                                                        path="voicemail/2025/03/01/c1.wav", seconds=12.5,
                                                        created_at=T0))
            await conn.execute(insert(CallbackTask).values(number="13800000000", reason="pressed 2", source="ivr",
                                                           due_at=T0, created_at=T0, flow="main"))
        async with engine.connect() as conn:
            voicemail = (await conn.execute(select(Voicemail))).one()
            task = (await conn.execute(select(CallbackTask))).one()
        await engine.dispose()
        return voicemail, task

    voicemail, task = asyncio.run(main())
    assert voicemail.heard is False and voicemail.created_at == T0
    assert (task.state, task.attempts, task.closed_at, task.call_id) == ("open", 0, None, None)


def test_flow_live_must_point_at_a_stored_version(db_url):
    async def main():
        engine = create_engine_for(db_url)
        from sqlalchemy.exc import IntegrityError

        from callcenter.store.models import FlowLive
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert(FlowLive).values(flow="main", version=1, updated_at=T0, updated_by="x"))
        await engine.dispose()

    asyncio.run(main())
