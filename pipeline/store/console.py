"""Named reads for the staff console's sends: a line per send, one send's reckoning, and its recipients by page.

Every read here stays fast when a send has a million rows (``benchmarks/bench_console.py``):

* counts per status come from the ``(send_id, status)`` index, never from reading rows;
* a page of recipients starts *after* a delivery id (keyset pagination) on ``(send_id, id)``, so the
  5,000th page costs what the first does; nothing is ever skipped with OFFSET or counted per page;
* a search is a case-insensitive **prefix of the address** on ``(send_id, lower(email), id)``, in
  address order; a substring search (``LIKE '%x%'``) would read every row of the send, so there is none.
  Type the start of an address, or all of it; the status filter narrows either;
* the timeline counts accepted and failed messages per bucket of minutes from ``(send_id, status,
  updated_at)`` alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, func, literal, or_, select, union_all

from pipeline.store import Store
from pipeline.store.states import DeliveryStatus, SendStatus
from pipeline.store.tables import deliveries, editions, sends

D = DeliveryStatus
PAGE_SIZE = 100
SEARCH_MAX = 320  # the longest address there is
# The order the reconciliation adds up in: what happened first, what may still happen last.
RECKONING = (D.SENT, D.FAILED, D.UNCERTAIN, D.SUPPRESSED, D.SKIPPED, D.QUEUED, D.SENDING, D.CANCELLED)


# Sends whose rows no move changes while they stay as they are: a sent send is reopened (``paused``) before
# any row of it is queued again, a cancelled one is final, a held or missed one has no rows. (A ``failed``
# send is not among them: ``retry`` queues its rows again and leaves it ``failed`` until it is resumed.)
SETTLED_SENDS = frozenset({SendStatus.SENT, SendStatus.CANCELLED, SendStatus.HELD, SendStatus.MISSED})


class BadQuery(ValueError):
    """A filter or cursor of the recipient table that cannot be used (the page answers 400 with this text)."""


@dataclass(frozen=True, kw_only=True)
class SendRow:
    """One send in the list: its edition, status, times, provider and rows by status."""

    id: int
    edition: str
    subject: str
    status: SendStatus
    reason: str
    provider: str
    created: dt.datetime
    scheduled: dt.datetime | None
    started: dt.datetime | None
    finished: dt.datetime | None
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def delivery_rate(self) -> float | None:
        """Of the messages handed to the provider and settled, the share it accepted; None before any."""
        settled = sum(self.counts.get(status, 0) for status in (D.SENT, D.FAILED, D.UNCERTAIN))
        return self.counts.get(D.SENT, 0) / settled if settled else None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "edition": self.edition, "subject": self.subject, "status": self.status.value,
                "reason": self.reason, "provider": self.provider, "created": _iso(self.created),
                "scheduled": _iso(self.scheduled), "started": _iso(self.started), "finished": _iso(self.finished),
                "counts": self.counts, "audience": self.total, "delivery_rate": self.delivery_rate}


@dataclass(frozen=True, kw_only=True)
class SendDetail:
    """One send as the console shows it: the line, its lease, its check report and its failures."""

    line: SendRow
    runner: str | None
    lease_until: dt.datetime | None
    override_reason: str | None
    check_report: dict[str, Any] | None
    timezone: str | None

    def lease_live(self, now: dt.datetime) -> bool:
        return bool(self.runner and self.lease_until and self.lease_until > now)

    def reckoning(self) -> list[tuple[str, int]]:
        """Every status with its count, in ``RECKONING`` order then any other, so that they add up."""
        counts = self.line.counts
        known = [(status.value, counts.get(status, 0)) for status in RECKONING]
        return known + sorted((status, count) for status, count in counts.items() if status not in RECKONING)


@dataclass(frozen=True, kw_only=True)
class Failures:
    """What went wrong in a send: the rows ``retry`` would queue again, and failed and uncertain rows by reason."""

    transient: int
    reasons: tuple[tuple[str, str, int], ...]  # (status, reason, count), the 20 commonest


@dataclass(frozen=True, kw_only=True)
class Recipient:
    """One delivery row of a send."""

    id: int
    subscriber_id: int
    email: str
    status: str
    attempts: int
    provider_message_id: str | None
    error_class: str | None
    error_text: str | None
    queued: dt.datetime
    updated: dt.datetime
    sent: dt.datetime | None
    event: str | None
    event_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "subscriber_id": self.subscriber_id, "email": self.email, "status": self.status,
                "attempts": self.attempts, "provider_message_id": self.provider_message_id,
                "error_class": self.error_class, "error_text": self.error_text, "queued": _iso(self.queued),
                "updated": _iso(self.updated), "sent": _iso(self.sent), "event": self.event,
                "event_at": _iso(self.event_at)}


@dataclass(frozen=True, kw_only=True)
class RecipientPage:
    """A page of recipients and the cursor of the next one (None on the last)."""

    rows: tuple[Recipient, ...]
    next_after: int | None


@dataclass(frozen=True, kw_only=True)
class Filter:
    """What the recipient table shows: a status, the start of an address, or both."""

    status: str | None = None
    search: str | None = None

    @classmethod
    def of(cls, status: str | None, search: str | None) -> Filter:
        """A filter from query parameters; BadQuery for an unknown status or an over-long search."""
        status = (status or "").strip() or None
        search = (search or "").strip().lower() or None
        if status is not None and status not in tuple(DeliveryStatus):
            raise BadQuery(f"unknown status {status!r}: choose one of {', '.join(DeliveryStatus)}")
        if search is not None and len(search) > SEARCH_MAX:
            raise BadQuery(f"a search is at most {SEARCH_MAX} characters (the start of an address)")
        return cls(status=status, search=search)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# ---------------------------------------------------------------- sends


def _send_query() -> Select[Any]:
    return (select(sends, editions.c.name.label("edition"), editions.c.subject)
            .join(editions, editions.c.id == sends.c.edition_id))


def _line(row: Any, counts: dict[str, int]) -> SendRow:
    return SendRow(id=row.id, edition=row.edition, subject=row.subject, status=SendStatus(row.status),
                   reason=row.status_reason or "", provider=row.provider, created=row.created_at,
                   scheduled=row.scheduled_at, started=row.started_at, finished=row.finished_at, counts=counts)


def _counts(connection: Connection, send_id: int) -> dict[str, int]:
    return {status: int(count) for status, count in connection.execute(
        select(deliveries.c.status, func.count()).where(deliveries.c.send_id == send_id)
        .group_by(deliveries.c.status))}


def send_rows(store: Store) -> list[SendRow]:
    """Every send, newest first, with its rows counted by status (from the ``(send_id, status)`` index)."""
    with store.read() as connection:
        rows = connection.execute(_send_query().order_by(sends.c.id.desc())).all()
        counts: dict[int, dict[str, int]] = {}
        for send_id, status, count in connection.execute(
                select(deliveries.c.send_id, deliveries.c.status, func.count())
                .group_by(deliveries.c.send_id, deliveries.c.status)):
            counts.setdefault(send_id, {})[status] = int(count)
    return [_line(row, counts.get(row.id, {})) for row in rows]


def send_detail(store: Store, send_id: int, *,
                kept: dict[tuple[Any, ...], dict[str, int]] | None = None) -> SendDetail | None:
    """One send with its counts, lease and check report; None if there is no such send. With ``kept``, the
    counts of a settled send (``SETTLED_SENDS``) are kept there and read once."""
    with store.read() as connection:
        row = connection.execute(_send_query().where(sends.c.id == send_id)).first()
        if row is None:
            return None
        # A settled send's rows stay as they are but for one move: a provider's report on an uncertain row
        # (``observe``, uncertain -> sent) leaves the send's status alone, so the key counts those rows too
        # (a range of the ``(send_id, status)`` index, as few as the uncertain rows).
        uncertain = connection.scalar(select(func.count()).select_from(deliveries).where(
            deliveries.c.send_id == send_id, deliveries.c.status == D.UNCERTAIN)) if kept is not None else 0
        key = (send_id, row.status, row.status_reason, row.finished_at, uncertain)
        counts = kept.get(key) if kept is not None and row.status in SETTLED_SENDS else None
        if counts is None:
            counts = _counts(connection, send_id)
            if kept is not None and row.status in SETTLED_SENDS:
                kept[key] = counts
    return SendDetail(line=_line(row, counts), runner=row.runner, lease_until=row.lease_until,
                      override_reason=row.override_reason, check_report=row.check_report, timezone=row.timezone)


def exists(store: Store, send_id: int) -> bool:
    with store.read() as connection:
        return connection.scalar(select(sends.c.id).where(sends.c.id == send_id)) is not None


def failures(store: Store, send_id: int) -> Failures:
    """The send's transient failures, and its failed and uncertain rows grouped by reason, from one reading of
    those rows (the console keeps the answer while the send's counts stay the same)."""
    with store.read() as connection:
        groups = connection.execute(
            select(deliveries.c.status, deliveries.c.error_class, deliveries.c.error_text, func.count().label("n"))
            .where(deliveries.c.send_id == send_id, deliveries.c.status.in_([D.FAILED, D.UNCERTAIN]))
            .group_by(deliveries.c.status, deliveries.c.error_class, deliveries.c.error_text)).all()
    transient = sum(int(g.n) for g in groups if g.status == D.FAILED and g.error_class == "transient")
    commonest = sorted(groups, key=lambda g: (-int(g.n), g.status, g.error_class or "", g.error_text or ""))[:20]
    return Failures(transient=transient, reasons=tuple(
        (g.status, ": ".join(p for p in (g.error_class, g.error_text) if p) or "no reason given", int(g.n))
        for g in commonest))


def edition_html(store: Store, send_id: int) -> str | None:
    """The email's HTML exactly as the send sends it; None if there is no such send."""
    with store.read() as connection:
        return connection.scalar(select(editions.c.email_html).join(sends, sends.c.edition_id == editions.c.id)
                                 .where(sends.c.id == send_id))


# ---------------------------------------------------------------- the timeline

TIMELINE_BARS = 120  # at most; a long send is drawn in wider buckets of minutes


def _settled_range(connection: Connection, send_id: int) -> tuple[dt.datetime, dt.datetime] | None:
    """The first and last time a row of the send was accepted or refused; each end one index lookup."""
    ends: list[dt.datetime] = []
    for status in (D.SENT, D.FAILED):
        where = (deliveries.c.send_id == send_id, deliveries.c.status == status)
        for order in (deliveries.c.updated_at.asc(), deliveries.c.updated_at.desc()):
            found = connection.scalar(select(deliveries.c.updated_at).where(*where).order_by(order).limit(1))
            if found is not None:
                ends.append(found)
    return (min(ends), max(ends)) if ends else None


def timeline(store: Store, send_id: int) -> tuple[int, list[tuple[dt.datetime, int, int]]]:
    """(minutes per bucket, [(bucket start, accepted, failed)]) over the time the send's rows were settled
    (``updated_at``: when the provider accepted or refused them), at most ``TIMELINE_BARS`` buckets, empty
    ones included. Each bucket is a range count on ``(send_id, status, updated_at)``, all in one statement:
    the index is read once, with no grouping of a million rows by a computed minute."""
    with store.read() as connection:
        span = _settled_range(connection, send_id)
        if span is None:
            return 1, []
        first = span[0].replace(second=0, microsecond=0)
        minutes = int((span[1] - first).total_seconds() // 60) + 1
        width = max(1, -(-minutes // TIMELINE_BARS))
        starts = [first + dt.timedelta(minutes=width * index) for index in range(-(-minutes // width) + 1)]
        parts = [select(literal(index).label("bucket"), literal(status.value).label("status"),
                        func.count().label("n"))
                 .where(deliveries.c.send_id == send_id, deliveries.c.status == status,
                        deliveries.c.updated_at >= starts[index], deliveries.c.updated_at < starts[index + 1])
                 for status in (D.SENT, D.FAILED) for index in range(len(starts) - 1)]
        counts = {(row.bucket, row.status): int(row.n) for row in connection.execute(union_all(*parts))}
    return width, [(starts[index], counts.get((index, D.SENT.value), 0), counts.get((index, D.FAILED.value), 0))
                   for index in range(len(starts) - 1)]


# ---------------------------------------------------------------- recipients


def _upper_bound(prefix: str) -> str:
    """The least text greater than every text that starts with ``prefix`` (binary order, as the index keeps)."""
    last = ord(prefix[-1])
    return prefix + "\U0010ffff" if last == 0x10FFFF else prefix[:-1] + chr(last + 1)


def _page_query(connection: Connection, send_id: int, chosen: Filter, after: int | None) -> Select[Any]:
    conditions: list[ColumnElement[bool]] = [deliveries.c.send_id == send_id]
    if chosen.status:
        conditions.append(deliveries.c.status == chosen.status)
    if not chosen.search:
        if after is not None:
            conditions.append(deliveries.c.id > after)
        return select(deliveries).where(*conditions).order_by(deliveries.c.id)
    address = func.lower(deliveries.c.email)
    start = chosen.search
    if after is not None:
        cursor = connection.scalar(select(address).where(deliveries.c.id == after, deliveries.c.send_id == send_id))
        if cursor is None or not cursor.startswith(chosen.search):
            raise BadQuery("this page's cursor does not belong to the search; start again from the first page")
        start = cursor
        conditions.append(or_(address > cursor, and_(address == cursor, deliveries.c.id > after)))
    conditions += [address >= start, address < _upper_bound(chosen.search)]
    return select(deliveries).where(*conditions).order_by(address, deliveries.c.id)


def _recipient(row: Any) -> Recipient:
    return Recipient(id=row.id, subscriber_id=row.subscriber_id, email=row.email, status=row.status,
                     attempts=row.attempts, provider_message_id=row.provider_message_id,
                     error_class=row.error_class, error_text=row.error_text, queued=row.queued_at,
                     updated=row.updated_at, sent=row.sent_at, event=row.event, event_at=row.event_at)


def recipients(store: Store, send_id: int, chosen: Filter, *, after: int | None = None,
               limit: int = PAGE_SIZE) -> RecipientPage:
    """The page of the send's recipients that ``chosen`` selects, after the delivery ``after``: in queue
    order, or in address order for a search. One row more than the page is read, to know if another follows."""
    with store.read() as connection:
        found = connection.execute(_page_query(connection, send_id, chosen, after).limit(limit + 1)).all()
    rows = tuple(_recipient(row) for row in found[:limit])
    return RecipientPage(rows=rows, next_after=rows[-1].id if len(found) > limit and rows else None)


def every_recipient(store: Store, send_id: int, chosen: Filter, *, chunk: int = 2000) -> Iterator[Recipient]:
    """Every recipient ``chosen`` selects, in the table's order, read a page at a time: each page its own short
    read, so a long export holds no transaction open and never has the whole send in memory."""
    after: int | None = None
    while True:
        page = recipients(store, send_id, chosen, after=after, limit=chunk)
        yield from page.rows
        if page.next_after is None:
            return
        after = page.next_after
