"""Named operations on subscribers and suppressions: the SQL of the audience.

Unsubscribing suppresses the address for every later send and for the rest of
a send in progress: its rows not yet claimed become ``suppressed`` (delivery
move ``suppress``); a row already handed to the provider is left to settle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, bindparam, exists, func, select, text

from pipeline.store import Store, insert_new
from pipeline.store.audience import tag_filter
from pipeline.store.states import ACTIVE_SENDS, DELIVERY_MOVES, SUBSCRIBER_MOVES, SubscriberStatus
from pipeline.store.tables import deliveries, events, sends, subscribers, suppressions

YIELD_PER = 500
ERASED_PREFIX = "sha256:"


def erased_key(email_key: str) -> str:
    """The suppression an erased address leaves: a SHA-256 of the address, not the address."""
    return ERASED_PREFIX + hashlib.sha256(email_key.encode("utf-8")).hexdigest()  # rows fetched at a time when listing


def listing_filter(tag: str | None, status: str | None) -> ColumnElement[bool]:
    """Subscribers with this tag and status (any, when None)."""
    conditions = [tag_filter(tag)]
    if status is not None:
        conditions.append(subscribers.c.status == status)
    return and_(*conditions)


def refresh_statistics(connection: Connection) -> None:
    """On PostgreSQL, ANALYZE the subscribers. Within an import's transaction it counts the rows written so far,
    so the planner goes on looking addresses up by their index; with the figures of the table as it was (empty,
    say) it turns to reading every row for every chunk past some 90,000 rows, 3 s a chunk and rising."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("ANALYZE subscribers"))


def known(connection: Connection, keys: list[str]) -> tuple[dict[str, Row[Any]], dict[str, str]]:
    """The stored rows of these addresses, and the reasons of their suppressions, by address key."""
    stored = {row.email_key: row for row in connection.execute(
        select(subscribers).where(subscribers.c.email_key.in_(keys)))}
    suppressed = dict(connection.execute(select(suppressions.c.email_key, suppressions.c.reason)
                                         .where(suppressions.c.email_key.in_(keys))).all())
    # An erased reader left only a hash of their address (``readers.erased_key``).
    hashed = {erased_key(key): key for key in keys}
    for hashed_key, reason in connection.execute(select(suppressions.c.email_key, suppressions.c.reason)
                                                 .where(suppressions.c.email_key.in_(list(hashed)))):
        suppressed[hashed[hashed_key]] = reason
    return stored, suppressed


def write_import(connection: Connection, *, inserts: list[dict[str, Any]], updates: list[dict[str, Any]],
                 lifted: list[str]) -> set[str]:
    """Add new subscribers, update known ones (each update names its ``row_id``), lift suppressions. The keys
    of the inserts that found their address stored already (another import or a signup committed it after it
    was looked up; on PostgreSQL this insert waited for it): nothing was written for them, to be planned again
    as updates."""
    added: set[str] = set()
    if inserts:
        rows = sorted(inserts, key=lambda row: row["email_key"])  # one order: two imports never deadlock
        added = set(connection.scalars(insert_new(connection, subscribers, subscribers.c.email_key)
                                       .returning(subscribers.c.email_key), rows))
    if updates:
        connection.execute(subscribers.update().where(subscribers.c.id == bindparam("row_id")), updates)
    if lifted:
        connection.execute(suppressions.delete().where(suppressions.c.email_key.in_(lifted)))
    return {row["email_key"] for row in inserts} - added


def stream(connection: Connection, where: ColumnElement[bool]) -> Iterator[Row[Any]]:
    """Subscribers by address, read a few hundred at a time."""
    query = select(subscribers).where(where).order_by(subscribers.c.email_key)
    yield from connection.execution_options(yield_per=YIELD_PER).execute(query)


def attribute_names(connection: Connection, where: ColumnElement[bool]) -> list[str]:
    names: set[str] = set()
    query = select(subscribers.c.attributes).where(where)
    for (attributes,) in connection.execution_options(yield_per=YIELD_PER).execute(query):
        names.update(attributes or {})
    return sorted(names)


def count_audience(store: Store, tag: str | None) -> int:
    """Active subscribers with this tag (all, when None) whose address is not suppressed."""
    where = and_(subscribers.c.status == SubscriberStatus.ACTIVE, tag_filter(tag),
                 ~exists().where(suppressions.c.email_key == subscribers.c.email_key))
    with store.read() as connection:
        return int(connection.scalar(select(func.count()).select_from(subscribers).where(where)) or 0)


def suppress(store: Store, keys: Iterable[str], *, reason: str, move: str, source: str, now: dt.datetime,
             channel: str | None = None, provider: str = "staff") -> set[str]:
    """``suppress_in`` in a transaction of its own."""
    with store.begin() as connection:
        return suppress_in(connection, keys, reason=reason, move=move, source=source, now=now, channel=channel,
                           provider=provider)


def suppress_in(connection: Connection, keys: Iterable[str], *, reason: str, move: str, source: str,
                now: dt.datetime, channel: str | None = None, provider: str = "staff", send_id: int | None = None,
                detail: str | None = None) -> set[str]:
    """Suppress these addresses (the first suppression of an address is kept), make their subscribers take
    subscriber ``move`` (unsubscribe, bounce, complain) where it applies, and suppress their rows still queued
    in sends in progress. An unsubscribe records its ``channel`` and time on the subscriber; every subscriber
    whose status changed gets an event (``provider`` is who did it: web, staff or a mail provider). The keys
    that are subscribers."""
    keys = sorted(set(keys))
    if not keys:
        return set()
    connection.execute(insert_new(connection, suppressions, suppressions.c.email_key),
                       [{"email_key": key, "reason": reason, "source": source, "created_at": now} for key in keys])
    found = {row.email_key: row for row in connection.execute(
        select(subscribers.c.id, subscribers.c.email_key, subscribers.c.email, subscribers.c.status)
        .where(subscribers.c.email_key.in_(keys)))}
    step = SUBSCRIBER_MOVES[move]
    changing = [row for row in found.values() if row.status in step.sources]
    if changing:
        values: dict[str, Any] = {"status": step.target, "updated_at": now}
        if move == "unsubscribe":
            values |= {"unsubscribed_at": now, "unsubscribe_channel": channel}
        connection.execute(subscribers.update().where(subscribers.c.id.in_([row.id for row in changing]),
                                                      subscribers.c.status.in_(sorted(step.sources)))
                           .values(**values))
        connection.execute(events.insert(), [
            {"provider": provider, "kind": step.target, "email": row.email, "payload": {"source": source},
             "received_at": now, "occurred_at": now, "subscriber_id": row.id, "send_id": send_id, "matched": True,
             "channel": channel, "detail": detail} for row in changing])
    queued = DELIVERY_MOVES["suppress"]
    members = select(subscribers.c.id).where(subscribers.c.email_key.in_(keys))
    in_progress = select(sends.c.id).where(sends.c.status.in_(sorted(ACTIVE_SENDS)))
    connection.execute(deliveries.update().where(
        deliveries.c.status.in_(sorted(queued.sources)), deliveries.c.subscriber_id.in_(members),
        deliveries.c.send_id.in_(in_progress))
        .values(status=queued.target, error_class="suppressed", updated_at=now,
                error_text=f"{reason} during the send ({source or 'no source given'})"))
    return set(found)
