"""The send workers (PostgreSQL): the parts a send is cut into, and procrastinate's own schema.

- ``send_parts``, on every database: a range of a send's delivery ids that one job sends at a time, owned
  under a lease like a send (``store/parts.py``).
- PostgreSQL only: procrastinate's tables, types, functions and triggers (its jobs, workers and heartbeats),
  from the ``schema.sql`` of the procrastinate installed (3.x), run through the driver's cursor as one
  script, here, under the migrations' lock, so no worker creates them as it starts. A later procrastinate
  with schema changes comes with a migration of ours applying its migration scripts.

Revision ID: 0010_workers
Revises: 0009_races
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from pipeline.store.tables import UTCDateTime

revision = "0010_workers"
down_revision = "0009_races"
branch_labels = None
depends_on = None

PROCRASTINATE_TABLES = ("procrastinate_events", "procrastinate_periodic_defers", "procrastinate_jobs",
                        "procrastinate_workers")


def upgrade() -> None:
    big = sa.BigInteger().with_variant(sa.Integer, "sqlite")
    op.create_table(
        "send_parts",
        sa.Column("send_id", sa.Integer, sa.ForeignKey("sends.id"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("first_id", big, nullable=False),
        sa.Column("last_id", big, nullable=False),
        sa.Column("runner", sa.String(200), nullable=True),
        sa.Column("lease_until", UTCDateTime, nullable=True),
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from procrastinate.schema import SchemaManager

    cursor = bind.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(SchemaManager.get_schema())  # several statements, no parameters: one script
    finally:
        cursor.close()


def downgrade() -> None:
    op.drop_table("send_parts")
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    functions = bind.execute(sa.text(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'")).scalars().all()
    for table in PROCRASTINATE_TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    for function in functions:
        op.execute(f"DROP FUNCTION IF EXISTS {function} CASCADE")
    # What is left of its types once its tables are gone: its enums and the composite types it declares.
    types = bind.execute(sa.text(
        "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate\\_%' AND t.typtype IN ('e', 'c')"))
    for kind in types.scalars().all():
        op.execute(f"DROP TYPE IF EXISTS {kind} CASCADE")
