"""Parsing of the headers servers use to ask for a delay (pure functions, no I/O, no clock).

- ``retry-after-ms: 1500``: milliseconds, sent by several large APIs; read first.
- ``Retry-After: 120`` (delay-seconds) or ``Retry-After: <HTTP-date>`` in any of the three forms
  RFC 9110 section 5.6.7 requires recipients to accept:

  - IMF-fixdate: ``Sun, 06 Nov 1994 08:49:37 GMT``
  - RFC 850:     ``Sunday, 06-Nov-94 08:49:37 GMT``
  - asctime:     ``Sun Nov  6 08:49:37 1994``

- ``x-should-retry: true|false``: the server says whether a resend is safe and useful.
- ``RateLimit-Remaining: 0`` with ``RateLimit-Reset`` (or the ``X-RateLimit-*`` pair): the
  quota is spent until the reset, given as delta seconds or as an epoch timestamp.

Every parser returns ``None`` for anything it does not understand: garbage never raises.
Values are not capped here; the policy compares them with its ``max_retry_after``.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Mapping

__all__ = [
    "parse_delay_seconds",
    "parse_http_date",
    "parse_rate_limit_pause",
    "parse_retry_after",
    "parse_should_retry",
]

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_FLAGS = re.IGNORECASE | re.ASCII  # ASCII: no Unicode digits or look-alike letters
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"(\d{2}):(\d{2}):(\d{2})"
_IMF_FIXDATE = re.compile(
    rf"(?:mon|tue|wed|thu|fri|sat|sun), (\d{{2}}) {_MONTH} (\d{{4}}) {_TIME} gmt", _FLAGS
)
_RFC850 = re.compile(
    rf"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), (\d{{2}})-{_MONTH}-(\d{{2}}) "
    rf"{_TIME} gmt",
    _FLAGS,
)
_ASCTIME = re.compile(
    rf"(?:mon|tue|wed|thu|fri|sat|sun) {_MONTH} ( \d|\d{{2}}) {_TIME} (\d{{4}})", _FLAGS
)
_DECIMAL = re.compile(r"[0-9]{1,32}(?:\.[0-9]{1,32})?")


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    """Seconds since the epoch for a UTC calendar time, or None when the date does not exist."""
    if not (1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    if day > calendar.monthrange(year, month)[1]:
        return None
    # A leap second (:60) is read as the last second of the minute.
    return float(calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0)))


def parse_http_date(value: str, now: float) -> float | None:
    """Read an HTTP-date (any of the three RFC 9110 forms) as seconds since the Unix epoch.

    Args:
        value: the header value.
        now: the current time, seconds since the epoch; decides the century of an RFC 850
            two-digit year (a year more than 50 years ahead is taken as in the past).

    Returns:
        The instant, or None when ``value`` is not an HTTP-date or names a day that does not exist.
    """
    value = value.strip()
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
        return _epoch(
            int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second)
        )
    if match := _RFC850.fullmatch(value):
        day, month, yy, hour, minute, second = match.groups()
        this_year = time.gmtime(now).tm_year
        year = this_year - this_year % 100 + int(yy)
        if year > this_year + 50:
            year -= 100
        elif year <= this_year - 50:
            year += 100
        return _epoch(year, _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second))
    if match := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
        return _epoch(
            int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second)
        )
    return None


def parse_delay_seconds(value: str) -> float | None:
    """Read a non-negative decimal number of seconds (``"120"``; ``"1.5"`` is accepted too)."""
    value = value.strip()
    if not _DECIMAL.fullmatch(value):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) else None


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """How long the server asks us to wait, in seconds, or None when it does not say.

    ``retry-after-ms`` wins over ``Retry-After``. Garbage, negative values and dates in the
    past give None, so the caller falls back to its own backoff.

    Args:
        headers: response headers; lookups must be case-insensitive (``httpx.Headers`` is).
        now: the current time, seconds since the epoch, to turn an HTTP-date into a delay.
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None and (ms := parse_delay_seconds(milliseconds)) is not None:
        return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = parse_delay_seconds(value)
    if seconds is not None:
        return seconds
    instant = parse_http_date(value, now)
    if instant is None or instant <= now:
        return None
    return instant - now


def parse_should_retry(headers: Mapping[str, str]) -> bool | None:
    """The ``x-should-retry`` hint: True, False, or None when absent or not a boolean."""
    value = headers.get("x-should-retry")
    if value is None:
        return None
    value = value.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


# A reset value above this is an epoch timestamp, not a delay (2001-09-09 in epoch seconds;
# no server asks for a 31-year delay).
_EPOCH_THRESHOLD = 1_000_000_000


def parse_rate_limit_pause(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until the server's quota resets, when it says the quota is spent, else None.

    Reads ``RateLimit-Remaining``/``RateLimit-Reset`` (IETF draft: delta seconds) and
    ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` (delta seconds or an epoch timestamp, as
    GitHub sends). Only a remaining count of 0 pauses.

    Args:
        headers: response headers (case-insensitive lookups).
        now: seconds since the epoch, to turn an epoch reset into a delay.
    """
    for prefix in ("ratelimit-", "x-ratelimit-"):
        remaining = headers.get(prefix + "remaining")
        if remaining is None or remaining.strip() != "0":
            continue
        reset = headers.get(prefix + "reset")
        seconds = None if reset is None else parse_delay_seconds(reset)
        if seconds is None:
            continue
        if seconds >= _EPOCH_THRESHOLD:
            seconds -= now
        if seconds > 0:
            return seconds
    return None
