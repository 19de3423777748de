"""Named operations for the scheduler and the calendar: what is due, running, or was scheduled."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from pipeline.store import Store
from pipeline.store.parts import WORKERS
from pipeline.store.states import SendStatus
from pipeline.store.tables import editions, sends

LIVE = (SendStatus.SCHEDULED, SendStatus.SENDING)


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A send that has or had a time: a line of the calendar."""

    id: int
    status: SendStatus
    at: dt.datetime | None
    timezone: str | None
    reason: str
    draft_path: str | None
    edition: str
    content_hash: str


@dataclass(frozen=True, kw_only=True)
class Live:
    """A send the scheduler looks after: due to fire, or being sent."""

    id: int
    status: SendStatus
    at: dt.datetime | None
    runner: str | None
    lease_until: dt.datetime | None
    queued: bool

    def lease_expired(self, now: dt.datetime) -> bool:
        """Whether its sender's lease ran out; never for a send with the workers, whose parts have leases."""
        if self.runner == WORKERS:
            return False
        return self.runner is None or self.lease_until is None or self.lease_until <= now


def _entry(row) -> Entry:
    return Entry(id=row.id, status=SendStatus(row.status), at=row.scheduled_at, timezone=row.timezone,
                 reason=row.status_reason or "", draft_path=row.draft_path, edition=row.name,
                 content_hash=row.content_hash)


_ENTRY = (sends.c.id, sends.c.status, sends.c.scheduled_at, sends.c.timezone, sends.c.status_reason,
          sends.c.draft_path, editions.c.name, editions.c.content_hash)


def entries(store: Store) -> list[Entry]:
    """Every send that has or had a time, soonest first."""
    with store.read() as connection:
        rows = connection.execute(select(*_ENTRY).join(editions, editions.c.id == sends.c.edition_id)
                                  .where(sends.c.scheduled_at.is_not(None))
                                  .order_by(sends.c.scheduled_at, sends.c.id)).all()
    return [_entry(row) for row in rows]


def latest_for_draft(store: Store, folder: Path) -> Entry | None:
    """The newest send made from the draft in ``folder``."""
    with store.read() as connection:
        row = connection.execute(select(*_ENTRY).join(editions, editions.c.id == sends.c.edition_id)
                                 .where(sends.c.draft_path == str(folder.resolve()))
                                 .order_by(sends.c.id.desc()).limit(1)).first()
    return None if row is None else _entry(row)


def live(store: Store) -> list[Live]:
    """Sends scheduled or being sent."""
    with store.read() as connection:
        rows = connection.execute(select(sends.c.id, sends.c.status, sends.c.scheduled_at, sends.c.runner,
                                         sends.c.lease_until, sends.c.queued_at)
                                  .where(sends.c.status.in_(LIVE)).order_by(sends.c.id)).all()
    return [Live(id=row.id, status=SendStatus(row.status), at=row.scheduled_at, runner=row.runner,
                 lease_until=row.lease_until, queued=row.queued_at is not None) for row in rows]


def busy(store: Store) -> bool:
    """Whether anything is scheduled or being sent."""
    with store.read() as connection:
        return connection.scalar(select(sends.c.id).where(sends.c.status.in_(LIVE)).limit(1)) is not None
