"""Retry-After, retry-after-ms and x-should-retry parsing: pure functions, no clock."""

from __future__ import annotations

import calendar
import math
from datetime import datetime, timedelta

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resilience._retry_after import (
    parse_delay_seconds,
    parse_http_date,
    parse_rate_limit_pause,
    parse_retry_after,
    parse_should_retry,
)

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FULL_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

NOW = 1_750_000_000  # an integer epoch, so date arithmetic is exact


def epoch(dt: datetime) -> int:
    """Seconds since the epoch of a naive datetime read as UTC."""
    return calendar.timegm(dt.timetuple())


def clock(dt: datetime) -> str:
    """``HH:MM:SS``."""
    return f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"


def imf_fixdate(dt: datetime) -> str:
    """``Sun, 06 Nov 1994 08:49:37 GMT``, with English names whatever the locale."""
    weekday, month = WEEKDAYS[dt.weekday()], MONTHS[dt.month - 1]
    return f"{weekday}, {dt.day:02d} {month} {dt.year:04d} {clock(dt)} GMT"


def asctime(dt: datetime) -> str:
    """``Sun Nov  6 08:49:37 1994`` (day padded with a space)."""
    weekday, month = WEEKDAYS[dt.weekday()], MONTHS[dt.month - 1]
    return f"{weekday} {month} {dt.day:>2} {clock(dt)} {dt.year:04d}"


def rfc850(dt: datetime) -> str:
    """``Sunday, 06-Nov-94 08:49:37 GMT`` (two-digit year)."""
    weekday, month = FULL_WEEKDAYS[dt.weekday()], MONTHS[dt.month - 1]
    return f"{weekday}, {dt.day:02d}-{month}-{dt.year % 100:02d} {clock(dt)} GMT"


def whole_seconds(low: datetime, high: datetime) -> st.SearchStrategy[datetime]:
    """Datetimes between ``low`` and ``high`` at second resolution."""
    return st.datetimes(min_value=low, max_value=high).map(lambda dt: dt.replace(microsecond=0))


FOUR_DIGIT_YEARS = whole_seconds(datetime(1900, 1, 1), datetime(9999, 12, 31, 23, 59, 59))
# 49 * 365 days is less than 49 calendar years, so the year differs from now's by at most 49.
WITHIN_49_YEARS = 49 * 365 * 86_400


# -- HTTP-date ----------------------------------------------------------------------------------


def test_rfc_9110_examples_parse() -> None:
    """The three example dates of RFC 9110 section 5.6.7 are the same instant."""
    expected = epoch(datetime(1994, 11, 6, 8, 49, 37))
    now = epoch(datetime(1994, 11, 6))
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", now) == expected
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", now) == expected
    assert parse_http_date("Sun Nov  6 08:49:37 1994", now) == expected


@settings(max_examples=200, deadline=None)
@given(FOUR_DIGIT_YEARS)
def test_imf_fixdate_round_trips(dt: datetime) -> None:
    """Any second from 1900 to 9999 written as IMF-fixdate parses back to its exact epoch."""
    assert parse_http_date(imf_fixdate(dt), NOW) == epoch(dt)


@settings(max_examples=200, deadline=None)
@given(FOUR_DIGIT_YEARS)
def test_asctime_round_trips(dt: datetime) -> None:
    """Any second from 1900 to 9999 written in asctime form parses back to its exact epoch."""
    assert parse_http_date(asctime(dt), NOW) == epoch(dt)


@settings(max_examples=200, deadline=None)
@given(
    now=whole_seconds(datetime(1950, 1, 1), datetime(9949, 12, 31)),
    offset=st.integers(-WITHIN_49_YEARS, WITHIN_49_YEARS),
)
@example(now=datetime(2090, 6, 1), offset=20 * 365 * 86_400)
def test_rfc850_round_trips_within_49_years_of_now(now: datetime, offset: int) -> None:
    """An RFC 850 date within 49 years of now gets the right century (RFC 9110 5.6.7)."""
    dt = now + timedelta(seconds=offset)
    assert parse_http_date(rfc850(dt), epoch(now)) == epoch(dt)


def test_rfc850_two_digit_year_can_be_in_the_next_century() -> None:
    """In 2090, ``-10`` means 2110 (20 years ahead), not 2010 (80 years ago)."""
    now = epoch(datetime(2090, 6, 1))
    assert parse_http_date("Friday, 01-Jan-10 00:00:00 GMT", now) == epoch(datetime(2110, 1, 1))


def test_rfc850_year_more_than_50_years_ahead_is_in_the_past() -> None:
    """In 2024, ``-80`` is 1980, not 2080."""
    now = epoch(datetime(2024, 6, 1))
    assert parse_http_date("Tuesday, 01-Jan-80 00:00:00 GMT", now) == epoch(datetime(1980, 1, 1))


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 30 Feb 2024 00:00:00 GMT",
        "Thu, 29 Feb 1900 00:00:00 GMT",
        "Sun, 31 Apr 1994 00:00:00 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sunday, 06-Foo-94 08:49:37 GMT",
        "Sun Foo  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "06 Nov 1994 08:49:37 GMT",
        "",
        "GMT",
    ],
)
def test_invalid_dates_give_none(value: str) -> None:
    """A day, hour or month that does not exist, or a malformed date, gives None."""
    assert parse_http_date(value, NOW) is None


