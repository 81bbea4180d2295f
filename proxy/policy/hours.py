"""N13-N15: calling hours, Dutch public holidays and the next allowed moment.

Everything is computed in Europe/Amsterdam wall time and converted with zoneinfo, so the answers
are right on DST change days. Pure: the only state is a per-year cache of the holiday calendar.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo

import holidays
import msgspec

from proxy.settings import CallingHours, TimeRange

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# N13: 4 May (Remembrance Day), 5 December (Sinterklaas) and 24 December end early on working days.
SHORT_DAYS: frozenset[tuple[int, int]] = frozenset({(5, 4), (12, 5), (12, 24)})
# N13: 5 May (Liberation Day) is a public holiday every year (Algemene termijnenwet art. 3).
LIBERATION_DAY: tuple[int, int] = (5, 5)
LIBERATION_DAY_NAMES: tuple[str, str] = ("Liberation Day", "Bevrijdingsdag")
# N15: how far ahead to look for the next open window before giving up (retry_after None).
HORIZON_DAYS = 366
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The ends of what a datetime can hold. Facts may lie there ("9999-12-31T23:59:59+00:00" is a
# common "never"), and the engine must still decide: arithmetic past them stops at them.
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_LAST_LOCAL = dt.datetime.max.replace(tzinfo=AMSTERDAM)
_FIRST_LOCAL = dt.datetime.min.replace(tzinfo=AMSTERDAM)

DayKind = Literal["closed_date", "holiday", "sunday", "saturday", "weekday", "short_day"]


class Day(msgspec.Struct, frozen=True, gc=False):
    """How N13 treats one local date. `window` None: no calls at all that day."""

    date: dt.date
    kind: DayKind
    window: TimeRange | None
    holiday_en: str | None = None
    holiday_nl: str | None = None

    @property
    def closed(self) -> bool:
        return self.window is None


class HoursDenial(msgspec.Struct, frozen=True, gc=False):
    """A call at `local` is not allowed; `retry_after` is the next allowed moment (N15)."""

    day: Day
    local: dt.datetime
    retry_after: dt.datetime | None


@lru_cache(maxsize=64)
def public_holidays(year: int) -> Mapping[dt.date, tuple[str, str]]:
    """N13: official Dutch public holidays of `year` from the maintained `holidays` calendar
    (not a hand-written list), as date -> (English name, Dutch name), plus 5 May.

    The calendar follows the Algemene termijnenwet art. 3 (King's Day on 26 April when 27 April
    is a Sunday) and adds Good Friday, which stays closed (conservative). It lists 5 May as a
    public holiday only in lustrum years, while art. 3 names it every year: added here."""
    en = holidays.country_holidays("NL", years=year, language="en_US")
    nl = holidays.country_holidays("NL", years=year, language="nl")
    days = {day: (str(en[day]), str(nl.get(day, en[day]))) for day in en}
    days.setdefault(dt.date(year, *LIBERATION_DAY), LIBERATION_DAY_NAMES)
    return MappingProxyType(days)


def local(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("datetimes given to the policy engine must be timezone-aware")
    try:
        return moment.astimezone(AMSTERDAM)
    except OverflowError:
        # Within a day of 0001-01-01 or 9999-12-31 the Amsterdam wall time can fall outside
        # what a datetime holds: the nearest end stands in for it.
        return _LAST_LOCAL if moment.year > dt.MINYEAR else _FIRST_LOCAL


def local_date(moment: dt.datetime) -> dt.date:
    return local(moment).date()


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """Calendar-month arithmetic in Amsterdam wall time; the day is clamped to the month's end
    (31 August + 6 months = 28/29 February)."""
    start = local(moment)
    years, month0 = divmod(start.month - 1 + months, 12)
    year = start.year + years
    if year > dt.MAXYEAR:  # a term ending after year 9999 has not ended at any `now`
        return LATEST
    if year < dt.MINYEAR:
        return EARLIEST
    last = _MONTH_DAYS[month0] + (month0 == 1 and calendar.isleap(year))
    return start.replace(year=year, month=month0 + 1, day=min(start.day, last))


@lru_cache(maxsize=4096)
def classify(day: dt.date, hours: CallingHours) -> Day:
    """N13: the day type decides the window. Closed dates (commemoration/mourning days) and
    public holidays follow the holiday setting, and win over the short-day rule (4 May)."""
    if day in hours.closed_dates:
        return Day(day, "closed_date", hours.holiday)
    names = public_holidays(day.year).get(day)
    if names is not None:
        return Day(day, "holiday", hours.holiday, names[0], names[1])
    weekday = day.weekday()
    if weekday == 6:
        return Day(day, "sunday", hours.sunday)
    if weekday == 5:
        return Day(day, "saturday", hours.saturday)
    window = hours.weekday
    if window is not None and (day.month, day.day) in SHORT_DAYS:
        return Day(day, "short_day", _shortened(window, hours.short_day_end))
    return Day(day, "weekday", window)


def _shortened(window: TimeRange, end: dt.time) -> TimeRange | None:
    if end >= window.end:
        return window
    if end <= window.start:
        return None  # a short day that ends before it opens has no window at all
    return TimeRange(window.start, end)


def _inside(moment: dt.time, window: TimeRange | None) -> bool:
    # N13: the window is half-open, [start, end): 21:59 is allowed, 22:00 is not.
    return window is not None and window.start <= moment < window.end


def check(now: dt.datetime, hours: CallingHours) -> HoursDenial | None:
    """None when a call at `now` is within calling hours, else the denial with retry_after."""
    here = local(now)
    day = classify(here.date(), hours)
    if _inside(here.time(), day.window):
        return None
    return HoursDenial(day, here, _next_opening(now, here, day, hours))


def is_allowed(moment: dt.datetime, hours: CallingHours) -> bool:
    here = local(moment)
    return _inside(here.time(), classify(here.date(), hours).window)


def next_allowed(now: dt.datetime, hours: CallingHours) -> dt.datetime | None:
    """N15: the earliest moment at or after `now` at which a call is allowed (Amsterdam time),
    or None when no day within HORIZON_DAYS has a window."""
    here = local(now)
    today = classify(here.date(), hours)
    if _inside(here.time(), today.window):
        return here
    return _next_opening(now, here, today, hours)


def _next_opening(
    now: dt.datetime, here: dt.datetime, today: Day, hours: CallingHours,
) -> dt.datetime | None:
    day = today
    # Near the end of year 9999 the horizon stops at the last date there is.
    days_left = (dt.date.max - today.date).days
    for offset in range(min(HORIZON_DAYS, days_left) + 1):
        if offset:
            day = classify(today.date + dt.timedelta(days=offset), hours)
        window = day.window
        if window is None or (not offset and here.time() >= window.start):
            continue  # closed, or today's window has already opened (and so closed again)
        # Wall-clock start on that date; zoneinfo picks the right offset either side of DST.
        opening = _real(dt.datetime.combine(day.date, window.start, tzinfo=AMSTERDAM))
        # A start inside the spring-forward gap (02:00-03:00) does not exist: it normalises to a
        # later wall time, usable only when that still falls inside the same day's window.
        if opening > now and opening.date() == day.date and _inside(opening.time(), window):
            return opening
    return None


def _real(wall: dt.datetime) -> dt.datetime:
    # astimezone() to the datetime's own zone is a no-op, so normalise through UTC. At the very
    # ends of the calendar (no DST gap there) the wall time is taken as it is.
    try:
        return wall.astimezone(dt.UTC).astimezone(AMSTERDAM)
    except OverflowError:
        return wall
