"""Leases: a send is owned by a runner until ``lease_until``, renewed while it lives; a nonce per send.

The heartbeat written only when a batch was claimed let a live sender waiting on
its rate limit look dead; the lease replaces it. ``queued_at`` tells a send whose
audience was queued from one that fired but died before queueing it (which is
fired again, never finished with nobody sent). The nonce makes Message-IDs unique
to this database's send, so a fresh or restored database never reuses one.

Revision ID: 0004_leases
Revises: 0003_scheduling
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from pipeline.store.tables import UTCDateTime

revision = "0004_leases"
down_revision = "0003_scheduling"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as table:
        table.add_column(sa.Column("lease_until", UTCDateTime, nullable=True))
        table.add_column(sa.Column("nonce", sa.String(32), nullable=True))
        table.add_column(sa.Column("queued_at", UTCDateTime, nullable=True))
        table.drop_column("heartbeat_at")
    # Every send made before has its audience queued, but a scheduled one that has not fired yet.
    op.execute("UPDATE sends SET queued_at = created_at WHERE status <> 'scheduled'")


def downgrade() -> None:
    with op.batch_alter_table("sends") as table:
        table.add_column(sa.Column("heartbeat_at", UTCDateTime, nullable=True))
        table.drop_column("queued_at")
        table.drop_column("nonce")
        table.drop_column("lease_until")
