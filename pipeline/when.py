"""Local times an editor types, read in the right time zone, and their traps.

"2026-12-01 09:00" means 09:00 where the publication is (``timezone``), or in
``--tz``. A time that does not exist (the hour skipped when clocks spring
forward) and one that happens twice (the hour repeated when they fall back,
unless ``fold`` says which) are errors, never silently shifted: a newsletter
sent an hour early or late is the bug users of other tools report.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.errors import ScheduleError

FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (use a name such as Europe/Berlin)") from None


def parse_when(text: str, tz: ZoneInfo, *, fold: int | None = None) -> dt.datetime:
    """An aware datetime for ``text``: with its own offset as given, else local time in ``tz``."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(f"cannot read the time {text!r}: write it as YYYY-MM-DD HH:MM") from None
    if moment.tzinfo is not None:
        return moment
    return localise(moment, tz, fold=fold)


def localise(wall: dt.datetime, tz: ZoneInfo, *, fold: int | None = None) -> dt.datetime:
    """``wall`` as a local time in ``tz``; an error if it does not exist or happens twice."""
    early, late = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    if _round_trip(early) != wall.replace(tzinfo=None) and _round_trip(late) != wall.replace(tzinfo=None):
        raise ScheduleError(f"{wall:%Y-%m-%d %H:%M} does not exist in {tz.key}: the clocks skip that hour "
                            "(spring forward); choose another time")
    if early.utcoffset() != late.utcoffset():
        if fold is None:
            raise ScheduleError(
                f"{wall:%Y-%m-%d %H:%M} happens twice in {tz.key} (the clocks fall back): add --fold 0 for "
                f"the first ({early.tzname()}, UTC{_offset(early)}) or --fold 1 for the second "
                f"({late.tzname()}, UTC{_offset(late)})")
        return late if fold else early
    return early


def _round_trip(local: dt.datetime) -> dt.datetime:
    return local.astimezone(dt.UTC).astimezone(local.tzinfo).replace(tzinfo=None)


def _offset(moment: dt.datetime) -> str:
    offset = moment.utcoffset() or dt.timedelta()
    sign = "-" if offset < dt.timedelta() else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def describe(moment: dt.datetime, tz: ZoneInfo) -> str:
    """'2026-12-01 09:00 CET (Europe/Berlin) = 2026-12-01 08:00 UTC'."""
    local = moment.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({tz.key}) = {moment.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def daily(first_day: dt.date, time_of_day: dt.time, tz: ZoneInfo, days: int) -> list[dt.datetime]:
    """The same local time on consecutive days, each day's offset its own (DST changes included)."""
    return [localise(dt.datetime.combine(first_day + dt.timedelta(days=n), time_of_day), tz, fold=0)
            for n in range(days)]
