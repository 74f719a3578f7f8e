"""IVR: flow versions and the live pointer, voicemails, callback tasks

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "flow_versions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("source_path", sa.String(length=512), nullable=True),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_versions")),
        sa.UniqueConstraint("flow", "version", name=op.f("uq_flow_versions_flow")),
    )
    op.create_index(op.f("ix_flow_versions_flow"), "flow_versions", ["flow"], unique=False)

    op.create_table(
        "flow_live",
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["flow", "version"], ["flow_versions.flow", "flow_versions.version"],
                                name=op.f("fk_flow_live_flow_flow_versions")),
        sa.PrimaryKeyConstraint("flow", name=op.f("pk_flow_live")),
    )

    op.create_table(
        "voicemails",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("caller_number", sa.String(length=64), nullable=True),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heard", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voicemails")),
    )
    op.create_index(op.f("ix_voicemails_call_id"), "voicemails", ["call_id"], unique=False)
    op.create_index(op.f("ix_voicemails_created_at"), "voicemails", ["created_at"], unique=False)

    op.create_table(
        "callback_tasks",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=True),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("elder_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), server_default=sa.text("'open'"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=255), nullable=True),
        sa.Column("flow", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_tasks")),
    )
    op.create_index(op.f("ix_callback_tasks_call_id"), "callback_tasks", ["call_id"], unique=False)
    op.create_index(op.f("ix_callback_tasks_number"), "callback_tasks", ["number"], unique=False)
    op.create_index(op.f("ix_callback_tasks_state"), "callback_tasks", ["state"], unique=False)
    op.create_index(op.f("ix_callback_tasks_due_at"), "callback_tasks", ["due_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_callback_tasks_due_at"), table_name="callback_tasks")
    op.drop_index(op.f("ix_callback_tasks_state"), table_name="callback_tasks")
    op.drop_index(op.f("ix_callback_tasks_number"), table_name="callback_tasks")
    op.drop_index(op.f("ix_callback_tasks_call_id"), table_name="callback_tasks")
    op.drop_table("callback_tasks")
    op.drop_index(op.f("ix_voicemails_created_at"), table_name="voicemails")
    op.drop_index(op.f("ix_voicemails_call_id"), table_name="voicemails")
    op.drop_table("voicemails")
    op.drop_table("flow_live")
    op.drop_index(op.f("ix_flow_versions_flow"), table_name="flow_versions")
    op.drop_table("flow_versions")
