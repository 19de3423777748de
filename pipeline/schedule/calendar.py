"""The calendar: schedule a checked build for a time, move it, list what has or had a time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline import send
from pipeline.build import Build
from pipeline.checks import Report
from pipeline.config import Settings
from pipeline.errors import NewsletterError, ScheduleError
from pipeline.prepare import prepare
from pipeline.store import Store, utcnow
from pipeline.store import calendar as db
from pipeline.store.sends import reschedule
from pipeline.store.states import SendStatus
from pipeline.when import describe, zone


@dataclass(frozen=True, kw_only=True)
class ScheduledLine:
    """A send on the calendar, for ``schedule list``."""

    id: int
    edition: str
    status: str
    at: dt.datetime | None
    timezone: str
    reason: str
    changed: str  # "no", "yes", or why the draft could not be compared


def require_future(at: dt.datetime, tz: ZoneInfo) -> None:
    if at <= utcnow():
        raise ScheduleError(f"{describe(at, tz)} is in the past")


def schedule_build(store: Store, settings: Settings, build: Build, at: dt.datetime, *, timezone: str,
                   override_reason: str | None = None, report: Report | None = None) -> int:
    """Schedule an (already checked) build for ``at``; its draft is rebuilt and re-checked then."""
    require_future(at, zone(timezone))
    return send.schedule_send(store, settings, build.edition, built_path=str(build.folder), at=at,
                              timezone=timezone, override_reason=override_reason, report=report)


def move(store: Store, send_id: int, at: dt.datetime) -> None:
    """Give a scheduled, held or missed send another time."""
    if at <= utcnow():
        raise ScheduleError("the new time is in the past")
    reschedule(store, send_id, at)


def calendar(store: Store, settings: Settings) -> list[ScheduledLine]:
    """Every send that has or had a time, soonest first, with whether its draft changed since."""
    return [ScheduledLine(id=entry.id, edition=entry.edition, status=entry.status, at=entry.at,
                          timezone=entry.timezone or settings.publication.timezone, reason=entry.reason,
                          changed=_changed(settings, entry.draft_path, entry.content_hash)
                          if entry.status == SendStatus.SCHEDULED else "-")
            for entry in db.entries(store)]


def _changed(settings: Settings, draft_path: str | None, content_hash: str) -> str:
    if not draft_path:
        return "-"
    try:
        return "yes" if prepare(Path(draft_path), settings).content_hash != content_hash else "no"
    except NewsletterError as exc:
        return f"draft broken: {exc.reason}"
