"""Every table of the pipeline, in one place (SQLAlchemy Core; SQLite and PostgreSQL).

Timestamps are timezone-aware and stored as UTC. Statuses are the enums of
``states.py``, changed only through its table of moves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Unicode,
    UniqueConstraint,
    func,
    text,
)

from pipeline.store.states import ACTIVE_SENDS, DeliveryStatus, SendStatus, SubscriberStatus

SUBSCRIBER_STATUSES = tuple(SubscriberStatus)
# The statuses a subscriber file may give (erasure is a reader's request, never a column of a file).
LISTED_STATUSES = tuple(status for status in SubscriberStatus if status != SubscriberStatus.ERASED)
SEND_STATUSES = tuple(SendStatus)
# The statuses of a send that holds its edition (``states.ACTIVE_SENDS``), as SQL for the partial index below.
_ACTIVE = text(f"status IN ({', '.join(repr(str(status)) for status in sorted(ACTIVE_SENDS))})")
DELIVERY_STATUSES = tuple(DeliveryStatus)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime, stored as UTC on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[dt.datetime | None], Any] | None:
        """The processing above (and the driver's), the last value's result kept: the rows of a batch or of a
        new send are written with one instant each, which is then converted once, not once per row."""
        process = super().bind_processor(dialect)
        if process is None:
            return None
        last: list[tuple[dt.datetime | None, Any]] = [(None, None)]  # swapped whole: safe across threads

        def remembering(value: dt.datetime | None) -> Any:
            seen, result = last[0]
            if value is not None and value is seen:
                return result
            result = process(value)
            last[0] = (value, result)
            return result

        return remembering


metadata = MetaData()

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),  # lower-cased: one row per address
    Column("name", String(200), nullable=False, default=""),
    Column("tags", String(1000), nullable=False, default=";"),  # ";policy;energy;" so LIKE '%;policy;%' works
    Column("status", String(20), nullable=False, default="active"),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),  # when they last confirmed a signup (double opt-in)
    Column("unsubscribed_at", UTCDateTime, nullable=True),
    Column("unsubscribe_channel", String(20), nullable=True),  # one-click | page | preferences | webhook | staff
    Column("soft_bounces", Integer, nullable=False, default=0),  # in a row; reset by a delivery
)

# A signup waiting for its confirmation (double opt-in): nobody becomes a subscriber, and nobody who left
# comes back, until the link mailed to the address is followed.
signups = Table(
    "signups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, index=True),
    Column("name", String(200), nullable=False, default=""),
    Column("tags", String(1000), nullable=False, default=";"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("mailed_at", UTCDateTime, nullable=True),  # the confirmation last sent
    Column("confirmed_at", UTCDateTime, nullable=True),
)

editions = Table(
    "editions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("built_path", Text, nullable=False),
    # The exact parts sent, so a send resumed after the draft changed still sends what it started with.
    Column("email_html", Text, nullable=False),
    Column("email_txt", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("web_html", Text, nullable=True),  # the archive page ("view in browser"), as it was sent
    Column("archived", Boolean, nullable=False, default=True),  # front matter ``archive: false`` keeps it out
    UniqueConstraint("name", "content_hash", name="uq_editions_name_hash"),
)

sends = Table(
    "sends",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("edition_id", Integer, ForeignKey("editions.id"), nullable=False),
    # The edition's name, kept here so that one index can say: one active send per edition, whatever its
    # content hash (two senders creating a send at once: the second waits on the first's row, then fails).
    Column("edition_name", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("audience", String(200), nullable=True),
    Column("provider", String(50), nullable=False),
    Column("scheduled_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("status_reason", Text, nullable=False, default=""),
    Column("override_reason", Text, nullable=True),  # why an edition with failed checks was sent anyway
    # The sender that owns it (host:pid:id) until lease_until; renewed while that sender lives.
    Column("runner", String(200), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("draft_path", Text, nullable=True),  # a scheduled send is rebuilt from its draft when it fires
    Column("timezone", String(64), nullable=True),  # the zone its time was given in, for people reading it
    Column("nonce", String(32), nullable=True),  # random: makes its Message-IDs unique to this send
    Column("queued_at", UTCDateTime, nullable=True),  # when its audience got its rows (a scheduled one: on firing)
    # What ``newsletter check`` found when the send was created (``Report.to_dict()``), shown in the console.
    Column("check_report", JSON, nullable=True),
    Index("uq_sends_one_active", "edition_name", unique=True, sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("send_id", Integer, ForeignKey("sends.id"), nullable=False),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("email", String(320), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("batch_id", String(40), nullable=True),
    Column("provider_message_id", String(200), nullable=True),
    Column("error_class", String(40), nullable=True),
    Column("error_text", Text, nullable=True),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    # What the provider reported after accepting it: delivered | bounced | soft_bounced | complained | unsubscribed.
    Column("event", String(20), nullable=True),
    Column("event_at", UTCDateTime, nullable=True),
    UniqueConstraint("send_id", "subscriber_id", name="uq_deliveries_send_subscriber"),
    Index("ix_deliveries_send_status", "send_id", "status"),
    Index("ix_deliveries_provider_message_id", "provider_message_id"),  # a webhook names the message it is about
    Index("ix_deliveries_subscriber", "subscriber_id"),  # a subscriber's page: every delivery they had
    # The console: a page of recipients starts at a cursor (keyset), never skips rows (OFFSET) ...
    Index("ix_deliveries_send_id", "send_id", "id"),
    # ... and accepted and failed messages per minute are counted from the index alone (updated_at: settled).
    Index("ix_deliveries_send_status_settled", "send_id", "status", "updated_at"),
)
# A search by the start of an address, case-insensitive, in address order.
Index("ix_deliveries_send_email", deliveries.c.send_id, func.lower(deliveries.c.email), deliveries.c.id)

# A send handed to the workers (PostgreSQL) is cut into parts: each a range of its delivery ids, sent by one job
# at a time, owned by that job's sender (host:pid:id) until lease_until, renewed while it lives. The ranges
# cover every row of the send, so rows queued again later (--retry-failed) fall in a part too.
send_parts = Table(
    "send_parts",
    metadata,
    Column("send_id", Integer, ForeignKey("sends.id"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("first_id", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("last_id", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("runner", String(200), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("delivery_id", BigInteger().with_variant(Integer, "sqlite"), ForeignKey("deliveries.id"), nullable=True),
    Column("provider", String(50), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("email", String(320), nullable=True),
    Column("payload", JSON, nullable=False, default=dict),
    Column("occurred_at", UTCDateTime, nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    # The provider's event id, or a hash of the event: a repeated webhook is recorded once.
    Column("event_key", String(128), nullable=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=True),
    Column("send_id", Integer, ForeignKey("sends.id"), nullable=True),
    Column("matched", Boolean, nullable=False, default=False),  # found its delivery (or its subscriber)
    Column("channel", String(20), nullable=True),  # for unsubscribes: one-click | page | preferences | webhook | staff
    Column("detail", Text, nullable=True),  # a bounce's reason, a staff member's note
    UniqueConstraint("provider", "event_key", name="uq_events_provider_key"),
    Index("ix_events_subscriber", "subscriber_id"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("email_key", String(320), primary_key=True),
    Column("reason", String(40), nullable=False),  # unsubscribed | bounced | complained | manual | provider
    Column("source", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("provider", String(50), primary_key=True),
    Column("tokens", Float, nullable=False),  # may be negative: a debt that the next sender waits out
    Column("updated_at", UTCDateTime, nullable=False),
)

# Staff who read the console (viewer), act on sends and schedules (editor), and manage staff (admin).
staff_users = Table(
    "staff_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(10), nullable=False),
    Column("password_hash", String(200), nullable=False),  # argon2id, PHC string
    Column("api_token_hash", String(64), nullable=True, unique=True),  # SHA-256 of a token for scripts
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# A signed-in browser: the cookie holds a random secret, the store its SHA-256 (a stolen database opens no
# session), and the CSRF token every form of that session carries.
staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("staff_users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_staff_sessions_user", "user_id"),
)

# Who did what, when: every staff action, shown in the console.
staff_audit = Table(
    "staff_audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("user_name", String(64), nullable=False),  # kept when the account is removed
    Column("action", String(40), nullable=False),
    Column("target", String(200), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_staff_audit_at", "at"),
)

# APScheduler's job store (``schedule/runner.py``): its own columns, created by the migrations under their lock,
# never by APScheduler, so two runners starting on an empty database do not race to create it.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
