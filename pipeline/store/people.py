"""Named reads of subscribers for the staff console: a searchable list in pages, and one subscriber's history.

The list pages by keyset (``id > after``), never by OFFSET, so the hundredth page costs what the first does;
a page asks for one row more than it shows to know whether there is a next one, and never counts the table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, or_, select

from pipeline.store import Store
from pipeline.store.audience import tags_of
from pipeline.store.subscribers import listing_filter
from pipeline.store.tables import deliveries, editions, events, sends, subscribers


@dataclass(frozen=True, kw_only=True)
class PersonLine:
    """A subscriber as a line of the console's list."""

    id: int
    email: str
    name: str
    status: str
    tags: tuple[str, ...]
    created_at: dt.datetime
    unsubscribed_at: dt.datetime | None
    unsubscribe_channel: str | None


@dataclass(frozen=True, kw_only=True)
class PersonPage:
    lines: list[PersonLine]
    next_after: int | None  # the ``after`` of the next page; None on the last


@dataclass(frozen=True, kw_only=True)
class Received:
    """One delivery of an edition to the subscriber, and what the provider said of it afterwards."""

    send_id: int
    edition: str
    subject: str
    status: str
    sent_at: dt.datetime | None
    updated_at: dt.datetime
    error: str | None
    event: str | None
    event_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class Happened:
    """An event of the subscriber: a bounce, complaint, unsubscribe (with its channel), confirmation, erasure."""

    kind: str
    provider: str
    channel: str | None
    detail: str | None
    send_id: int | None
    at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class Person:
    line: PersonLine
    confirmed_at: dt.datetime | None
    soft_bounces: int
    deliveries: list[Received]
    events: list[Happened]


def _line(row) -> PersonLine:
    return PersonLine(id=row.id, email=row.email, name=row.name, status=row.status, tags=tags_of(row.tags),
                      created_at=row.created_at, unsubscribed_at=row.unsubscribed_at,
                      unsubscribe_channel=row.unsubscribe_channel)


def listing(store: Store, *, search: str | None, status: str | None, tag: str | None, after: int | None,
            limit: int) -> PersonPage:
    """Subscribers by id whose address or name contains ``search`` (case-insensitive), with this status and
    tag (any, when None), after the id ``after``."""
    where = listing_filter(tag, status)
    if search:
        where = and_(where, or_(subscribers.c.email_key.contains(search.lower(), autoescape=True),
                                subscribers.c.name.icontains(search, autoescape=True)))
    if after is not None:
        where = and_(where, subscribers.c.id > after)
    query = select(subscribers).where(where).order_by(subscribers.c.id).limit(limit + 1)
    with store.read() as connection:
        rows = connection.execute(query).all()
    lines = [_line(row) for row in rows[:limit]]
    return PersonPage(lines=lines, next_after=lines[-1].id if len(rows) > limit else None)


def person(store: Store, subscriber_id: int) -> Person | None:
    """A subscriber with every delivery they had and every event recorded of them, oldest first."""
    with store.read() as connection:
        row = connection.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        if row is None:
            return None
        received = connection.execute(
            select(deliveries.c.send_id, editions.c.name, editions.c.subject, deliveries.c.status,
                   deliveries.c.sent_at, deliveries.c.updated_at, deliveries.c.error_text, deliveries.c.event,
                   deliveries.c.event_at)
            .join(sends, sends.c.id == deliveries.c.send_id).join(editions, editions.c.id == sends.c.edition_id)
            .where(deliveries.c.subscriber_id == subscriber_id).order_by(deliveries.c.id)).all()
        happened = connection.execute(
            select(events.c.kind, events.c.provider, events.c.channel, events.c.detail, events.c.send_id,
                   events.c.occurred_at, events.c.received_at)
            .where(events.c.subscriber_id == subscriber_id).order_by(events.c.id)).all()
    return Person(
        line=_line(row), confirmed_at=row.confirmed_at, soft_bounces=row.soft_bounces,
        deliveries=[Received(send_id=d.send_id, edition=d.name, subject=d.subject, status=d.status,
                             sent_at=d.sent_at, updated_at=d.updated_at, error=d.error_text, event=d.event,
                             event_at=d.event_at) for d in received],
        events=[Happened(kind=e.kind, provider=e.provider, channel=e.channel, detail=e.detail, send_id=e.send_id,
                         at=e.occurred_at or e.received_at) for e in happened])
