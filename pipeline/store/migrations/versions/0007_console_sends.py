"""The console's view of a send: indexes for its recipient table, and the check report kept with the send.

``ix_deliveries_send_id`` (send_id, id) lets a page of a send's recipients start
at a cursor (keyset pagination) instead of skipping rows; the expression index
``ix_deliveries_send_email`` (send_id, lower(email), id) serves a search by the
start of an address; ``ix_deliveries_send_status_settled`` (send_id,
status, updated_at) counts accepted and failed messages per minute from the index
alone (a row's updated_at is when it was settled; provider events leave it be). A send keeps
the check report its edition passed (or was forced past) when it was created.

Revision ID: 0007_console_sends
Revises: 0006_staff
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_console_sends"
down_revision = "0006_staff"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_send_id", "deliveries", ["send_id", "id"])
    op.create_index("ix_deliveries_send_email", "deliveries", ["send_id", sa.text("lower(email)"), "id"])
    op.create_index("ix_deliveries_send_status_settled", "deliveries", ["send_id", "status", "updated_at"])
    with op.batch_alter_table("sends") as table:
        table.add_column(sa.Column("check_report", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sends") as table:
        table.drop_column("check_report")
    op.drop_index("ix_deliveries_send_status_settled", "deliveries")
    op.drop_index("ix_deliveries_send_email", "deliveries")
    op.drop_index("ix_deliveries_send_id", "deliveries")
