"""The delivery log staff read: a line per send, and a line per recipient of a send."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from sqlalchemy import func, or_, select

from pipeline.csvcells import DictWriter
from pipeline.errors import SendError
from pipeline.store import Store
from pipeline.store.tables import deliveries, editions, sends

STATUS_ORDER = ("queued", "sending", "sent", "failed", "uncertain", "suppressed", "skipped", "cancelled")


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
    """The recipients of a send, in the order they were queued; streamed, never all in memory."""
    with store.begin() as connection:
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
    with store.read() as connection:
        for row in connection.execution_options(yield_per=1000).execute(query):
            error = " ".join(part for part in (row.error_class, row.error_text) if part) or None
            yield DeliveryLine(email=row.email, status=row.status, attempts=row.attempts,
                               provider_message_id=row.provider_message_id, error=error, queued=row.queued_at,
                               updated=row.updated_at, sent=row.sent_at)


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def format_counts(counts: dict[str, int]) -> str:
    ordered = sorted(counts, key=lambda status: STATUS_ORDER.index(status) if status in STATUS_ORDER else 99)
    return ", ".join(f"{counts[status]} {status}" for status in ordered) or "no recipients"


def send_table(lines: list[SendLine]) -> str:
    if not lines:
        return "no sends yet"
    header = f"{'send':>4}  {'edition':<34} {'status':<10} {'started':<20} {'finished':<20} deliveries"
    rows = [f"{line.id:>4}  {line.edition[:34]:<34} {line.status:<10} {_when(line.started):<20} "
            f"{_when(line.finished):<20} {format_counts(line.counts)}" for line in lines]
    return "\n".join([header, *rows])


def _plain(line: DeliveryLine) -> dict[str, object]:
    data = asdict(line)
    for key in ("queued", "updated", "sent"):
        data[key] = data[key].isoformat() if data[key] else None
    return data


def write_deliveries(lines: Iterable[DeliveryLine], fmt: str, out: io.TextIOBase) -> int:
    """Write the delivery lines as a table, a JSON array or CSV, streaming; return how many."""
    count = 0
    writer = None
    if fmt == "json":
        out.write("[")
    if fmt == "table":
        out.write(f"{'email':<36} {'status':<10} {'tries':>5}  {'provider id':<36} {'updated':<20} error\n")
    for line in lines:
        count += 1
        if fmt == "json":
            out.write(("," if count > 1 else "") + "\n  " + json.dumps(_plain(line), ensure_ascii=False))
        elif fmt == "csv":
            if writer is None:
                writer = DictWriter(out, fieldnames=list(_plain(line)))  # cells safe for a spreadsheet
                writer.writeheader()
            writer.writerow(_plain(line))
        else:
            out.write(f"{line.email[:36]:<36} {line.status:<10} {line.attempts:>5}  "
                      f"{(line.provider_message_id or '-')[:36]:<36} {_when(line.updated):<20} {line.error or ''}\n")
    if fmt == "json":
        out.write("\n]\n" if count else "]\n")
    return count
