"""Named reads for the delivery log: a line per send, and a line per recipient of a send."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, or_, select

from pipeline.errors import SendError
from pipeline.store import Store
from pipeline.store.tables import deliveries, editions, sends


@dataclass(frozen=True, kw_only=True)
class SendLine:
    """One send: its edition, when it ran, and its deliveries counted by status."""

    id: int
    edition: str
    status: str
    reason: str
    created: dt.datetime
    started: dt.datetime | None
    finished: dt.datetime | None
    counts: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class DeliveryLine:
    """What happened to one recipient of a send."""

    email: str
    status: str
    attempts: int
    provider_message_id: str | None
    error: str | None
    queued: dt.datetime
    updated: dt.datetime
    sent: dt.datetime | None


def send_lines(store: Store) -> list[SendLine]:
    """Every send, newest first."""
    with store.read() as connection:
        rows = connection.execute(
            select(sends.c.id, editions.c.name, sends.c.status, sends.c.status_reason, sends.c.created_at,
                   sends.c.started_at, sends.c.finished_at)
            .join(editions, editions.c.id == sends.c.edition_id).order_by(sends.c.id.desc())).all()
        counts: dict[int, dict[str, int]] = {}
        for send_id, status, count in connection.execute(
                select(deliveries.c.send_id, deliveries.c.status, func.count())
                .group_by(deliveries.c.send_id, deliveries.c.status)):
            counts.setdefault(send_id, {})[status] = int(count)
    return [SendLine(id=row.id, edition=row.name, status=row.status, reason=row.status_reason or "",
                     created=row.created_at, started=row.started_at, finished=row.finished_at,
                     counts=counts.get(row.id, {})) for row in rows]


def delivery_lines(store: Store, send_id: int, *, status: str | None = None,
                   search: str | None = None) -> Iterator[DeliveryLine]:
    """The recipients of a send, in the order they were queued; streamed, never all in memory. An unknown
    send is an error at once, before anything is read."""
    with store.read() as connection:
        if connection.scalar(select(sends.c.id).where(sends.c.id == send_id)) is None:
            raise SendError(f"no send {send_id} (see 'newsletter logs')")
    query = select(deliveries).where(deliveries.c.send_id == send_id).order_by(deliveries.c.id)
    if status:
        query = query.where(deliveries.c.status == status)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(or_(func.lower(deliveries.c.email).like(pattern),
                                func.lower(func.coalesce(deliveries.c.error_text, "")).like(pattern),
                                func.lower(func.coalesce(deliveries.c.provider_message_id, "")).like(pattern)))
    return _stream(store, query)


def _stream(store: Store, query) -> Iterator[DeliveryLine]:
    with store.read() as connection:
        for row in connection.execution_options(yield_per=1000).execute(query):
            error = " ".join(part for part in (row.error_class, row.error_text) if part) or None
            yield DeliveryLine(email=row.email, status=row.status, attempts=row.attempts,
                               provider_message_id=row.provider_message_id, error=error, queued=row.queued_at,
                               updated=row.updated_at, sent=row.sent_at)