def test_february_29_of_a_leap_year_is_valid() -> None:
    """29 February 2024 exists."""
    assert parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT", NOW) == epoch(datetime(2024, 2, 29))


def test_leap_second_is_accepted() -> None:
    """``23:59:60`` is accepted and read as the last second of the minute."""
    value = parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT", NOW)
    assert value == epoch(datetime(2016, 12, 31, 23, 59, 59))


def test_names_are_case_insensitive() -> None:
    """Weekday, month and GMT match in any case."""
    expected = epoch(datetime(1994, 11, 6, 8, 49, 37))
    assert parse_http_date("SUN, 06 NOV 1994 08:49:37 gmt", NOW) == expected
    assert parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT  ", NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 \u017fep 1994 08:49:37 GMT",  # LATIN SMALL LETTER LONG S folds to "s"
        "Sunday, 06-\u017fep-94 08:49:37 GMT",
        "Sun \u017fep  6 08:49:37 1994",
    ],
)
def test_non_ascii_month_lookalike_does_not_raise(value: str) -> None:
    """A month spelled with a Unicode case-fold lookalike gives None instead of raising."""
    assert parse_http_date(value, NOW) is None


def _mangle(form: object, dt: datetime, month: str, digits: str) -> str:
    """A date in ``form`` with its month name replaced and its ASCII digits remapped."""
    text = form(dt).replace(MONTHS[dt.month - 1], month, 1)  # type: ignore[operator]
    return text.translate(str.maketrans("0123456789", digits))


# Near-misses: real dates with odd month names (Unicode case-fold lookalikes included) and
# non-ASCII digits, to reach the branches that plain random text never gets to.
DATEISH = st.builds(
    _mangle,
    st.sampled_from([imf_fixdate, asctime, rfc850]),
    FOUR_DIGIT_YEARS,
    st.sampled_from([*MONTHS, "SEP", "\u017fep", "\u017fEP", "Foo", "", "Sept"]),
    st.sampled_from(["0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"]),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), DATEISH))
def test_arbitrary_text_never_raises(value: str) -> None:
    """Any text gives None or a finite number from every parser; delays are never negative."""
    instant = parse_http_date(value, NOW)
    assert instant is None or (isinstance(instant, float) and math.isfinite(instant))
    seconds = parse_delay_seconds(value)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    for headers in ({"retry-after": value}, {"retry-after-ms": value}, {"x-should-retry": value}):
        delay = parse_retry_after(headers, NOW)
        assert delay is None or (math.isfinite(delay) and delay >= 0)
        assert parse_should_retry(headers) in (True, False, None)


# -- delay-seconds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0.0), ("120", 120.0), ("1.5", 1.5), (" 7 ", 7.0)]
)
def test_delay_seconds_parse(value: str, expected: float) -> None:
    """Non-negative decimals parse, surrounding whitespace ignored."""
    assert parse_delay_seconds(value) == expected


@pytest.mark.parametrize(
    "value", ["-1", "1e3", "inf", "nan", "", " ", "abc", "1,2", "+5", "1.", ".5", "0x10", "1 2"]
)
def test_malformed_delay_seconds_give_none(value: str) -> None:
    """Signs, exponents, infinities, NaN, empty and non-numeric values give None."""
    assert parse_delay_seconds(value) is None


@pytest.mark.parametrize("value", ["\u0661\u0662\u0660", "\uff11\uff12", "\u0967"])
def test_non_ascii_digits_are_not_delay_seconds(value: str) -> None:
    """RFC 9110 delay-seconds is ASCII DIGITs only: Arabic-Indic or full-width digits give None."""
    assert parse_delay_seconds(value) is None


def test_huge_delay_seconds_parse_to_a_finite_float() -> None:
    """A huge delay parses as is: bounding it is the policy's job, not the parser's."""
    value = parse_delay_seconds("99999999999999999999")
    assert value == 1e20
    assert value is not None
    assert math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_integer_delay_seconds_round_trip(seconds: int) -> None:
    """Any non-negative integer written in decimal parses to itself."""
    assert parse_delay_seconds(str(seconds)) == float(seconds)


# -- parse_retry_after --------------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    """``Retry-After: 120`` is 120 seconds."""
    assert parse_retry_after({"retry-after": "120"}, NOW) == 120.0


def test_retry_after_absent_gives_none() -> None:
    """No header, no delay."""
    assert parse_retry_after({}, NOW) is None


def test_retry_after_ms_wins_over_retry_after() -> None:
    """``retry-after-ms`` is read first and converted to seconds."""
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "10"}, NOW) == 1.5


