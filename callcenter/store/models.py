"""SQLAlchemy 2 declarative models. Timestamps are timezone-aware UTC on every backend."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC. Naive datetimes are refused (they are always a bug here);
    SQLite, which keeps no offset, gets naive UTC and gives back aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# BIGINT on servers, INTEGER on SQLite (which only autoincrements an INTEGER PRIMARY KEY)
BigId = BigInteger().with_variant(Integer(), "sqlite")


class CallRecord(Base):
    """The call detail record (CDR): one row per call, written when the call ends."""

    __tablename__ = "call_records"
    __table_args__ = (Index("ix_call_records_party_number_started_at", "party_number", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    direction: Mapped[str] = mapped_column(String(16))  # "inbound" | "outbound"
    from_uri: Mapped[str | None] = mapped_column(String(512))
    from_number: Mapped[str | None] = mapped_column(String(64))
    from_display: Mapped[str | None] = mapped_column(String(255))
    to_uri: Mapped[str | None] = mapped_column(String(512))
    to_number: Mapped[str | None] = mapped_column(String(64), index=True)  # the DID / dialled number
    trunk: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(64))  # "ip:port" the call came from
    transport: Mapped[str | None] = mapped_column(String(8))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # "caller_bye", "local_bye", "cancelled", "rejected", "timeout", "shutdown", "max_duration", …
    end_reason: Mapped[str | None] = mapped_column(String(32))
    sip_status: Mapped[int | None] = mapped_column(Integer)  # the final SIP status of the INVITE
    ended_by: Mapped[str | None] = mapped_column(String(32))
    node: Mapped[str | None] = mapped_column(String(64))
    # the other party as a directory key (callcenter.directory.numbers.national): the caller of an inbound call,
    # the dialled number of an outbound one; an elder's calls are the rows with one of the elder's numbers here
    party_number: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return f"<CallRecord {self.call_id} {self.direction} {self.from_number}->{self.to_number} {self.end_reason}>"


class FlowVersionRow(Base):
    """One published version of an IVR flow (``ivr_flows/<flow>.yaml``). Immutable: code only ever inserts.

    ``version`` counts 1, 2, 3 … per flow (unique together with ``flow``); ``text`` is the YAML exactly as
    published, ``sha256`` the hex digest of its UTF-8 bytes, ``diff`` the unified diff from the previous
    version's text (empty for version 1). ``origin`` says how it came: "file" (the watcher), "cli", "api" or
    "rollback" (then ``note`` says "rollback to vN")."""

    __tablename__ = "flow_versions"
    __table_args__ = (UniqueConstraint("flow", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    flow: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(16))  # "file" | "cli" | "api" | "rollback"
    source_path: Mapped[str | None] = mapped_column(String(512))
    note: Mapped[str | None] = mapped_column(String(255))
    diff: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    def __repr__(self) -> str:
        return f"<FlowVersionRow {self.flow} v{self.version} {self.origin} by {self.author}>"


class FlowLive(Base):
    """Which version of each flow answers new calls (calls already running keep the version they started
    with). Updated in the same transaction that stores a new version or rolls back."""

    __tablename__ = "flow_live"
    __table_args__ = (ForeignKeyConstraint(["flow", "version"], ["flow_versions.flow", "flow_versions.version"]),)

    flow: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_by: Mapped[str] = mapped_column(String(128))

    def __repr__(self) -> str:
        return f"<FlowLive {self.flow} v{self.version}>"


class Voicemail(Base):
    """A message a caller left in an IVR voicemail node. ``path`` is relative to the recordings root;
    ``caller_number`` is empty (None) when the caller withheld the number."""

    __tablename__ = "voicemails"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(255), index=True)
    flow: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    caller_number: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512))
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    heard: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    def __repr__(self) -> str:
        return f"<Voicemail {self.id} {self.caller_number} {self.flow}/{self.node} {self.seconds:.1f}s>"


class CallbackTask(Base):
    """Someone to call back: asked for in the IVR, an abandoned or missed call, or an operator's note.

    ``source`` is "ivr" | "abandoned" | "missed" | "operator"; ``state`` goes "open" → "dialling" →
    "completed" (reached) or "closed" (given up or handled otherwise, ``outcome`` says how). ``attempts``
    counts dial attempts (the latest at ``last_attempt_at``); ``due_at`` is when the next one may start. The ACD
    fills ``queue`` (where the call waited) and ``operator`` (who took the task)."""

    __tablename__ = "callback_tasks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[str | None] = mapped_column(String(255), index=True)
    number: Mapped[str] = mapped_column(String(64), index=True)
    elder_id: Mapped[int | None] = mapped_column(Integer, index=True)
    reason: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))  # "ivr" | "abandoned" | "missed" | "operator"
    # "open" | "dialling" | "completed" | "closed"
    state: Mapped[str] = mapped_column(String(16), index=True, default="open", server_default=text("'open'"))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    outcome: Mapped[str | None] = mapped_column(String(255))
    flow: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(64))  # the queue the call waited in (ACD sources)
    operator: Mapped[str | None] = mapped_column(String(64))  # who took the task or dials it
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    def __repr__(self) -> str:
        return f"<CallbackTask {self.id} {self.number} {self.state} {self.source}>"


class QueueEventRow(Base):
    """One event of the ACD's queue event log (:class:`callcenter.acd.events.QueueEvent`), appended by
    :class:`callcenter.acd.eventlog.QueueEventWriter`; the statistics are computed from these rows only.
    ``at`` is the event time in UTC, ``node`` the engine node that recorded it. Code only ever inserts."""

    __tablename__ = "queue_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    call_id: Mapped[str] = mapped_column(String(255), index=True)
    queue: Mapped[str] = mapped_column(String(64), index=True)
    priority: Mapped[str] = mapped_column(String(16))  # "emergency" | "urgent" | "normal"
    operator: Mapped[str | None] = mapped_column(String(64), index=True)
    wait: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(String(255))
    node: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return f"<QueueEventRow {self.id} {self.kind} {self.queue} {self.call_id}>"
