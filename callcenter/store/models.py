"""SQLAlchemy 2 declarative models. Timestamps are timezone-aware UTC on every backend."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, MetaData, String
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

    def __repr__(self) -> str:
        return f"<CallRecord {self.call_id} {self.direction} {self.from_number}->{self.to_number} {self.end_reason}>"