def test_garbage_retry_after_ms_falls_back_to_retry_after() -> None:
    """An unreadable ``retry-after-ms`` is ignored in favour of ``Retry-After``."""
    headers = {"retry-after-ms": "soon", "retry-after": "10"}
    assert parse_retry_after(headers, NOW) == 10.0
    assert parse_retry_after({"retry-after-ms": "-5", "retry-after": "3"}, NOW) == 3.0


def test_retry_after_ms_alone() -> None:
    """``retry-after-ms`` without ``Retry-After`` works alone."""
    assert parse_retry_after({"retry-after-ms": "250"}, NOW) == 0.25


@pytest.mark.parametrize("value", ["-1", "soon", "", "1e3", "Sun, 06 Foo 1994 08:49:37 GMT"])
def test_garbage_retry_after_gives_none(value: str) -> None:
    """Negative, empty or unreadable values give None, so the caller uses its own backoff."""
    assert parse_retry_after({"retry-after": value}, NOW) is None


def test_retry_after_date_in_the_past_gives_none() -> None:
    """An HTTP-date before now asks for no wait: None."""
    past = imf_fixdate(datetime(1970, 1, 1) + timedelta(seconds=NOW - 60))
    assert parse_retry_after({"retry-after": past}, NOW) is None


def test_retry_after_date_equal_to_now_gives_none() -> None:
    """An HTTP-date equal to now asks for no wait: None."""
    present = imf_fixdate(datetime(1970, 1, 1) + timedelta(seconds=NOW))
    assert parse_retry_after({"retry-after": present}, NOW) is None


@pytest.mark.parametrize("form", [imf_fixdate, asctime, rfc850])
def test_retry_after_date_two_seconds_ahead(form: object) -> None:
    """An HTTP-date 2 s after now is a 2.0 s delay exactly, in all three forms."""
    ahead = datetime(1970, 1, 1) + timedelta(seconds=NOW + 2)
    assert parse_retry_after({"retry-after": form(ahead)}, NOW) == 2.0  # type: ignore[operator]


def test_retry_after_lookup_is_case_insensitive_with_httpx_headers() -> None:
    """``httpx.Headers`` in any case is read."""
    assert parse_retry_after(httpx.Headers({"RETRY-AFTER": "7"}), NOW) == 7.0
    headers = httpx.Headers({"Retry-After-Ms": "250", "Retry-After": "9"})
    assert parse_retry_after(headers, NOW) == 0.25


# -- x-should-retry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-should-retry": "true"}, True),
        ({"x-should-retry": "TRUE"}, True),
        ({"x-should-retry": " false "}, False),
        ({}, None),
        ({"x-should-retry": "yes"}, None),
        ({"x-should-retry": ""}, None),
        ({"x-should-retry": "1"}, None),
    ],
)
def test_should_retry(headers: dict[str, str], expected: bool | None) -> None:
    """Only ``true``/``false`` (any case, trimmed) are read; anything else is no hint."""
    assert parse_should_retry(headers) is expected


def test_should_retry_lookup_is_case_insensitive_with_httpx_headers() -> None:
    """``X-Should-Retry`` in any case is read from ``httpx.Headers``."""
    assert parse_should_retry(httpx.Headers({"X-Should-Retry": "False"})) is False
    assert parse_should_retry(httpx.Headers({"X-SHOULD-RETRY": "true"})) is True


# -- RateLimit-Remaining / RateLimit-Reset --------------------------------------------------


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"ratelimit-remaining": "0", "ratelimit-reset": "7"}, 7.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2.5"}, 2.5),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 30)}, 30.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 30)}, None),
        ({"ratelimit-remaining": "3", "ratelimit-reset": "7"}, None),
        ({"ratelimit-remaining": "0"}, None),
        ({"ratelimit-remaining": "0", "ratelimit-reset": "soon"}, None),
        ({"ratelimit-remaining": "0", "ratelimit-reset": "-5"}, None),
        ({"ratelimit-reset": "7"}, None),
        ({}, None),
    ],
)
def test_rate_limit_pause(headers: dict[str, str], expected: float | None) -> None:
    """Only a spent quota with a readable reset (delta or epoch) pauses, never a past one."""
    assert parse_rate_limit_pause(headers, NOW) == expected


def test_rate_limit_pause_reads_httpx_headers_case_insensitively() -> None:
    """Header names match whatever their case (httpx.Headers)."""
    headers = httpx.Headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4"})
    assert parse_rate_limit_pause(headers, NOW) == 4.0


@given(remaining=st.text(max_size=12), reset=st.text(max_size=30))
def test_rate_limit_pause_never_raises(remaining: str, reset: str) -> None:
    """Arbitrary header values never raise; a pause, when given, is positive and finite."""
    for prefix in ("ratelimit-", "x-ratelimit-"):
        value = parse_rate_limit_pause(
            {prefix + "remaining": remaining, prefix + "reset": reset}, NOW
        )
        assert value is None or 0 < value < float("inf")
