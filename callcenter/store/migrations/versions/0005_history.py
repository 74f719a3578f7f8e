"""Service history with calls and callbacks; the directory's "anywhere" search on an index

- ``call_records.party_number``: the other party of a call as a directory key (the caller of an inbound call, the
  dialled number of an outbound one), indexed with ``started_at``: an elder's calls are found by the elder's
  numbers. Rows already there are filled here, read as Chinese numbers (region CN, no local area code: a 7–8 digit
  local number keeps its digits); the CDR writer fills new rows with the configured region and area code.
- ``callback_tasks.elder_id`` indexed (an elder's callbacks).
- ``elders.search_text``: name and address in one indexed string (``callcenter.directory.models.search_text``).

Revision ID: 0005
Revises: 0004
Create Date: 2025-04-10 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 5000


def upgrade() -> None:
    from callcenter.directory.numbers import national

    op.add_column("call_records", sa.Column("party_number", sa.String(length=64), nullable=True))
    calls = sa.table("call_records", sa.column("id", sa.Integer()), sa.column("direction", sa.String()),
                     sa.column("from_number", sa.String()), sa.column("to_number", sa.String()),
                     sa.column("party_number", sa.String()))
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(sa.select(calls.c.id, calls.c.direction, calls.c.from_number, calls.c.to_number)
                            .where(calls.c.id > last).order_by(calls.c.id).limit(CHUNK)).all()
        if not rows:
            break
        last = rows[-1].id
        values = []
        for row in rows:
            number = row.to_number if row.direction == "outbound" else row.from_number
            key = national(number)[:64] if number else ""
            if key:
                values.append({"b_id": row.id, "v_party": key})
        if values:
            bind.execute(calls.update().where(calls.c.id == sa.bindparam("b_id"))
                         .values(party_number=sa.bindparam("v_party")), values)
    op.create_index("ix_call_records_party_number_started_at", "call_records", ["party_number", "started_at"],
                    unique=False)

    op.create_index(op.f("ix_callback_tasks_elder_id"), "callback_tasks", ["elder_id"], unique=False)

    op.add_column("elders", sa.Column("search_text", sa.String(length=512), server_default=sa.text("''"),
                                      nullable=False))
    elders = sa.table("elders", *(sa.column(name, sa.String()) for name in (
        "name", "district", "street", "community", "address", "search_text")))
    bind.execute(elders.update().values(search_text=elders.c.name + " " + elders.c.district + elders.c.street
                                        + elders.c.community + elders.c.address))
    op.create_index(op.f("ix_elders_search_text"), "elders", ["search_text"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_elders_search_text"), table_name="elders")
    with op.batch_alter_table("elders") as batch:
        batch.drop_column("search_text")
    op.drop_index(op.f("ix_callback_tasks_elder_id"), table_name="callback_tasks")
    op.drop_index("ix_call_records_party_number_started_at", table_name="call_records")
    with op.batch_alter_table("call_records") as batch:
        batch.drop_column("party_number")
