"""Named operations for what readers do on the web: leave, sign up, confirm, change, take and erase their data.

A signup is a row of ``signups`` until its link is followed; only then does
anyone become (or become again) an active subscriber, and their suppression is
lifted. Erasure keeps no personal data: the subscriber row keeps only its id and
status, their deliveries and events lose their address, and a SHA-256 of the
address stays in ``suppressions`` so that no import brings them back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, and_, or_, select

from pipeline.store import Store, insert_new
from pipeline.store.audience import stored_tags, tags_of
from pipeline.store.states import SUBSCRIBER_MOVES, SubscriberStatus
from pipeline.store.subscribers import erased_key, suppress_in
from pipeline.store.tables import deliveries, editions, events, sends, signups, subscribers, suppressions


@dataclass(frozen=True, kw_only=True)
class Reader:
    """A subscriber as their own pages show them."""

    id: int
    email: str
    email_key: str
    name: str
    tags: tuple[str, ...]
    status: SubscriberStatus


@dataclass(frozen=True, kw_only=True)
class Ticket:
    """A signup waiting for its confirmation, and whether its mail is due now."""

    id: int
    created_at: dt.datetime
    due: bool


@dataclass(frozen=True, kw_only=True)
class Confirmed:
    outcome: str  # "confirmed" | "already" | "missing"
    subscriber_id: int | None = None


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def reader(store: Store, subscriber_id: int) -> Reader | None:
    with store.read() as connection:
        row = connection.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    if row is None:
        return None
    return Reader(id=row.id, email=row.email, email_key=row.email_key, name=row.name, tags=tags_of(row.tags),
                  status=SubscriberStatus(row.status))


def unsubscribe(store: Store, subscriber_id: int, *, send_id: int | None, channel: str, now: dt.datetime,
                provider: str = "web", detail: str | None = None) -> bool:
    """Unsubscribe one subscriber (idempotent); True when this changed their status. ``detail`` goes into the
    event (a staff member's reason)."""
    with store.begin() as connection:
        key = connection.scalar(select(subscribers.c.email_key).where(
            subscribers.c.id == subscriber_id, subscribers.c.status != SubscriberStatus.ERASED))
        if key is None:
            return False
        before = connection.scalar(select(subscribers.c.status).where(subscribers.c.id == subscriber_id))
        known = connection.scalar(select(sends.c.id).where(sends.c.id == send_id)) if send_id else None
        suppress_in(connection, [key], reason="unsubscribed", move="unsubscribe", source=f"{channel} unsubscribe",
                    now=now, channel=channel, provider=provider, send_id=known, detail=detail)
        return before in SUBSCRIBER_MOVES["unsubscribe"].sources


def open_signup(store: Store, *, email: str, email_key: str, name: str, tags: tuple[str, ...], now: dt.datetime,
                valid_for: dt.timedelta, resend_after: dt.timedelta) -> Ticket:
    """The address's signup still waiting (its name and topics updated), or a new one. Its mail is due when it
    was never sent, or was sent longer than ``resend_after`` ago."""
    with store.begin() as connection:
        row = connection.execute(
            select(signups).where(signups.c.email_key == email_key, signups.c.confirmed_at.is_(None),
                                  signups.c.created_at > now - valid_for)
            .order_by(signups.c.id.desc()).limit(1)).first()
        if row is None:
            signup_id = _new_id(connection.execute(signups.insert().values(
                email=email, email_key=email_key, name=name, tags=stored_tags(tags), created_at=now)))
            return Ticket(id=signup_id, created_at=now, due=True)
        connection.execute(signups.update().where(signups.c.id == row.id).values(name=name, tags=stored_tags(tags)))
        due = row.mailed_at is None or row.mailed_at <= now - resend_after
        return Ticket(id=row.id, created_at=row.created_at, due=due)


def mark_mailed(store: Store, signup_id: int, now: dt.datetime) -> None:
    with store.begin() as connection:
        connection.execute(signups.update().where(signups.c.id == signup_id).values(mailed_at=now))


def signup_created(store: Store, signup_id: int) -> dt.datetime | None:
    with store.read() as connection:
        return connection.scalar(select(signups.c.created_at).where(signups.c.id == signup_id))


def confirm(store: Store, signup_id: int, *, topics: tuple[str, ...], now: dt.datetime) -> Confirmed:
    """Make the signup's address an active subscriber: a new one, or one who left coming back (their
    suppression lifted). Of their tags, the publication's ``topics`` become those the signup chose; others stay."""
    with store.begin() as connection:
        signup = connection.execute(select(signups).where(signups.c.id == signup_id)).first()
        if signup is None:
            return Confirmed(outcome="missing")
        row = connection.execute(select(subscribers).where(subscribers.c.email_key == signup.email_key)).first()
        if signup.confirmed_at is not None and row is not None and row.status == SubscriberStatus.ACTIVE:
            return Confirmed(outcome="already", subscriber_id=row.id)
        chosen = set(tags_of(signup.tags))
        subscriber_id = None if row is None else row.id
        if row is None:  # ON CONFLICT: an import (or another link) may store the address at the same moment
            subscriber_id = connection.scalar(insert_new(connection, subscribers, subscribers.c.email_key).values(
                email=signup.email, email_key=signup.email_key, name=signup.name, tags=stored_tags(chosen),
                status=SubscriberStatus.ACTIVE, attributes={}, created_at=now, updated_at=now, confirmed_at=now,
                soft_bounces=0).returning(subscribers.c.id))
            if subscriber_id is None:  # it did: confirm the row it stored, as if it had been there
                row = connection.execute(select(subscribers).where(subscribers.c.email_key == signup.email_key)).one()
                subscriber_id = row.id
        if row is not None:
            kept = {tag for tag in tags_of(row.tags) if tag not in topics}
            move = SUBSCRIBER_MOVES["confirm"]
            connection.execute(subscribers.update().where(subscribers.c.id == row.id,
                                                          subscribers.c.status.in_(sorted(move.sources)))
                               .values(status=move.target, email=signup.email, name=signup.name or row.name,
                                       tags=stored_tags(kept | chosen), updated_at=now, confirmed_at=now,
                                       soft_bounces=0, unsubscribed_at=None, unsubscribe_channel=None))
        connection.execute(suppressions.delete().where(
            suppressions.c.email_key.in_([signup.email_key, erased_key(signup.email_key)])))
        connection.execute(signups.update().where(signups.c.email_key == signup.email_key,
                                                  signups.c.confirmed_at.is_(None)).values(confirmed_at=now))
        connection.execute(events.insert().values(
            provider="web", kind="confirmed", email=signup.email, payload={"signup": signup_id}, occurred_at=now,
            received_at=now, subscriber_id=subscriber_id, matched=True, channel="signup"))
        return Confirmed(outcome="confirmed", subscriber_id=subscriber_id)


def update_preferences(store: Store, subscriber_id: int, *, name: str, chosen: tuple[str, ...],
                       topics: tuple[str, ...], now: dt.datetime) -> None:
    """Set the name and, of the publication's ``topics``, the ones ``chosen``; other tags stay as they are."""
    with store.begin() as connection:
        row = connection.execute(select(subscribers.c.tags).where(subscribers.c.id == subscriber_id)).first()
        if row is None:
            return
        kept = {tag for tag in tags_of(row.tags) if tag not in topics}
        connection.execute(subscribers.update().where(subscribers.c.id == subscriber_id,
                                                      subscribers.c.status != SubscriberStatus.ERASED)
                           .values(name=name, tags=stored_tags(kept | set(chosen)), updated_at=now))


def _when(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def personal_data(store: Store, subscriber_id: int) -> dict[str, Any]:
    """Everything stored about a subscriber, as they may download it."""
    with store.read() as connection:
        row = connection.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).one()
        suppression = connection.execute(select(suppressions).where(
            suppressions.c.email_key == row.email_key)).first()
        sent = connection.execute(
            select(deliveries.c.send_id, editions.c.name, editions.c.subject, deliveries.c.email,
                   deliveries.c.status, deliveries.c.sent_at, deliveries.c.event, deliveries.c.event_at)
            .join(sends, sends.c.id == deliveries.c.send_id).join(editions, editions.c.id == sends.c.edition_id)
            .where(deliveries.c.subscriber_id == subscriber_id).order_by(deliveries.c.id))
        happened = connection.execute(
            select(events.c.kind, events.c.provider, events.c.channel, events.c.occurred_at, events.c.received_at,
                   events.c.detail, events.c.send_id)
            .where(events.c.subscriber_id == subscriber_id).order_by(events.c.id))
        asked = connection.execute(select(signups).where(signups.c.email_key == row.email_key)
                                   .order_by(signups.c.id))
        return {
            "subscriber": {
                "email": row.email, "name": row.name, "topics": list(tags_of(row.tags)), "status": row.status,
                "attributes": row.attributes or {}, "created_at": _when(row.created_at),
                "updated_at": _when(row.updated_at), "confirmed_at": _when(row.confirmed_at),
                "unsubscribed_at": _when(row.unsubscribed_at), "unsubscribe_channel": row.unsubscribe_channel,
                "soft_bounces": row.soft_bounces,
            },
            "suppression": None if suppression is None else {
                "reason": suppression.reason, "source": suppression.source,
                "created_at": _when(suppression.created_at)},
            "deliveries": [{"send": d.send_id, "edition": d.name, "subject": d.subject, "address": d.email,
                            "status": d.status, "sent_at": _when(d.sent_at), "provider_event": d.event,
                            "provider_event_at": _when(d.event_at)} for d in sent],
            "events": [{"kind": e.kind, "by": e.provider, "channel": e.channel, "at": _when(e.occurred_at or
                                                                                          e.received_at),
                        "detail": e.detail, "send": e.send_id} for e in happened],
            "signups": [{"email": s.email, "name": s.name, "topics": list(tags_of(s.tags)),
                         "created_at": _when(s.created_at), "mailed_at": _when(s.mailed_at),
                         "confirmed_at": _when(s.confirmed_at)} for s in asked],
        }


def erase(store: Store, subscriber_id: int, *, now: dt.datetime) -> bool:
    """Delete a subscriber's personal data and keep a hashed suppression; False when there was none to erase."""
    with store.begin() as connection:
        row = connection.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        move = SUBSCRIBER_MOVES["erase"]
        if row is None or row.status not in move.sources:
            return False
        _erase_in(connection, row.id, row.email_key, now=now)
        return True


def _erase_in(connection: Connection, subscriber_id: int, key: str, *, now: dt.datetime) -> None:
    hashed = erased_key(key)
    connection.execute(suppressions.delete().where(or_(suppressions.c.email_key == key,
                                                       suppressions.c.email_key == hashed)))
    connection.execute(insert_new(connection, suppressions, suppressions.c.email_key).values(  # erased at once twice
        email_key=hashed, reason="erased", source="erased at their request", created_at=now))
    move = SUBSCRIBER_MOVES["erase"]
    connection.execute(subscribers.update().where(subscribers.c.id == subscriber_id,
                                                  subscribers.c.status.in_(sorted(move.sources)))
                       .values(status=move.target, email="", email_key=f"erased:{subscriber_id}", name="",
                               tags=";", attributes={}, updated_at=now, unsubscribed_at=now,
                               unsubscribe_channel="preferences"))
    connection.execute(deliveries.update().where(deliveries.c.subscriber_id == subscriber_id)
                       .values(email="", error_text=None))
    connection.execute(events.update().where(events.c.subscriber_id == subscriber_id).values(email=None, payload={}))
    connection.execute(events.update().where(and_(events.c.subscriber_id.is_(None), events.c.email == key))
                       .values(email=None, payload={}))
    connection.execute(signups.delete().where(signups.c.email_key == key))
    connection.execute(events.insert().values(provider="web", kind="erased", email=None, payload={}, occurred_at=now,
                                              received_at=now, subscriber_id=subscriber_id, matched=True,
                                              channel="preferences"))
