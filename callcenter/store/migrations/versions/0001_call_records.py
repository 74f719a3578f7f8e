"""call records (CDR)

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("from_uri", sa.String(length=512), nullable=True),
        sa.Column("from_number", sa.String(length=64), nullable=True),
        sa.Column("from_display", sa.String(length=255), nullable=True),
        sa.Column("to_uri", sa.String(length=512), nullable=True),
        sa.Column("to_number", sa.String(length=64), nullable=True),
        sa.Column("trunk", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("transport", sa.String(length=8), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("sip_status", sa.Integer(), nullable=True),
        sa.Column("ended_by", sa.String(length=32), nullable=True),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_records")),
    )
    op.create_index(op.f("ix_call_records_call_id"), "call_records", ["call_id"], unique=True)
    op.create_index(op.f("ix_call_records_to_number"), "call_records", ["to_number"], unique=False)
    op.create_index(op.f("ix_call_records_started_at"), "call_records", ["started_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_call_records_started_at"), table_name="call_records")
    op.drop_index(op.f("ix_call_records_to_number"), table_name="call_records")
    op.drop_index(op.f("ix_call_records_call_id"), table_name="call_records")
    op.drop_table("call_records")
