"""Initial schema: subscribers, editions, sends, deliveries, events, suppressions.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from pipeline.store.tables import UTCDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tags", sa.String(1000), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "editions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("built_path", sa.Text, nullable=False),
        sa.Column("email_html", sa.Text, nullable=False),
        sa.Column("email_txt", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", "content_hash", name="uq_editions_name_hash"),
    )
    op.create_table(
        "sends",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("edition_id", sa.Integer, sa.ForeignKey("editions.id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("audience", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("scheduled_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("status_reason", sa.Text, nullable=False),
        sa.Column("override_reason", sa.Text, nullable=True),
        sa.Column("runner", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", _BIGINT, primary_key=True),
        sa.Column("send_id", sa.Integer, sa.ForeignKey("sends.id"), nullable=False),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("batch_id", sa.String(40), nullable=True),
        sa.Column("provider_message_id", sa.String(200), nullable=True),
        sa.Column("error_class", sa.String(40), nullable=True),
        sa.Column("error_text", sa.Text, nullable=True),
        sa.Column("queued_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime, nullable=True),
        sa.UniqueConstraint("send_id", "subscriber_id", name="uq_deliveries_send_subscriber"),
    )
    op.create_index("ix_deliveries_send_status", "deliveries", ["send_id", "status"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("delivery_id", _BIGINT, sa.ForeignKey("deliveries.id"), nullable=True),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("occurred_at", UTCDateTime, nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "suppressions",
        sa.Column("email_key", sa.String(320), primary_key=True),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("suppressions", "events", "deliveries", "sends", "editions", "subscribers"):
        op.drop_table(table)
