"""An index of deliveries by subscriber: a subscriber's page lists every delivery they had, which without it
scans the whole delivery log (the unique key starts with the send).

Revision ID: 0008_deliveries_by_subscriber
Revises: 0007_console_sends
Create Date: 2026-12-03
"""

from alembic import op

revision = "0008_deliveries_by_subscriber"
down_revision = "0007_console_sends"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_subscriber", "deliveries", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_subscriber", table_name="deliveries")
