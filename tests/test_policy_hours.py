"""N13-N15: the calling-hour calendar, holidays and retry_after, Europe/Amsterdam and DST.

Pure: no database, no network, no clock.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from proxy.policy import hours
from proxy.policy.hours import (
    add_months,
    check,
    classify,
    is_allowed,
    local_date,
    next_allowed,
)
from proxy.settings import CallingHours, TimeRange

AMS = ZoneInfo("Europe/Amsterdam")
UTC = dt.UTC
CTM = CallingHours()


def at(y: int, mo: int, d: int, h: int = 12, mi: int = 0, s: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=AMS)


# -- the holiday calendar ----------------------------------------------------------------------


def test_n13_kings_day_moves_to_saturday_when_27_april_is_a_sunday() -> None:
    # 2025: 27 April is a Sunday, so King's Day is Saturday 26 April.
    assert dt.date(2025, 4, 27).weekday() == 6
    saturday = classify(dt.date(2025, 4, 26), CTM)
    assert (saturday.kind, saturday.holiday_en, saturday.holiday_nl) == (
        "holiday", "King's Day", "Koningsdag")
    assert classify(dt.date(2025, 4, 27), CTM).kind == "sunday"
    assert classify(dt.date(2026, 4, 27), CTM).kind == "holiday"  # a Monday in 2026
    assert classify(dt.date(2026, 4, 25), CTM).kind == "saturday"


@pytest.mark.parametrize(("day", "kind"), [
    pytest.param(dt.date(2026, 1, 1), "holiday", id="N13-new-years-day"),
    pytest.param(dt.date(2026, 4, 6), "holiday", id="N13-easter-monday"),
    pytest.param(dt.date(2026, 5, 14), "holiday", id="N13-ascension-day"),
    pytest.param(dt.date(2026, 5, 25), "holiday", id="N13-whit-monday"),
    pytest.param(dt.date(2026, 12, 25), "holiday", id="N13-christmas"),
    pytest.param(dt.date(2026, 12, 26), "holiday", id="N13-boxing-day-on-saturday"),
    pytest.param(dt.date(2025, 5, 5), "holiday", id="N13-liberation-day-lustrum-2025"),
    pytest.param(dt.date(2026, 5, 5), "holiday", id="N13-liberation-day-2026-not-a-lustrum"),
    pytest.param(dt.date(2026, 3, 10), "weekday", id="N13-ordinary-tuesday"),
    pytest.param(dt.date(2026, 3, 14), "saturday", id="N13-ordinary-saturday"),
    pytest.param(dt.date(2026, 3, 15), "sunday", id="N13-ordinary-sunday"),
    pytest.param(dt.date(2026, 5, 4), "short_day", id="N13-4-may-working-day"),
    pytest.param(dt.date(2025, 12, 5), "short_day", id="N13-5-december-friday"),
    pytest.param(dt.date(2026, 12, 5), "saturday", id="N13-5-december-saturday"),
    pytest.param(dt.date(2025, 12, 24), "short_day", id="N13-24-december-wednesday"),
])
def test_n13_day_kinds(day: dt.date, kind: str) -> None:
    assert classify(day, CTM).kind == kind


@pytest.mark.parametrize("year", [
    pytest.param(2024, id="N13-5-may-2024-sunday"),
    pytest.param(2025, id="N13-5-may-2025-lustrum-monday"),
    pytest.param(2026, id="N13-5-may-2026-tuesday"),
    pytest.param(2027, id="N13-5-may-2027-wednesday"),
    pytest.param(2028, id="N13-5-may-2028-friday"),
    pytest.param(2029, id="N13-5-may-2029-saturday"),
    pytest.param(2030, id="N13-5-may-2030-lustrum-sunday"),
    pytest.param(2035, id="N13-5-may-2035-saturday"),
])
def test_n13_liberation_day_is_a_holiday_every_year(year: int) -> None:
    # Algemene termijnenwet art. 3 names 5 May every year, not only in lustrum years.
    day = classify(dt.date(year, 5, 5), CTM)
    assert (day.kind, day.closed) == ("holiday", True)
    assert (day.holiday_en, day.holiday_nl) == ("Liberation Day", "Bevrijdingsdag")
    assert not is_allowed(at(year, 5, 5, 12), CTM)


@pytest.mark.parametrize(("year", "expected"), [
    pytest.param(2026, {
        (1, 1): "New Year's Day", (4, 3): "Good Friday", (4, 5): "Easter Sunday",
        (4, 6): "Easter Monday", (4, 27): "King's Day", (5, 5): "Liberation Day",
        (5, 14): "Ascension Day", (5, 24): "Pentecost", (5, 25): "Pentecost Monday",
        (12, 25): "Christmas Day", (12, 26): "Second Day of Christmas",
    }, id="N13-calendar-2026"),
    pytest.param(2027, {
        (1, 1): "New Year's Day", (3, 26): "Good Friday", (3, 28): "Easter Sunday",
        (3, 29): "Easter Monday", (4, 27): "King's Day", (5, 5): "Liberation Day",
        (5, 6): "Ascension Day", (5, 16): "Pentecost", (5, 17): "Pentecost Monday",
        (12, 25): "Christmas Day", (12, 26): "Second Day of Christmas",
    }, id="N13-calendar-2027"),
    pytest.param(2028, {
        (1, 1): "New Year's Day", (4, 14): "Good Friday", (4, 16): "Easter Sunday",
        (4, 17): "Easter Monday", (4, 27): "King's Day", (5, 5): "Liberation Day",
        (5, 25): "Ascension Day", (6, 4): "Pentecost", (6, 5): "Pentecost Monday",
        (12, 25): "Christmas Day", (12, 26): "Second Day of Christmas",
    }, id="N13-calendar-2028"),
    pytest.param(2031, {
        (1, 1): "New Year's Day", (4, 11): "Good Friday", (4, 13): "Easter Sunday",
        (4, 14): "Easter Monday", (4, 26): "King's Day", (5, 5): "Liberation Day",
        (5, 22): "Ascension Day", (6, 1): "Pentecost", (6, 2): "Pentecost Monday",
        (12, 25): "Christmas Day", (12, 26): "Second Day of Christmas",
    }, id="N13-calendar-2031-kings-day-on-saturday-26-april"),
])
def test_n13_closed_days_are_the_termijnenwet_list_and_good_friday(
    year: int, expected: dict[tuple[int, int], str],
) -> None:
    # Art. 3 Atw every year, Good Friday (conservative); Easter and Whit Sunday are Sundays.
    calendar = hours.public_holidays(year)
    assert {(d.month, d.day): names[0] for d, names in calendar.items()} == expected
    assert all(classify(d, CTM).closed for d in calendar)


def test_n13_holiday_calendar_is_cached_and_read_only() -> None:
    first = hours.public_holidays(2031)
    assert hours.public_holidays(2031) is first
    with pytest.raises(TypeError):
        first[dt.date(2031, 3, 3)] = ("x", "y")  # type: ignore[index]


def test_n13_closed_date_beats_short_day() -> None:
    # 4 May, Remembrance Day: configured as a commemoration day it is closed all day.
    settings = CallingHours(closed_dates=frozenset({dt.date(2026, 5, 4)}))
    day = classify(dt.date(2026, 5, 4), settings)
    assert (day.kind, day.closed) == ("closed_date", True)


def test_n13_closed_dates_follow_the_holiday_setting() -> None:
    settings = CallingHours(holiday=TimeRange(dt.time(10), dt.time(14)),
                            closed_dates=frozenset({dt.date(2026, 5, 4)}))
    assert classify(dt.date(2026, 5, 4), settings).window == TimeRange(dt.time(10), dt.time(14))


# -- the window boundaries ---------------------------------------------------------------------


@pytest.mark.parametrize(("moment", "allowed"), [
    pytest.param(at(2026, 3, 10, 8, 59, 59), False, id="N13-weekday-0859-denied"),
    pytest.param(at(2026, 3, 10, 9, 0), True, id="N13-weekday-0900-allowed"),
    pytest.param(at(2026, 3, 10, 21, 59, 59), True, id="N13-weekday-2159-allowed"),
    pytest.param(at(2026, 3, 10, 22, 0), False, id="N13-weekday-2200-denied"),
    pytest.param(at(2026, 3, 14, 9, 59), False, id="N13-saturday-0959-denied"),
    pytest.param(at(2026, 3, 14, 10, 0), True, id="N13-saturday-1000-allowed"),
    pytest.param(at(2026, 3, 14, 15, 59), True, id="N13-saturday-1559-allowed"),
    pytest.param(at(2026, 3, 14, 16, 0), False, id="N13-saturday-1600-denied"),
    pytest.param(at(2025, 12, 5, 18, 29), True, id="N13-5-december-1829-allowed"),
    pytest.param(at(2025, 12, 5, 18, 30), False, id="N13-5-december-1830-denied"),
    pytest.param(at(2025, 12, 24, 18, 29, 59), True, id="N13-24-december-1829-allowed"),
    pytest.param(at(2025, 12, 24, 18, 30), False, id="N13-24-december-1830-denied"),
    pytest.param(at(2026, 5, 4, 18, 30), False, id="N13-4-may-1830-denied"),
    pytest.param(at(2026, 12, 5, 15, 0), True, id="N13-5-december-saturday-normal-hours"),
    pytest.param(at(2026, 3, 15, 12, 0), False, id="N13-sunday-denied"),
    pytest.param(at(2025, 4, 26, 11, 0), False, id="N13-kings-day-saturday-denied"),
    pytest.param(at(2026, 4, 3, 11, 0), False, id="N13-good-friday-in-calendar-denied"),
])
def test_n13_window_is_half_open(moment: dt.datetime, allowed: bool) -> None:
    assert is_allowed(moment, CTM) is allowed
    assert (check(moment, CTM) is None) is allowed


def test_n13_utc_input_is_judged_in_amsterdam_time() -> None:
    # Winter (CET, +01:00): 08:00 UTC is 09:00 local. Summer (CEST, +02:00): 07:00 UTC is.
    assert is_allowed(dt.datetime(2026, 3, 27, 8, 0, tzinfo=UTC), CTM)
    assert not is_allowed(dt.datetime(2026, 3, 27, 7, 59, tzinfo=UTC), CTM)
    assert is_allowed(dt.datetime(2026, 3, 30, 7, 0, tzinfo=UTC), CTM)
    assert not is_allowed(dt.datetime(2026, 3, 30, 6, 59, tzinfo=UTC), CTM)
    assert not is_allowed(dt.datetime(2026, 3, 30, 20, 0, tzinfo=UTC), CTM)  # 22:00 CEST


def test_n13_closed_versus_outside() -> None:
    sunday = check(at(2026, 3, 15, 12), CTM)
    assert sunday is not None
    assert sunday.day.closed
    evening = check(at(2026, 3, 10, 22), CTM)
    assert evening is not None
    assert not evening.day.closed


def test_n13_open_holiday_setting_makes_holidays_open_days() -> None:
    settings = CallingHours(holiday=TimeRange(dt.time(10), dt.time(14)))
    assert is_allowed(at(2026, 4, 6, 11), settings)
    late = check(at(2026, 4, 6, 15), settings)
    assert late is not None
    assert not late.day.closed


def test_n13_short_day_end_before_opening_closes_the_day() -> None:
    settings = CallingHours(short_day_end=dt.time(8, 0))
    day = classify(dt.date(2025, 12, 5), settings)
    assert day.closed


# -- N15: retry_after --------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "retry"), [
    pytest.param(at(2026, 3, 10, 7, 30), at(2026, 3, 10, 9, 0), id="N15-before-opening-today"),
    pytest.param(at(2026, 3, 10, 22, 0), at(2026, 3, 11, 9, 0), id="N15-after-closing-tomorrow"),
    pytest.param(at(2026, 3, 13, 22, 30), at(2026, 3, 14, 10, 0), id="N15-friday-night-saturday"),
    pytest.param(at(2026, 3, 14, 16, 0), at(2026, 3, 16, 9, 0), id="N15-saturday-skips-sunday"),
    pytest.param(at(2026, 3, 15, 9, 0), at(2026, 3, 16, 9, 0), id="N15-sunday-to-monday"),
    pytest.param(at(2025, 12, 5, 18, 30), at(2025, 12, 6, 10, 0), id="N15-5-december-evening"),
    pytest.param(at(2025, 12, 24, 18, 30), at(2025, 12, 27, 10, 0),
                 id="N15-christmas-eve-skips-christmas"),
    pytest.param(at(2025, 4, 25, 22, 0), at(2025, 4, 28, 9, 0),
                 id="N15-kings-day-saturday-skipped"),
    pytest.param(at(2026, 4, 2, 22, 0), at(2026, 4, 4, 10, 0), id="N15-good-friday-skipped"),
    pytest.param(at(2026, 4, 4, 16, 0), at(2026, 4, 7, 9, 0), id="N15-easter-weekend-skipped"),
])
def test_n15_retry_after_is_next_window_start(now: dt.datetime, retry: dt.datetime) -> None:
    denial = check(now, CTM)
    assert denial is not None
    assert denial.retry_after == retry
    assert is_allowed(retry, CTM)


@pytest.mark.parametrize(("now", "retry"), [
    pytest.param(at(2026, 5, 4, 18, 30), at(2026, 5, 6, 9, 0), id="N15-4-may-2026-skips-5-may"),
    pytest.param(at(2027, 5, 4, 18, 30), at(2027, 5, 7, 9, 0),
                 id="N15-4-may-2027-skips-5-may-and-ascension"),
    pytest.param(at(2028, 5, 4, 18, 30), at(2028, 5, 6, 10, 0),
                 id="N15-4-may-2028-skips-5-may-friday-to-saturday"),
    pytest.param(at(2029, 5, 4, 18, 30), at(2029, 5, 7, 9, 0),
                 id="N15-4-may-2029-skips-5-may-saturday-and-sunday"),
    pytest.param(at(2025, 5, 3, 16, 0), at(2025, 5, 6, 9, 0),
                 id="N15-lustrum-2025-saturday-skips-sunday-4-and-monday-5-may"),
    pytest.param(at(2026, 5, 4, 23, 59, 59), at(2026, 5, 6, 9, 0), id="N15-4-may-last-second"),
    pytest.param(at(2026, 5, 5, 9, 0), at(2026, 5, 6, 9, 0), id="N15-5-may-opening-time"),
    pytest.param(at(2026, 5, 6, 8, 59, 59), at(2026, 5, 6, 9, 0), id="N15-6-may-before-opening"),
])
def test_n15_4_may_evening_never_retries_on_5_may(now: dt.datetime, retry: dt.datetime) -> None:
    denial = check(now, CTM)
    assert denial is not None
    assert denial.retry_after == retry
    assert denial.retry_after is not None
    assert local_date(denial.retry_after) != dt.date(now.year, 5, 5)


@pytest.mark.parametrize(("moment", "allowed"), [
    pytest.param(at(2026, 5, 4, 18, 29, 59), True, id="N13-4-may-1829-allowed"),
    pytest.param(at(2026, 5, 4, 18, 30), False, id="N13-4-may-1830-denied"),
    pytest.param(at(2026, 5, 5, 0, 0), False, id="N13-5-may-midnight-denied"),
    pytest.param(at(2026, 5, 5, 12, 0), False, id="N13-5-may-noon-denied"),
    pytest.param(at(2026, 5, 5, 23, 59, 59), False, id="N13-5-may-last-second-denied"),
    pytest.param(at(2026, 5, 6, 9, 0), True, id="N13-6-may-0900-allowed"),
])
def test_n13_liberation_day_boundaries(moment: dt.datetime, allowed: bool) -> None:
    assert is_allowed(moment, CTM) is allowed


def test_n15_dst_spring_forward_saturday_to_monday() -> None:
    # Last Sunday of March 2026 is the 29th: the retry lands in summer time.
    retry = next_allowed(at(2026, 3, 28, 16, 0), CTM)
    assert retry == dt.datetime(2026, 3, 30, 9, 0, tzinfo=AMS)
    assert retry is not None
    assert retry.utcoffset() == dt.timedelta(hours=2)
    assert retry.astimezone(UTC) == dt.datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert retry.isoformat() == "2026-03-30T09:00:00+02:00"


def test_n15_dst_friday_before_spring_forward() -> None:
    retry = next_allowed(at(2026, 3, 27, 22, 30), CTM)
    assert retry is not None
    assert retry.isoformat() == "2026-03-28T10:00:00+01:00"


def test_n15_dst_friday_before_fall_back() -> None:
    # Last Sunday of October 2026 is the 25th.
    friday = next_allowed(at(2026, 10, 23, 22, 0), CTM)
    assert friday is not None
    assert friday.isoformat() == "2026-10-24T10:00:00+02:00"
    saturday = next_allowed(at(2026, 10, 24, 16, 0), CTM)
    assert saturday is not None
    assert saturday.isoformat() == "2026-10-26T09:00:00+01:00"
    assert saturday.astimezone(UTC) == dt.datetime(2026, 10, 26, 8, 0, tzinfo=UTC)


def test_n15_retry_from_utc_night_before_opening() -> None:
    # 2026-03-30 05:30 UTC is 07:30 CEST: the window opens the same morning.
    retry = next_allowed(dt.datetime(2026, 3, 30, 5, 30, tzinfo=UTC), CTM)
    assert retry is not None
    assert retry.astimezone(UTC) == dt.datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_n15_retry_skips_closed_dates() -> None:
    settings = CallingHours(closed_dates=frozenset({dt.date(2026, 5, 4)}))
    retry = next_allowed(at(2026, 5, 2, 16, 0), settings)  # Saturday afternoon
    assert retry == at(2026, 5, 6, 9, 0)  # 4 May closed by configuration, 5 May a holiday


def test_n15_no_window_within_a_year_gives_none() -> None:
    never = CallingHours(weekday=None, saturday=None, sunday=None, holiday=None)
    denial = check(at(2026, 3, 10, 12), never)
    assert denial is not None
    assert denial.retry_after is None


def test_n15_allowed_moment_is_its_own_next_allowed() -> None:
    moment = at(2026, 3, 10, 12)
    assert next_allowed(moment, CTM) == moment


def test_n15_opening_inside_the_dst_gap_is_skipped_when_it_does_not_exist() -> None:
    # A 02:00-03:00 window does not exist on 29 March 2026 (clocks jump 02:00 -> 03:00).
    gap = CallingHours(weekday=None, saturday=None, holiday=None,
                       sunday=TimeRange(dt.time(2, 0), dt.time(3, 0)))
    retry = next_allowed(at(2026, 3, 28, 12), gap)
    assert retry == at(2026, 4, 12, 2, 0)  # 5 April is Easter Sunday, a holiday
    assert retry is not None
    assert is_allowed(retry, gap)


# -- month arithmetic (N5 first contact, N7 term) ----------------------------------------------


@pytest.mark.parametrize(("start", "months", "end"), [
    pytest.param(at(2023, 3, 3), 36, at(2026, 3, 3), id="N7-36-months"),
    pytest.param(at(2025, 8, 31), 6, at(2026, 2, 28), id="N5-clamped-to-february"),
    pytest.param(at(2023, 8, 31), 6, at(2024, 2, 29), id="N5-clamped-to-leap-day"),
    pytest.param(at(2025, 11, 15), 2, at(2026, 1, 15), id="N7-across-new-year"),
    pytest.param(at(2025, 9, 10, 14), 6, at(2026, 3, 10, 14), id="N5-keeps-wall-time-over-dst"),
])
def test_add_months_is_calendar_months_in_amsterdam(
    start: dt.datetime, months: int, end: dt.datetime,
) -> None:
    assert add_months(start, months) == end


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_allowed(dt.datetime(2026, 3, 10, 12), CTM)
