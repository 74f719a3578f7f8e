"""The flow version store: every published IVR flow text, immutable, and which version is live.

Publishing stores a new version (1, 2, 3 … per flow) with its author, time, origin and the unified diff from
the previous version, and moves the flow's live pointer to it in the same transaction. Versions are never
updated or deleted; a rollback publishes the old text again as a new version (origin "rollback"), so the
history always reads forwards. Validation happens before: this module stores what it is given.

Two processes may publish at once: the unique (flow, version) constraint makes one of them fail, and it
retries with the next number. Calls keep the version they started with; the engine polls
:meth:`FlowStore.live_pointers` to learn about versions published elsewhere (CLI, API, another node).
"""

import asyncio
import difflib
import hashlib
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.logs import get_logger
from callcenter.store.models import FlowLive, FlowVersionRow

log = get_logger(__name__)

ORIGINS = ("file", "cli", "api", "rollback")
FLOW_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
FLOW_NAME_MAX = 64  # flow_versions.flow
AUTHOR_MAX = 128
NOTE_MAX = 255
SOURCE_PATH_MAX = 512
PUBLISH_ATTEMPTS = 5  # a lost race on the version number is retried with the next one
_RETRY_DELAY = 0.02


def now_utc() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def text_sha256(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8 (what ``FlowVersion.sha256`` holds)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_flow_name(flow: str) -> None:
    """Raise ValueError unless ``flow`` can name a flow (letters, digits, _ or -, at most 64 characters)."""
    if not FLOW_NAME.match(flow):
        raise ValueError(f"flow name {flow!r} must be letters, digits, _ or -")
    if len(flow) > FLOW_NAME_MAX:
        raise ValueError(f"flow name {flow!r} is longer than {FLOW_NAME_MAX} characters")


def unified_diff(old: str, new: str, fromfile: str, tofile: str) -> str:
    """``difflib.unified_diff`` of two texts as one string; a last line without a newline is marked the way
    diff(1) does, so the result is always well-formed."""
    lines = []
    for line in difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                     fromfile=fromfile, tofile=tofile):
        lines.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(lines)


@dataclass(frozen=True)
class FlowVersion:
    """One stored version of a flow. ``live`` is only filled by :meth:`FlowStore.history` and by the live
    lookups (where it is always True)."""

    flow: str
    version: int
    text: str
    sha256: str
    author: str
    origin: str
    source_path: str | None
    note: str | None
    diff: str
    created_at: datetime
    live: bool = False


class UnknownVersion(LookupError):
    """The flow has no such version (or no versions at all)."""

    def __init__(self, flow: str, version: int, versions: Iterable[int] = ()) -> None:
        numbers = sorted(versions)
        if not numbers:
            known = "it has no versions"
        elif len(numbers) == 1:
            known = f"versions: {numbers[0]}"
        else:
            known = f"versions: {numbers[0]}-{numbers[-1]}"
        super().__init__(f"flow {flow!r} has no version {version} ({known})")
        self.flow = flow
        self.version = version


_VERSION_COLUMNS = [FlowVersionRow.flow, FlowVersionRow.version, FlowVersionRow.text, FlowVersionRow.sha256,
                    FlowVersionRow.author, FlowVersionRow.origin, FlowVersionRow.source_path, FlowVersionRow.note,
                    FlowVersionRow.diff, FlowVersionRow.created_at]


def _version(row: Row[Any], live: bool = False) -> FlowVersion:
    return FlowVersion(flow=row.flow, version=row.version, text=row.text, sha256=row.sha256, author=row.author,
                       origin=row.origin, source_path=row.source_path, note=row.note, diff=row.diff,
                       created_at=row.created_at, live=live)


def _is_lost_race(exc: Exception) -> bool:
    """True for the errors a concurrent publisher causes: the (flow, version) or flow_live key taken, or
    SQLite's write lock still held after the busy timeout."""
    if isinstance(exc, IntegrityError):
        return True
    message = str(exc).lower()
    return isinstance(exc, OperationalError) and ("locked" in message or "busy" in message)


