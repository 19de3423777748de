"""Local times an editor types, read in the right time zone, and their traps.

"2026-12-01 09:00" means 09:00 where the publication is (``timezone``), or in
``--tz``. A time that does not exist (the hour skipped when clocks spring
forward) and one that happens twice (the hour repeated when they fall back,
unless ``fold`` says which) are errors, never silently shifted: a newsletter
sent an hour early or late is the bug users of other tools report.

A send time must lie between 2000 and ten years from now (``out_of_reach``):
further ahead is a typo (``9999-12-31``), and near the years 1 and 9999 a
conversion to UTC or to another zone overflows Python's datetime.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.errors import ScheduleError

FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")
YEARS_AHEAD = 10  # the furthest a send time may be; beyond it is a typo
EARLIEST = dt.datetime(2000, 1, 1)  # long past, yet far enough from year 1 for any offset or zone


def out_of_reach(moment: dt.datetime, *, now: dt.datetime | None = None) -> str | None:
    """Why ``moment`` (aware or not) cannot be a send time, or None when it can.

    The wall time is compared, so that the answer never depends on a conversion that
    could itself overflow; an offset moves it by less than a day.
    """
    wall = moment.replace(tzinfo=None)
    latest = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None) + dt.timedelta(days=round(365.25 * YEARS_AHEAD))
    if EARLIEST <= wall <= latest:
        return None
    when = f"more than {YEARS_AHEAD} years ahead (a typo?)" if wall > latest else f"before {EARLIEST.year}"
    return (f"{wall.isoformat(' ', 'minutes')} is {when}: a send time must be between {EARLIEST.year} and "
            f"{YEARS_AHEAD} years from now")


def _within_reach(moment: dt.datetime) -> dt.datetime:
    reason = out_of_reach(moment)
    if reason is not None:
        raise ScheduleError(reason)
    return moment


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
        return _within_reach(moment)
    return localise(moment, tz, fold=fold)


def localise(wall: dt.datetime, tz: ZoneInfo, *, fold: int | None = None) -> dt.datetime:
    """``wall`` as a local time in ``tz``; an error if it does not exist, happens twice or is out of reach."""
    _within_reach(wall)
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
