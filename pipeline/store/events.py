"""Named operations on provider events: record a webhook's events once, and apply what they say.

One request, one transaction, a few statements whatever the number of events (SendGrid posts up to
~1,000 at once): the events are matched to their deliveries and subscribers with one query each, inserted
with ``ON CONFLICT DO NOTHING ... RETURNING`` (so only the events never seen before have any effect, and a
provider's retry changes nothing), then applied set-wise:

* each matched delivery keeps the provider's last word (``event``, ``event_at``: a later event wins);
* an ``uncertain`` delivery the provider reports on was certainly accepted: delivery move ``observe``;
* unsubscribed, hard-bounced and complained addresses are suppressed (subscriber moves ``unsubscribe``,
  ``bounce``, ``complain``, in that order, so the strongest word wins), whether or not the event matched a
  delivery: an address the provider gave up on is not mailed again;
* a soft bounce adds one to the subscriber's ``soft_bounces`` and a delivery sets it back to 0, in the
  order the events happened; ``soft_bounce_limit`` in a row suppress the address as bounced.

A delivery is matched by our delivery id in the event's metadata when the event's send label and address
agree with the row (a test send numbers its recipients from 1 and must match nothing), else by the
provider's message id and the address (SendGrid and Mailgun give one id to a whole batch).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.store import Store, utcnow
from pipeline.store.states import DELIVERY_MOVES
from pipeline.store.subscribers import suppress_in
from pipeline.store.tables import deliveries, events, subscribers
from pipeline.webhooks.events import EventKind, ProviderEvent

K = EventKind
# The order suppressions are applied in, with the subscriber move and the suppression's reason of each.
SUPPRESSING = ((K.UNSUBSCRIBED, "unsubscribe", "unsubscribed"), (K.BOUNCED, "bounce", "bounced"),
               (K.COMPLAINED, "complain", "complained"))
LAST_WORDS = frozenset({K.DELIVERED, K.BOUNCED, K.SOFT_BOUNCED, K.COMPLAINED, K.UNSUBSCRIBED})
CHANNEL = "webhook"


@dataclass(frozen=True, kw_only=True)
class Ingested:
    """What one webhook request did."""

    received: int  # events in the request
    new: int  # never seen before (the rest were repeats, and changed nothing)
    matched: int  # of the new ones, those that found their delivery
    suppressed: int  # addresses suppressed because of them


@dataclass(frozen=True, slots=True)
class _Match:
    delivery_id: int
    send_id: int
    subscriber_id: int
    status: str


def ingest(store: Store, provider_events: Sequence[ProviderEvent], *, soft_bounce_limit: int,
           now: dt.datetime | None = None) -> Ingested:
    """Record and apply one request's events in one transaction."""
    with store.begin() as connection:
        return ingest_in(connection, provider_events, soft_bounce_limit=soft_bounce_limit, now=now or utcnow())


def ingest_in(connection: Connection, provider_events: Sequence[ProviderEvent], *, soft_bounce_limit: int,
              now: dt.datetime) -> Ingested:
    unique = list({(event.provider, event.event_key): event for event in reversed(provider_events)}.values())[::-1]
    if not unique:
        return Ingested(received=len(provider_events), new=0, matched=0, suppressed=0)
    matches = _match(connection, unique)
    members = _subscribers(connection, {key for event in unique if (key := event.email_key)})
    inserted = _insert(connection, unique, matches, members, now)
    fresh = sorted((event for event in unique if (event.provider, event.event_key) in inserted),
                   key=lambda event: event.occurred_at or now)
    fresh_matches = {key: match for key, match in matches.items() if key in inserted}
    _mark_deliveries(connection, fresh, fresh_matches, now)
    suppressed = _suppress(connection, fresh, now)
    suppressed |= _count_soft_bounces(connection, fresh, members, soft_bounce_limit, now)
    return Ingested(received=len(provider_events), new=len(fresh), matched=len(fresh_matches),
                    suppressed=len(suppressed))


