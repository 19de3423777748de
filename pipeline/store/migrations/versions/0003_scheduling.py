"""Scheduling: the draft a scheduled send is rebuilt from, and the zone its time was given in.

Revision ID: 0003_scheduling
Revises: 0002_rate_limits
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_scheduling"
down_revision = "0002_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as table:
        table.add_column(sa.Column("draft_path", sa.Text, nullable=True))
        table.add_column(sa.Column("timezone", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sends") as table:
        table.drop_column("timezone")
        table.drop_column("draft_path")
