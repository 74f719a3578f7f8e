"""The directory's tables: elders, their phone numbers, terminals, contacts, service records, work orders and
the access log of personal data (SQLAlchemy 2, on the store's ``Base``; migrations ``0004_directory`` and
``0005_history``).

Text columns that describe an elder are empty strings rather than NULL, so that address search can join them;
``sex``, ``birth_date``, ``id_number``, ``lat``/``lon`` are NULL when unknown. ``id_number`` is stored whole
(shown masked: :func:`callcenter.directory.validation.mask_id`); ``id_tail`` keeps its last 4 characters indexed
for the desktop's "search by the ID number's tail", ``search_text`` the name and address for its "anywhere"
search. Phone numbers and contact numbers are directory keys
(:func:`callcenter.directory.numbers.normalise`), ``raw`` keeps what was entered."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from callcenter.store.models import Base, BigId, UtcDateTime

ElderRef = BigInteger().with_variant(Integer(), "sqlite")
EMPTY = text("''")

PHONE_KINDS = ("home", "mobile", "terminal")
BATTERY_STATES = ("ok", "low")
POWER_STATES = ("ac", "battery", "lost")
DIRECTIONS = ("inbound", "outbound", "callback")
WORK_ORDER_STATES = ("open", "in_progress", "done", "cancelled")
ACCESS_ACTIONS = ("view", "pop", "update", "create", "export", "import", "search")


class Elder(Base):
    """An elder the center serves."""

    __tablename__ = "elders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(32), server_default=EMPTY)  # how the IVR greets: 王奶奶
    sex: Mapped[str | None] = mapped_column(String(1))  # "F" | "M"
    birth_date: Mapped[date | None] = mapped_column(Date)
    id_number: Mapped[str | None] = mapped_column(String(18), unique=True)  # 居民身份证号, stored whole
    id_tail: Mapped[str | None] = mapped_column(String(4), index=True)
    district: Mapped[str] = mapped_column(String(32), server_default=EMPTY)  # 区
    street: Mapped[str] = mapped_column(String(64), server_default=EMPTY)  # 街道
    community: Mapped[str] = mapped_column(String(64), server_default=EMPTY)  # 社区
    address: Mapped[str] = mapped_column(String(255), server_default=EMPTY)  # building, unit, room
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    language: Mapped[str] = mapped_column(String(8), server_default=text("'cmn'"))  # "cmn" | "yue"
    living_alone: Mapped[bool] = mapped_column(Boolean, server_default=false())
    health_notes: Mapped[str] = mapped_column(Text, server_default=EMPTY)
    care_level: Mapped[str] = mapped_column(String(32), server_default=EMPTY)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # the name and the address in one indexed string (:func:`search_text`, kept by every writer): the desktop's
    # "anywhere" search reads this index instead of the whole table (migration 0005)
    search_text: Mapped[str] = mapped_column(String(512), index=True, server_default=EMPTY)

    def __repr__(self) -> str:
        return f"<Elder {self.id} {self.name}>"


SEARCHED = ("name", "district", "street", "community", "address")


def search_text(values: Mapping[str, Any]) -> str:
    """What the "anywhere" search looks in: the name, a space, then district, street, community and address run
    together (as a person writes an address). Missing parts are empty."""
    return f"{values.get('name') or ''} " + "".join(values.get(key) or "" for key in SEARCHED[1:])


def search_text_sql() -> Any:
    """:func:`search_text` as an SQL expression over the elders table (to refresh rows after a partial update)."""
    table = Elder.__table__
    return table.c.name + " " + table.c.district + table.c.street + table.c.community + table.c.address


class ElderPhone(Base):
    """One of an elder's numbers: home line, mobile, the terminal's SIM. A number may belong to two elders
    (a couple's home line); a lookup then prefers the terminal, then the mobile, then the lowest elder id."""

    __tablename__ = "elder_phones"
    __table_args__ = (UniqueConstraint("elder_id", "number", name="uq_elder_phones_elder_id_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    elder_id: Mapped[int] = mapped_column(ElderRef, ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(32), index=True)
    raw: Mapped[str] = mapped_column(String(64), server_default=EMPTY)
    kind: Mapped[str] = mapped_column(String(16))  # "home" | "mobile" | "terminal"


class Terminal(Base):
    """An elder's one-button terminal. ``buttons`` maps the number each button dials (a DID) to the button."""

    __tablename__ = "terminals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    elder_id: Mapped[int] = mapped_column(ElderRef, ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32), server_default=EMPTY)
    serial: Mapped[str | None] = mapped_column(String(64), unique=True)
    installed: Mapped[date | None] = mapped_column(Date)
    buttons: Mapped[dict[str, Any]] = mapped_column(JSON)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UtcDateTime())
    battery: Mapped[str] = mapped_column(String(8), server_default=text("'ok'"))  # "ok" | "low"
    power: Mapped[str] = mapped_column(String(8), server_default=text("'ac'"))  # "ac" | "battery" | "lost"


class Contact(Base):
    """Someone to call for an elder (family, a neighbour); ``order`` 1 is called first (the IVR's family
    numbers are the contacts in order)."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    elder_id: Mapped[int] = mapped_column(ElderRef, ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(32), server_default=EMPTY)
    number: Mapped[str] = mapped_column(String(32), index=True)
    raw: Mapped[str] = mapped_column(String(64), server_default=EMPTY)
    order: Mapped[int] = mapped_column(Integer)


class ServiceRecord(Base):
    """What an operator wrote about a call (or a visit); ``elder_id`` is NULL for an unknown caller."""

    __tablename__ = "service_records"
    __table_args__ = (Index("ix_service_records_elder_id_at", "elder_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    elder_id: Mapped[int | None] = mapped_column(ElderRef, ForeignKey("elders.id", ondelete="SET NULL"))
    number: Mapped[str | None] = mapped_column(String(32), index=True)
    call_id: Mapped[str | None] = mapped_column(String(255), index=True)
    operator: Mapped[str] = mapped_column(String(64), server_default=EMPTY)
    disposition: Mapped[str] = mapped_column(String(64))
    notes: Mapped[str] = mapped_column(Text, server_default=EMPTY)
    direction: Mapped[str] = mapped_column(String(16), server_default=text("'inbound'"))


class WorkOrder(Base):
    """A task made from a call (a visit, a repair, a delivery …) for an assignee such as a care station.
    ``status`` goes open → in_progress → done | cancelled (open may end directly); ``closed_at`` is set at the
    end (:data:`callcenter.directory.validation.WORK_ORDER_MOVES`)."""

    __tablename__ = "work_orders"
    __table_args__ = (Index("ix_work_orders_elder_id_status", "elder_id", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    elder_id: Mapped[int | None] = mapped_column(ElderRef, ForeignKey("elders.id", ondelete="SET NULL"))
    call_id: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    assignee: Mapped[str] = mapped_column(String(128), server_default=EMPTY)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16), index=True, server_default=text("'open'"))
    notes: Mapped[str] = mapped_column(Text, server_default=EMPTY)
    feedback: Mapped[str] = mapped_column(Text, server_default=EMPTY)
    created_by: Mapped[str] = mapped_column(String(64), server_default=EMPTY)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ProfileAccess(Base):
    """Who saw or changed personal data, when (等保三级 audit): every view, pop, update, create, search, import
    and export. Only ever inserted; no foreign key, so the trail outlives a deleted elder."""

    __tablename__ = "profile_access"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    username: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(32))
    elder_id: Mapped[int | None] = mapped_column(ElderRef, index=True)
    action: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(512), server_default=EMPTY)