def _match(connection: Connection, provider_events: Sequence[ProviderEvent]) -> dict[tuple[str, str], _Match]:
    """The delivery of each event that has one, by (provider, event_key)."""
    columns = (deliveries.c.id, deliveries.c.send_id, deliveries.c.subscriber_id, deliveries.c.status,
               deliveries.c.email, deliveries.c.provider_message_id)
    ids = {event.delivery_id for event in provider_events if event.delivery_id is not None}
    by_id = {row.id: row for row in connection.execute(select(*columns).where(deliveries.c.id.in_(ids)))} if ids \
        else {}
    found: dict[tuple[str, str], _Match] = {}
    unmatched = []
    for event in provider_events:
        row = by_id.get(event.delivery_id) if event.delivery_id is not None else None
        if row is not None and _agrees(event, row.send_id, row.email):
            found[(event.provider, event.event_key)] = _Match(row.id, row.send_id, row.subscriber_id, row.status)
        elif event.provider_message_id:
            unmatched.append(event)
    message_ids = {event.provider_message_id for event in unmatched}
    if not message_ids:
        return found
    by_message: dict[str, list[Any]] = defaultdict(list)
    for row in connection.execute(select(*columns).where(deliveries.c.provider_message_id.in_(message_ids))):
        by_message[row.provider_message_id].append(row)
    for event in unmatched:
        rows = by_message.get(event.provider_message_id or "", [])
        same = [row for row in rows if event.email_key and row.email.lower() == event.email_key]
        chosen = same[0] if len(same) == 1 else rows[0] if len(rows) == 1 and not event.email_key else None
        if chosen is not None:
            found[(event.provider, event.event_key)] = _Match(chosen.id, chosen.send_id, chosen.subscriber_id,
                                                              chosen.status)
    return found


def _agrees(event: ProviderEvent, send_id: int, email: str) -> bool:
    """Whether the row named by an event's delivery id is the event's: same send label, same address."""
    if event.send_label is not None and event.send_label != str(send_id):
        return False
    return event.email_key is None or event.email_key == email.lower()


def _subscribers(connection: Connection, keys: set[str]) -> dict[str, Any]:
    if not keys:
        return {}
    query = select(subscribers.c.id, subscribers.c.email_key, subscribers.c.soft_bounces) \
        .where(subscribers.c.email_key.in_(keys))
    return {row.email_key: row for row in connection.execute(query)}


def _insert_new_events(connection: Connection) -> Insert:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(events).on_conflict_do_nothing(index_elements=[events.c.provider, events.c.event_key])


def _insert(connection: Connection, provider_events: Sequence[ProviderEvent], matches: dict[tuple[str, str], _Match],
            members: dict[str, Any], now: dt.datetime) -> set[tuple[str, str]]:
    """Insert the events not yet recorded; the (provider, event_key) of those that were new."""
    rows = []
    for event in provider_events:
        match = matches.get((event.provider, event.event_key))
        member = members.get(event.email_key or "")
        known = event.kind != K.OTHER
        rows.append({
            "provider": event.provider, "kind": event.kind.value, "email": event.email, "payload": dict(event.payload),
            "occurred_at": event.occurred_at, "received_at": now, "event_key": event.event_key,
            "delivery_id": match.delivery_id if match else None, "send_id": match.send_id if match else None,
            "subscriber_id": match.subscriber_id if match else (member.id if member else None),
            "matched": match is not None, "channel": CHANNEL if event.kind == K.UNSUBSCRIBED else None,
            "detail": event.detail if known else " ".join(filter(None, (event.raw_type, event.detail))) or None})
    returned = connection.execute(_insert_new_events(connection).returning(events.c.provider, events.c.event_key),
                                  rows)
    return {(provider, key) for provider, key in returned}


