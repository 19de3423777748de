"""The subscribers' side of the web: signups awaiting confirmation, unsubscribe channels, provider events.

``signups`` holds double opt-in requests until their link is followed. A
subscriber records when and how they unsubscribed and their soft bounces in a
row. An event is recorded once per provider event id (or hash) and names the
delivery, subscriber and send it matched; a delivery keeps the provider's last
word on it. An edition keeps its archive page as sent, and whether it belongs
in the archive.

Revision ID: 0005_web
Revises: 0004_leases
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from pipeline.store.tables import UTCDateTime

revision = "0005_web"
down_revision = "0004_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("tags", sa.String(1000), nullable=False, server_default=";"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("mailed_at", UTCDateTime, nullable=True),
        sa.Column("confirmed_at", UTCDateTime, nullable=True),
    )
    with op.batch_alter_table("subscribers") as table:
        table.add_column(sa.Column("confirmed_at", UTCDateTime, nullable=True))
        table.add_column(sa.Column("unsubscribed_at", UTCDateTime, nullable=True))
        table.add_column(sa.Column("unsubscribe_channel", sa.String(20), nullable=True))
        table.add_column(sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("deliveries") as table:
        table.add_column(sa.Column("event", sa.String(20), nullable=True))
        table.add_column(sa.Column("event_at", UTCDateTime, nullable=True))
        table.create_index("ix_deliveries_provider_message_id", ["provider_message_id"])
    with op.batch_alter_table("editions") as table:
        table.add_column(sa.Column("web_html", sa.Text, nullable=True))
        table.add_column(sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.true()))
    with op.batch_alter_table("events") as table:
        table.add_column(sa.Column("event_key", sa.String(128), nullable=True))
        table.add_column(sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id",
                                                                              name="fk_events_subscriber"),
                                   nullable=True))
        table.add_column(sa.Column("send_id", sa.Integer, sa.ForeignKey("sends.id", name="fk_events_send"),
                                   nullable=True))
        table.add_column(sa.Column("matched", sa.Boolean, nullable=False, server_default=sa.false()))
        table.add_column(sa.Column("channel", sa.String(20), nullable=True))
        table.add_column(sa.Column("detail", sa.Text, nullable=True))
        table.create_unique_constraint("uq_events_provider_key", ["provider", "event_key"])
        table.create_index("ix_events_subscriber", ["subscriber_id"])


def downgrade() -> None:
    with op.batch_alter_table("events") as table:
        table.drop_index("ix_events_subscriber")
        table.drop_constraint("uq_events_provider_key", type_="unique")
        for name in ("detail", "channel", "matched", "send_id", "subscriber_id", "event_key"):
            table.drop_column(name)
    with op.batch_alter_table("editions") as table:
        table.drop_column("archived")
        table.drop_column("web_html")
    with op.batch_alter_table("deliveries") as table:
        table.drop_index("ix_deliveries_provider_message_id")
        table.drop_column("event_at")
        table.drop_column("event")
    with op.batch_alter_table("subscribers") as table:
        for name in ("soft_bounces", "unsubscribe_channel", "unsubscribed_at", "confirmed_at"):
            table.drop_column(name)
    op.drop_table("signups")
