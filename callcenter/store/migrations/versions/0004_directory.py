"""Directory: elders, their phone numbers, terminals, contacts, service records, work orders, profile access log

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EMPTY = sa.text("''")


def upgrade() -> None:
    op.create_table(
        "elders",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=32), server_default=EMPTY, nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("id_number", sa.String(length=18), nullable=True),
        sa.Column("id_tail", sa.String(length=4), nullable=True),
        sa.Column("district", sa.String(length=32), server_default=EMPTY, nullable=False),
        sa.Column("street", sa.String(length=64), server_default=EMPTY, nullable=False),
        sa.Column("community", sa.String(length=64), server_default=EMPTY, nullable=False),
        sa.Column("address", sa.String(length=255), server_default=EMPTY, nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("language", sa.String(length=8), server_default=sa.text("'cmn'"), nullable=False),
        sa.Column("living_alone", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("health_notes", sa.Text(), server_default=EMPTY, nullable=False),
        sa.Column("care_level", sa.String(length=32), server_default=EMPTY, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_elders")),
        sa.UniqueConstraint("id_number", name=op.f("uq_elders_id_number")),
    )
    op.create_index(op.f("ix_elders_name"), "elders", ["name"], unique=False)
    op.create_index(op.f("ix_elders_id_tail"), "elders", ["id_tail"], unique=False)

    op.create_table(
        "elder_phones",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("elder_id", BIG_ID, nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("raw", sa.String(length=64), server_default=EMPTY, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_elder_phones_elder_id_elders"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_elder_phones")),
        sa.UniqueConstraint("elder_id", "number", name="uq_elder_phones_elder_id_number"),
    )
    op.create_index(op.f("ix_elder_phones_elder_id"), "elder_phones", ["elder_id"], unique=False)
    op.create_index(op.f("ix_elder_phones_number"), "elder_phones", ["number"], unique=False)

    op.create_table(
        "terminals",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("elder_id", BIG_ID, nullable=False),
        sa.Column("type", sa.String(length=32), server_default=EMPTY, nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("installed", sa.Date(), nullable=True),
        sa.Column("buttons", sa.JSON(), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=True),
        sa.Column("battery", sa.String(length=8), server_default=sa.text("'ok'"), nullable=False),
        sa.Column("power", sa.String(length=8), server_default=sa.text("'ac'"), nullable=False),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_terminals_elder_id_elders"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminals")),
        sa.UniqueConstraint("serial", name=op.f("uq_terminals_serial")),
    )
    op.create_index(op.f("ix_terminals_elder_id"), "terminals", ["elder_id"], unique=False)

    op.create_table(
        "contacts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("elder_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("relation", sa.String(length=32), server_default=EMPTY, nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("raw", sa.String(length=64), server_default=EMPTY, nullable=False),
        sa.Column("order", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_contacts_elder_id_elders"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
    )
    op.create_index(op.f("ix_contacts_elder_id"), "contacts", ["elder_id"], unique=False)
    op.create_index(op.f("ix_contacts_number"), "contacts", ["number"], unique=False)

    op.create_table(
        "service_records",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("elder_id", BIG_ID, nullable=True),
        sa.Column("number", sa.String(length=32), nullable=True),
        sa.Column("call_id", sa.String(length=255), nullable=True),
        sa.Column("operator", sa.String(length=64), server_default=EMPTY, nullable=False),
        sa.Column("disposition", sa.String(length=64), nullable=False),
        sa.Column("notes", sa.Text(), server_default=EMPTY, nullable=False),
        sa.Column("direction", sa.String(length=16), server_default=sa.text("'inbound'"), nullable=False),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_service_records_elder_id_elders"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_records")),
    )
    op.create_index(op.f("ix_service_records_at"), "service_records", ["at"], unique=False)
    op.create_index(op.f("ix_service_records_number"), "service_records", ["number"], unique=False)
    op.create_index(op.f("ix_service_records_call_id"), "service_records", ["call_id"], unique=False)
    op.create_index("ix_service_records_elder_id_at", "service_records", ["elder_id", "at"], unique=False)

    op.create_table(
        "work_orders",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("elder_id", BIG_ID, nullable=True),
        sa.Column("call_id", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("assignee", sa.String(length=128), server_default=EMPTY, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'open'"), nullable=False),
        sa.Column("notes", sa.Text(), server_default=EMPTY, nullable=False),
        sa.Column("feedback", sa.Text(), server_default=EMPTY, nullable=False),
        sa.Column("created_by", sa.String(length=64), server_default=EMPTY, nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"], name=op.f("fk_work_orders_elder_id_elders"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_orders")),
    )
    op.create_index(op.f("ix_work_orders_created_at"), "work_orders", ["created_at"], unique=False)
    op.create_index(op.f("ix_work_orders_status"), "work_orders", ["status"], unique=False)
    op.create_index("ix_work_orders_elder_id_status", "work_orders", ["elder_id", "status"], unique=False)

    op.create_table(
        "profile_access",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("elder_id", BIG_ID, nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=512), server_default=EMPTY, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_access")),
    )
    op.create_index(op.f("ix_profile_access_at"), "profile_access", ["at"], unique=False)
    op.create_index(op.f("ix_profile_access_username"), "profile_access", ["username"], unique=False)
    op.create_index(op.f("ix_profile_access_elder_id"), "profile_access", ["elder_id"], unique=False)


def downgrade() -> None:
    for table, indexes in (
        ("profile_access", ("ix_profile_access_elder_id", "ix_profile_access_username", "ix_profile_access_at")),
        ("work_orders", ("ix_work_orders_elder_id_status", "ix_work_orders_status", "ix_work_orders_created_at")),
        ("service_records", ("ix_service_records_elder_id_at", "ix_service_records_call_id",
                             "ix_service_records_number", "ix_service_records_at")),
        ("contacts", ("ix_contacts_number", "ix_contacts_elder_id")),
        ("terminals", ("ix_terminals_elder_id",)),
        ("elder_phones", ("ix_elder_phones_number", "ix_elder_phones_elder_id")),
        ("elders", ("ix_elders_id_tail", "ix_elders_name")),
    ):
        for index in indexes:
            op.drop_index(index, table_name=table)
        op.drop_table(table)
