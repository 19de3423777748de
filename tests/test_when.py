"""Local times across time zones and daylight-saving transitions."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.errors import ScheduleError
from pipeline.when import daily, describe, parse_when, zone

BERLIN, NEW_YORK = zone("Europe/Berlin"), zone("America/New_York")


def test_a_time_without_offset_is_read_in_the_zone() -> None:
    moment = parse_when("2026-12-01 09:00", BERLIN)
    assert moment.astimezone(dt.UTC) == dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    assert describe(moment, BERLIN) == "2026-12-01 09:00 CET (Europe/Berlin) = 2026-12-01 08:00 UTC"


def test_a_time_with_an_offset_keeps_it() -> None:
    assert parse_when("2026-12-01T09:00+05:30", BERLIN).utcoffset() == dt.timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(("text", "tz"), [("2026-03-29 02:30", BERLIN), ("2026-03-08 02:30", NEW_YORK)])
def test_the_skipped_hour_does_not_exist(text: str, tz) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleError, match="does not exist .*spring forward"):
        parse_when(text, tz)


@pytest.mark.parametrize(("text", "tz", "first", "second"), [
    ("2026-10-25 02:30", BERLIN, dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC),
     dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC)),
    ("2026-11-01 01:30", NEW_YORK, dt.datetime(2026, 11, 1, 5, 30, tzinfo=dt.UTC),
     dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.UTC)),
])
def test_the_repeated_hour_needs_a_fold(text: str, tz, first, second) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleError, match="happens twice .* --fold 0 .* --fold 1"):
        parse_when(text, tz)
    assert parse_when(text, tz, fold=0).astimezone(dt.UTC) == first
    assert parse_when(text, tz, fold=1).astimezone(dt.UTC) == second


def test_unreadable_time_and_unknown_zone() -> None:
    with pytest.raises(ScheduleError, match="cannot read the time 'tomorrow'"):
        parse_when("tomorrow", BERLIN)
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


@pytest.mark.parametrize(("tz", "start", "utc_hours"), [
    (BERLIN, dt.date(2026, 3, 27), [8, 8, 7, 7]),  # spring forward on 29 March
    (BERLIN, dt.date(2026, 10, 23), [7, 7, 8, 8]),  # fall back on 25 October
    (NEW_YORK, dt.date(2026, 3, 6), [14, 14, 13, 13]),  # spring forward on 8 March
    (NEW_YORK, dt.date(2026, 10, 30), [13, 13, 14, 14]),  # fall back on 1 November
])
def test_a_daily_time_keeps_its_local_hour_across_transitions(tz, start, utc_hours) -> None:  # type: ignore[no-untyped-def]
    moments = daily(start, dt.time(9, 0), tz, 4)
    assert [moment.astimezone(tz).hour for moment in moments] == [9, 9, 9, 9]
    assert [moment.astimezone(dt.UTC).hour for moment in moments] == utc_hours