class FlowStore:
    """Flow versions in the database (tables ``flow_versions`` and ``flow_live``)."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = now_utc) -> None:
        self._engine = engine
        self._clock = clock

    async def publish(self, flow: str, text: str, *, author: str, origin: str, source_path: str | None = None,
                      note: str | None = None) -> tuple[FlowVersion, bool]:
        """Store ``text`` as the flow's next version and make it live; returns ``(version, True)``. When the
        text is the live version's (same SHA-256) nothing is stored and ``(live version, False)`` returns.
        The caller has validated the text."""
        self._check(flow, author, origin, source_path, note)
        return await self._publish(flow, text, author=author, origin=origin, source_path=source_path, note=note)

    async def rollback(self, flow: str, version: int, *, author: str) -> FlowVersion:
        """Publish version ``version``'s text again as a new version (origin "rollback", note "rollback to
        vN"), which becomes live. Raises UnknownVersion, or ValueError when that text is already live."""
        self._check(flow, author, "rollback", None, None)
        target = await self.get(flow, version)
        stored, created = await self._publish(flow, target.text, author=author, origin="rollback",
                                              source_path=None, note=f"rollback to v{version}")
        if not created:
            same = "" if stored.version == version else f" (v{stored.version} has the same text)"
            raise ValueError(f"flow {flow!r}: v{version} is already what is live{same}")
        log.info("ivr.flow.rolled_back", flow=flow, version=stored.version, to_version=version, author=author)
        return stored

    async def live(self, flow: str) -> FlowVersion | None:
        """The version that answers new calls, or None when the flow was never published."""
        async with self._engine.connect() as conn:
            return await self._live(conn, flow)

    async def live_all(self) -> dict[str, FlowVersion]:
        """Every flow's live version, by flow name."""
        stmt = (select(*_VERSION_COLUMNS)
                .join(FlowLive, (FlowLive.flow == FlowVersionRow.flow) & (FlowLive.version == FlowVersionRow.version))
                .order_by(FlowVersionRow.flow))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {row.flow: _version(row, live=True) for row in rows}

    async def live_pointers(self) -> dict[str, int]:
        """Flow name → live version number: one small query, for polling."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(FlowLive.flow, FlowLive.version))).all()
        return {row.flow: row.version for row in rows}

    async def get(self, flow: str, version: int) -> FlowVersion:
        """Version ``version`` of ``flow``; raises UnknownVersion naming the versions there are."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_VERSION_COLUMNS).where(
                FlowVersionRow.flow == flow, FlowVersionRow.version == version))).one_or_none()
            if row is None:
                bounds = (await conn.execute(select(func.min(FlowVersionRow.version), func.max(
                    FlowVersionRow.version)).where(FlowVersionRow.flow == flow))).one()
                raise UnknownVersion(flow, version, [b for b in bounds if b is not None])
            live = await conn.scalar(select(FlowLive.version).where(FlowLive.flow == flow))
        return _version(row, live=live == version)

    async def history(self, flow: str) -> list[FlowVersion]:
        """Every version of ``flow``, newest first, the live one flagged (empty for an unknown flow)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*_VERSION_COLUMNS).where(FlowVersionRow.flow == flow)
                                       .order_by(FlowVersionRow.version.desc()))).all()
            live = await conn.scalar(select(FlowLive.version).where(FlowLive.flow == flow))
        return [_version(row, live=row.version == live) for row in rows]

    async def flows(self) -> list[str]:
        """The names of all flows ever published, sorted."""
        async with self._engine.connect() as conn:
            names = (await conn.scalars(select(FlowVersionRow.flow).distinct().order_by(FlowVersionRow.flow))).all()
        return list(names)

    async def last_from_file(self, flow: str) -> FlowVersion | None:
        """The newest version published from the flow's file (origin "file"), live or not. At start the
        engine republishes a file only when it differs from this, so a CLI rollback survives a restart."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_VERSION_COLUMNS)
                                      .where(FlowVersionRow.flow == flow, FlowVersionRow.origin == "file")
                                      .order_by(FlowVersionRow.version.desc()).limit(1))).one_or_none()
            if row is None:
                return None
            live = await conn.scalar(select(FlowLive.version).where(FlowLive.flow == flow))
        return _version(row, live=row.version == live)

    @staticmethod
    def _check(flow: str, author: str, origin: str, source_path: str | None, note: str | None) -> None:
        check_flow_name(flow)
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
        if not author or len(author) > AUTHOR_MAX:
            raise ValueError(f"author must be 1 to {AUTHOR_MAX} characters, got {author!r}")
        if source_path is not None and len(source_path) > SOURCE_PATH_MAX:
            raise ValueError(f"source path longer than {SOURCE_PATH_MAX} characters: {source_path!r}")
        if note is not None and len(note) > NOTE_MAX:
            raise ValueError(f"note longer than {NOTE_MAX} characters")

    async def _publish(self, flow: str, text: str, *, author: str, origin: str, source_path: str | None,
                       note: str | None) -> tuple[FlowVersion, bool]:
        sha = text_sha256(text)
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                async with self._engine.begin() as conn:
                    result = await self._publish_once(conn, flow, text, sha, author=author, origin=origin,
                                                      source_path=source_path, note=note)
            except (IntegrityError, OperationalError) as exc:
                if attempt == PUBLISH_ATTEMPTS or not _is_lost_race(exc):
                    raise
                log.info("ivr.flow.publish_retry", flow=flow, attempt=attempt, error=str(exc.orig or exc))
                await asyncio.sleep(_RETRY_DELAY * attempt * random.uniform(0.5, 1.5))
                continue
            version, created = result
            if created:
                log.info("ivr.flow.published", flow=flow, version=version.version, author=author, origin=origin,
                         sha256=sha, source_path=source_path, note=note)
            return result
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _publish_once(self, conn: AsyncConnection, flow: str, text: str, sha: str, *, author: str,
                            origin: str, source_path: str | None, note: str | None) -> tuple[FlowVersion, bool]:
        live = await self._live(conn, flow)
        if live is not None and live.sha256 == sha:
            return live, False
        latest = (await conn.execute(select(FlowVersionRow.version, FlowVersionRow.text)
                                     .where(FlowVersionRow.flow == flow)
                                     .order_by(FlowVersionRow.version.desc()).limit(1))).one_or_none()
        number = 1 if latest is None else latest.version + 1
        diff = "" if latest is None else unified_diff(latest.text, text, f"{flow} v{latest.version}",
                                                      f"{flow} v{number}")
        created_at = self._clock()
        if created_at.utcoffset() is None:
            raise ValueError(f"the clock gave a naive datetime {created_at!r}")
        created_at = created_at.astimezone(UTC)
        version = FlowVersion(flow=flow, version=number, text=text, sha256=sha, author=author, origin=origin,
                              source_path=source_path, note=note, diff=diff, created_at=created_at, live=True)
        await conn.execute(insert(FlowVersionRow).values(
            flow=flow, version=number, text=text, sha256=sha, author=author, origin=origin,
            source_path=source_path, note=note, diff=diff, created_at=created_at))
        pointer = {"version": number, "updated_at": created_at, "updated_by": author}
        moved = await conn.execute(update(FlowLive).where(FlowLive.flow == flow).values(**pointer))
        if moved.rowcount == 0:
            await conn.execute(insert(FlowLive).values(flow=flow, **pointer))
        return version, True

    @staticmethod
    async def _live(conn: AsyncConnection, flow: str) -> FlowVersion | None:
        row = (await conn.execute(select(*_VERSION_COLUMNS).join(
            FlowLive, (FlowLive.flow == FlowVersionRow.flow) & (FlowLive.version == FlowVersionRow.version))
            .where(FlowLive.flow == flow))).one_or_none()
        return None if row is None else _version(row, live=True)