def _mark_deliveries(connection: Connection, fresh: Sequence[ProviderEvent], matches: dict[tuple[str, str], _Match],
                     now: dt.datetime) -> None:
    """The provider's last word on each delivery, and ``observe`` for the uncertain ones it reported on."""
    last: dict[int, dict[str, Any]] = {}
    for event in fresh:  # in the order they happened: the last one per delivery wins
        match = matches.get((event.provider, event.event_key))
        if match is not None and event.kind in LAST_WORDS:
            last[match.delivery_id] = {"row": match.delivery_id, "word": event.kind.value,
                                       "at": event.occurred_at or now}
    if last:
        connection.execute(update(deliveries).where(
            deliveries.c.id == bindparam("row"),
            or_(deliveries.c.event_at.is_(None), deliveries.c.event_at <= bindparam("at")))
            .values(event=bindparam("word"), event_at=bindparam("at")), list(last.values()))
    observe = DELIVERY_MOVES["observe"]
    uncertain = sorted({match.delivery_id for match in matches.values() if match.status in observe.sources})
    if uncertain:
        connection.execute(update(deliveries).where(
            deliveries.c.id.in_(uncertain), deliveries.c.status.in_(sorted(observe.sources)))
            .values(status=observe.target, updated_at=now, sent_at=now, error_class=None, error_text=None))


def _suppress(connection: Connection, fresh: Sequence[ProviderEvent], now: dt.datetime) -> set[str]:
    suppressed: set[str] = set()
    for kind, move, reason in SUPPRESSING:
        by_provider: dict[str, set[str]] = defaultdict(set)
        for event in fresh:
            if event.kind == kind and event.email_key:
                by_provider[event.provider].add(event.email_key)
        for provider, keys in sorted(by_provider.items()):
            suppress_in(connection, keys, reason=reason, move=move, source=f"{provider} webhook", now=now,
                        channel=CHANNEL if kind == K.UNSUBSCRIBED else None, provider=provider)
            suppressed |= keys
    return suppressed


def _count_soft_bounces(connection: Connection, fresh: Iterable[ProviderEvent], members: dict[str, Any], limit: int,
                        now: dt.datetime) -> set[str]:
    """Soft bounces in a row per subscriber, in the order the events happened; those at ``limit`` suppressed."""
    counts: dict[str, int] = {}
    bounced_now: dict[str, str] = {}
    for event in fresh:
        key = event.email_key
        if key not in members or event.kind not in (K.SOFT_BOUNCED, K.DELIVERED):
            continue
        count = counts.get(key, members[key].soft_bounces or 0)
        counts[key] = count + 1 if event.kind == K.SOFT_BOUNCED else 0
        if event.kind == K.SOFT_BOUNCED and counts[key] >= limit:
            bounced_now[key] = event.provider
    changed = [{"key": key, "count": count} for key, count in counts.items()
               if count != (members[key].soft_bounces or 0)]
    if changed:
        connection.execute(update(subscribers).where(subscribers.c.email_key == bindparam("key"))
                           .values(soft_bounces=bindparam("count")), changed)
    at_limit = {key for key in bounced_now if counts[key] >= limit}
    by_provider: dict[str, set[str]] = defaultdict(set)
    for key in at_limit:
        by_provider[bounced_now[key]].add(key)
    for provider, keys in sorted(by_provider.items()):
        suppress_in(connection, keys, reason="bounced", move="bounce", source=f"{provider} webhook", now=now,
                    provider=provider, detail=f"{limit} soft bounces in a row")
    return at_limit


def recorded(store: Store, *, provider: str | None = None) -> list[Any]:
    """The events providers reported (not the moves they caused), oldest first: for the console and tests."""
    query = select(events).where(events.c.event_key.is_not(None)).order_by(events.c.id)
    if provider is not None:
        query = query.where(events.c.provider == provider)
    with store.read() as connection:
        return list(connection.execute(query))
