"""ACD: the queue event log; callback tasks get their queue, operator and last attempt

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "queue_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("wait", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_events")),
    )
    op.create_index(op.f("ix_queue_events_at"), "queue_events", ["at"], unique=False)
    op.create_index(op.f("ix_queue_events_kind"), "queue_events", ["kind"], unique=False)
    op.create_index(op.f("ix_queue_events_call_id"), "queue_events", ["call_id"], unique=False)
    op.create_index(op.f("ix_queue_events_queue"), "queue_events", ["queue"], unique=False)
    op.create_index(op.f("ix_queue_events_operator"), "queue_events", ["operator"], unique=False)

    with op.batch_alter_table("callback_tasks") as batch:
        batch.add_column(sa.Column("queue", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("operator", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("callback_tasks") as batch:
        batch.drop_column("last_attempt_at")
        batch.drop_column("operator")
        batch.drop_column("queue")
    op.drop_index(op.f("ix_queue_events_operator"), table_name="queue_events")
    op.drop_index(op.f("ix_queue_events_queue"), table_name="queue_events")
    op.drop_index(op.f("ix_queue_events_call_id"), table_name="queue_events")
    op.drop_index(op.f("ix_queue_events_kind"), table_name="queue_events")
    op.drop_index(op.f("ix_queue_events_at"), table_name="queue_events")
    op.drop_table("queue_events")
