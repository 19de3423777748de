"""What two processes on one database may race for, made safe by the database itself.

- One active (scheduled, sending or paused) send per edition: ``sends.edition_name``, filled from the
  editions, and a partial unique index on it. A second ``create_send`` of the edition waits on the first's
  row and fails, where a check then an insert let both through under READ COMMITTED.
- APScheduler's job table, created here, under the migrations' lock, instead of by each runner as it starts
  (two runners on an empty database both tried to create it, and one died). A database where an earlier
  version's runner created it keeps it as it is.

A database on which an earlier version let two sends of one edition be active at once cannot take the index:
the migration stops, writing nothing, with one line naming the sends to cancel.

Revision ID: 0009_races
Revises: 0008_deliveries_by_subscriber
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from pipeline.errors import StoreError

revision = "0009_races"
down_revision = "0008_deliveries_by_subscriber"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('paused', 'scheduled', 'sending')"


def _cancel_command(send_id: int, status: str) -> str:
    return f"'schedule cancel {send_id}'" if status == "scheduled" else f"'send --cancel {send_id}'"


def refuse_two_active_sends(bind) -> None:
    """StoreError, naming the sends, if an edition has more than one active send (the index would fail)."""
    rows = bind.execute(sa.text(
        "SELECT editions.name, sends.id, sends.status FROM sends JOIN editions ON editions.id = sends.edition_id "
        f"WHERE sends.{ACTIVE} ORDER BY editions.name, sends.id")).all()
    by_edition: dict[str, list[tuple[int, str]]] = {}
    for name, send_id, status in rows:
        by_edition.setdefault(name, []).append((send_id, status))
    doubled = {name: found for name, found in by_edition.items() if len(found) > 1}
    if not doubled:
        return
    problems = "; ".join(
        f"edition {name} has {len(found)} active sends ({', '.join(f'{i} {status}' for i, status in found)})"
        for name, found in doubled.items())
    extra = [_cancel_command(i, status) for found in doubled.values() for i, status in found[1:]]
    raise StoreError(f"cannot upgrade the database: {problems}, where one at a time is allowed; cancel all but one "
                     f"of each with the version of newsletter that started them (e.g. {' and '.join(extra)}), "
                     "then run again")


def upgrade() -> None:
    refuse_two_active_sends(op.get_bind())
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("edition_name", sa.String(200), nullable=True))
    op.execute("UPDATE sends SET edition_name = (SELECT name FROM editions WHERE editions.id = sends.edition_id)")
    with op.batch_alter_table("sends") as batch:
        batch.alter_column("edition_name", existing_type=sa.String(200), nullable=False)
    op.create_index("uq_sends_one_active", "sends", ["edition_name"], unique=True,
                    sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))
    if not sa.inspect(op.get_bind()).has_table("apscheduler_jobs"):
        op.create_table(
            "apscheduler_jobs",
            sa.Column("id", sa.Unicode(191), primary_key=True),
            sa.Column("next_run_time", sa.Float(25), nullable=True),
            sa.Column("job_state", sa.LargeBinary, nullable=False),
        )
        op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_index("uq_sends_one_active", table_name="sends")
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("edition_name")
