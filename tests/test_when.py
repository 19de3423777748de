"""Local times across time zones and daylight-saving transitions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.errors import ScheduleError
from pipeline.when import daily, describe, out_of_reach, parse_when, zone

from .conftest import SAMPLE

BERLIN, NEW_YORK = zone("Europe/Berlin"), zone("America/New_York")


def test_a_time_without_offset_is_read_in_the_zone() -> None:
    moment = parse_when("2026-12-01 09:00", BERLIN)
    assert moment.astimezone(dt.UTC) == dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    assert describe(moment, BERLIN) == "2026-12-01 09:00 CET (Europe/Berlin) = 2026-12-01 08:00 UTC"


def test_a_time_with_an_offset_keeps_it() -> None:
    assert parse_when("2026-12-01T09:00+05:30", BERLIN).utcoffset() == dt.timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(("text", "tz"), [("2026-03-29 02:30", BERLIN), ("2026-03-08 02:30", NEW_YORK)])
def test_the_skipped_hour_does_not_exist(text: str, tz) -> None:
    with pytest.raises(ScheduleError, match="does not exist .*spring forward"):
        parse_when(text, tz)


@pytest.mark.parametrize(("text", "tz", "first", "second"), [
    ("2026-10-25 02:30", BERLIN, dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC),
     dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC)),
    ("2026-11-01 01:30", NEW_YORK, dt.datetime(2026, 11, 1, 5, 30, tzinfo=dt.UTC),
     dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.UTC)),
])
def test_the_repeated_hour_needs_a_fold(text: str, tz, first, second) -> None:
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
def test_a_daily_time_keeps_its_local_hour_across_transitions(tz, start, utc_hours) -> None:
    moments = daily(start, dt.time(9, 0), tz, 4)
    assert [moment.astimezone(tz).hour for moment in moments] == [9, 9, 9, 9]
    assert [moment.astimezone(dt.UTC).hour for moment in moments] == utc_hours


@pytest.mark.parametrize("text", ["9999-12-31 23:59", "9999-12-31 23:59+05:00", "9999-12-31T23:59:59-05:00",
                                  "0001-01-01 00:00", "0001-01-01 00:00+05:00", "0001-01-01 00:00-05:00"])
@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, zone("Pacific/Kiritimati"), zone("Pacific/Pago_Pago")])
def test_a_time_out_of_reach_is_an_error_not_an_overflow(text: str, tz) -> None:
    with pytest.raises(ScheduleError, match=r"(ahead \(a typo\?\)|before 2000): a send time must be between 2000 "
                                            r"and 10 years from now"):
        parse_when(text, tz)


def test_reach_is_ten_years_from_now() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert out_of_reach(dt.datetime(2035, 12, 31, 12, 0), now=now) is None
    assert out_of_reach(dt.datetime(2000, 1, 1, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=14))), now=now) is None
    assert out_of_reach(dt.datetime(2036, 1, 3, 12, 0), now=now) == (
        "2036-01-03 12:00 is more than 10 years ahead (a typo?): a send time must be between 2000 and 10 years "
        "from now")
    assert "1999-12-31 23:59 is before 2000" in str(out_of_reach(dt.datetime(1999, 12, 31, 23, 59), now=now))


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, zone("Pacific/Kiritimati"), zone("Pacific/Pago_Pago")])
def test_the_earliest_and_latest_times_convert_and_describe(tz) -> None:
    latest = (dt.datetime.now() + dt.timedelta(days=3650)).strftime("%Y-%m-%d %H:%M")
    for text in ("2000-01-01 00:00", "2000-01-01 00:00+14:00", latest, f"{latest}-12:00"):
        assert describe(parse_when(text, tz), tz).endswith(" UTC")


@pytest.mark.parametrize("at", ["9999-12-31 23:59", "9999-12-31 23:59+05:00", "9999-12-31 23:59-05:00",
                                "0001-01-01 00:00", "0001-01-01 00:00+05:00"])
def test_schedule_at_an_unreachable_time_is_one_line_exit_2(project: Path, run_cli, at: str) -> None:
    code, out, err = run_cli("schedule", SAMPLE, "--offline", "--at", at)
    assert code == 2, err
    assert err.startswith("newsletter: error: ") and err.count("\n") == 1, err
    assert "a send time must be between 2000 and 10 years from now" in err
    assert "scheduled" not in out
