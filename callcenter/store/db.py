"""Database engine and schema migrations.

The engine is async (aiosqlite by default, asyncpg on PostgreSQL). Migrations are Alembic revisions in
``callcenter/store/migrations``, run programmatically at start (no alembic.ini needed) with the matching sync
driver, in a thread: ``await asyncio.to_thread(run_migrations, url)``."""

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the CDR writer, and vice versa
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a power cut loses at most the last commits
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _ensure_sqlite_dir(url: URL) -> None:
    database = url.database
    if url.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith(
            "file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine_for(url: str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for ``url``; on SQLite every connection gets WAL mode and a busy timeout, and the
    database file's directory is created."""
    parsed = make_url(url)
    _ensure_sqlite_dir(parsed)
    engine = create_async_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


_SYNC_DRIVERS = {"aiosqlite": "pysqlite", "asyncpg": None, "psycopg_async": "psycopg",
                 "aiomysql": "pymysql", "asyncmy": "pymysql"}


def sync_url(url: str | URL) -> URL:
    """The same database with a synchronous driver (for Alembic): sqlite+aiosqlite → sqlite,
    postgresql+asyncpg → postgresql+psycopg (or psycopg2 when psycopg 3 is not installed)."""
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if driver not in _SYNC_DRIVERS:
        return parsed
    sync_driver = _SYNC_DRIVERS[driver]
    if sync_driver is None:  # PostgreSQL: whichever sync driver is installed
        sync_driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
    name = backend if sync_driver == "pysqlite" else f"{backend}+{sync_driver}"
    return parsed.set(drivername=name)


def alembic_config(url: str | URL | None = None, connection: Connection | None = None) -> Any:
    """An Alembic Config for our migrations, without an ini file."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = sync_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def run_migrations(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (async or sync URL) to ``revision``. Blocking: call it in a thread."""
    from alembic import command

    target = sync_url(url)
    _ensure_sqlite_dir(target)
    engine = create_engine(target, poolclass=NullPool)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection=connection), revision)
    finally:
        engine.dispose()
