"""What two processes on one database may race for, made safe by the database itself.

- One active (scheduled, sending or paused) send per edition: ``sends.edition_name``, filled from the
  editions, and a partial unique index on it. A second ``create_send`` of the edition waits on the first's
  row and fails, where a check then an insert let both through under READ COMMITTED.
- APScheduler's job table, created here, under the migrations' lock, instead of by each runner as it starts
  (two runners on an empty database both tried to create it, and one died). A database where an earlier
  version's runner created it keeps it as it is.

Revision ID: 0009_races
Revises: 0008_deliveries_by_subscriber
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_races"
down_revision = "0008_deliveries_by_subscriber"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('paused', 'scheduled', 'sending')"


def upgrade() -> None:
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
