"""RFC 9111 decisions for a private HTTP cache: pure functions, no clock, no I/O, no httpx.

The cache transport asks these functions every question the specifications answer:

- may this response be stored? :func:`storable` (RFC 9111 section 3); which fields are kept?
  :func:`storable_headers` (3.1);
- which requests may an entry answer? :func:`vary_key`, :func:`vary_matches` (4.1);
- how old is it, how long does it stay fresh? :func:`current_age` (4.2.3),
  :func:`freshness_lifetime` (4.2.1, 4.2.2);
- serve it, or revalidate first? :func:`evaluate` (4.2, 5.2.1);
- how to revalidate? :func:`conditional_headers` (4.3.1); does the 304 apply, and what does it
  change? :func:`validators_match`, :func:`freshen` (4.3.4, 3.2);
- serve it stale when the origin fails, or while revalidating? :func:`stale_on_error`,
  :func:`stale_while_revalidate` (RFC 5861);
- what does an unsafe request evict? :func:`invalidates`, :func:`invalidation_targets` (4.4).

Times are plain floats (seconds since the epoch) passed in by the caller. Headers are
``(name, value)`` pairs; names compare case-insensitively and a field may appear on several
lines (list-valued fields are combined with ``", "``, RFC 9110 section 5.3).

The cache is private by default; ``shared=True`` applies the shared-cache rules too
(``s-maxage``, ``proxy-revalidate``, ``private`` not storable, the ``Authorization`` rule of
section 3.5).

Hostile input never raises: unknown directives are ignored, numbers are clamped to
:data:`MAX_DELTA` (2**31 seconds, RFC 9111 section 1.2.2), invalid dates are treated as the
RFC says (an invalid ``Expires`` means "already expired").
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from ._retry_after import parse_http_date
from ._validate import check_number

__all__ = [
    "HEURISTIC_STATUSES",
    "MAX_DELTA",
    "CacheControl",
    "Headers",
    "Use",
    "Verdict",
    "age_header",
    "conditional_headers",
    "current_age",
    "evaluate",
    "freshen",
    "freshness_lifetime",
    "header",
    "header_values",
    "invalidates",
    "invalidation_targets",
    "parse_cache_control",
    "stale_on_error",
    "stale_while_revalidate",
    "storable",
    "storable_headers",
    "validators_match",
    "vary_key",
    "vary_matches",
]

Headers = Sequence[tuple[str, str]]

MAX_DELTA = 2_147_483_648
"""The largest delta-seconds value we keep (2**31, RFC 9111 section 1.2.2): larger ones clamp."""

HEURISTIC_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)
"""Statuses RFC 9110 section 15.1 calls heuristically cacheable."""

# Decides the century of an RFC 850 two-digit year when the caller gave no time (2026-01-01);
# right for any date written between 1976 and 2075. Only obsolete RFC 850 dates depend on it.
_REFERENCE_TIME = 1_767_225_600.0

_DELTA = re.compile(r"[0-9]+", re.ASCII)
_MAX_DELTA_DIGITS = len(str(MAX_DELTA))
_COMMA_SPACES = re.compile(r"[ \t]*,[ \t]*")

# A field the request lacks, in a Vary secondary key. RFC 9110 section 5.5: a NUL in a field
# value must be rejected or replaced with SP, so normalized values never contain one.
_ABSENT = "\x00"

# RFC 9110 section 7.6.1 (hop-by-hop) and RFC 9111 section 3.1 (never stored).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
    }
)
_NOT_STORED = _HOP_BY_HOP | {
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "set-cookie",
    "set-cookie2",
}
# Fields a 304 must not change: they describe the stored body's framing (RFC 9111 3.2).
_BODY_FRAMING = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "content-range"}
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


# -- header access ------------------------------------------------------------------------------


def _split_list(value: str) -> list[str]:
    """Split a list-valued field on commas outside quoted strings; strip; drop empty members."""
    if '"' not in value:
        return [item for part in value.split(",") if (item := part.strip())]
    items: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == ",":
            if item := value[start:index].strip():
                items.append(item)
            start = index + 1
    if item := value[start:].strip():
        items.append(item)
    return items


def header_values(headers: Headers, name: str) -> list[str]:
    """All values of the list-valued field ``name``, one per member.

    Every line of the field is split on commas outside quoted strings; members are stripped
    and empty ones dropped (RFC 9110 section 5.6.1).

    Args:
        headers: ``(name, value)`` pairs.
        name: the field name, any case.
    """
    wanted = name.lower()
    values: list[str] = []
    for field, value in headers:
        if field.lower() == wanted:
            values.extend(_split_list(value))
    return values


def header(headers: Headers, name: str) -> str | None:
    """The value of the first line of a single-valued field, stripped, or None when absent.

    For fields such as ``Date``, ``Expires``, ``ETag``, ``Last-Modified``, ``Location``: the
    value is not split on commas (an HTTP-date contains one). RFC 9111 section 4.2.1 allows
    using the first occurrence when a field appears more than once.
    """
    wanted = name.lower()
    for field, value in headers:
        if field.lower() == wanted:
            return value.strip()
    return None


def _date(headers: Headers, name: str, reference: float) -> float | None:
    """The field ``name`` read as an HTTP-date (epoch seconds), or None if absent or invalid."""
    value = header(headers, name)
    return None if value is None else parse_http_date(value, reference)


# -- Cache-Control ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of the ``Cache-Control`` field (RFC 9111 section 5.2, RFC 5861).

    One class serves requests and responses; each attribute says which side it belongs to.
    Delta-seconds are integers in ``[0, MAX_DELTA]``; None means the directive is absent (or
    had an invalid value, which is ignored, except for ``max-age``: see
    :func:`parse_cache_control`).
    """

    max_age: int | None = None
    """Response and request ``max-age``."""
    s_maxage: int | None = None
    """Response ``s-maxage`` (shared caches only)."""
    no_store: bool = False
    """Response or request ``no-store``."""
    no_cache: bool = False
    """Response or request ``no-cache``; ``no-cache="field"`` counts as plain ``no-cache``."""
    private: bool = False
    """Response ``private`` (with or without field names)."""
    public: bool = False
    """Response ``public``."""
    must_revalidate: bool = False
    """Response ``must-revalidate``."""
    proxy_revalidate: bool = False
    """Response ``proxy-revalidate`` (shared caches only)."""
    immutable: bool = False
    """Response ``immutable`` (RFC 8246)."""
    max_stale: int | None = None
    """Request ``max-stale``; a bare ``max-stale`` (any staleness) is ``MAX_DELTA``."""
    min_fresh: int | None = None
    """Request ``min-fresh``."""
    only_if_cached: bool = False
    """Request ``only-if-cached``."""
    stale_if_error: int | None = None
    """``stale-if-error`` (RFC 5861 section 4), response or request."""
    stale_while_revalidate: int | None = None
    """Response ``stale-while-revalidate`` (RFC 5861 section 3)."""


_FLAGS = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "immutable": "immutable",
    "only-if-cached": "only_if_cached",
}
_DELTAS = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "max-stale": "max_stale",
    "min-fresh": "min_fresh",
    "stale-if-error": "stale_if_error",
    "stale-while-revalidate": "stale_while_revalidate",
}


def _unquote(value: str) -> str:
    """A directive argument: a token as is, a quoted-string without quotes and escapes."""
    if not value.startswith('"'):
        return value
    chars: list[str] = []
    escaped = False
    for char in value[1:]:
        if escaped:
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            break
        else:
            chars.append(char)
    return "".join(chars)


def _delta_seconds(value: str) -> int | None:
    """Non-negative integer seconds clamped to ``MAX_DELTA``, or None when invalid."""
    if not _DELTA.fullmatch(value):
        return None
    digits = value.lstrip("0")
    if len(digits) > _MAX_DELTA_DIGITS:  # never hand int() a huge string
        return MAX_DELTA
    return min(int(digits or "0"), MAX_DELTA)


def parse_cache_control(headers: Headers) -> CacheControl:
    """Read every ``Cache-Control`` line of ``headers``.

    - Directive names are case-insensitive; unknown directives are ignored.
    - Arguments may be tokens or quoted strings (``max-age="60"`` is accepted, RFC 9111 5.2).
    - Delta-seconds are non-negative integers, clamped to :data:`MAX_DELTA`.
    - An invalid ``max-age`` (missing, negative, not an integer) makes the response stale:
      ``max_age=0`` (RFC 9111 section 4.2.1). Invalid values of the other delta directives
      are ignored; a bare ``max-stale`` means any staleness (``MAX_DELTA``).
    - A directive given twice with different values keeps the SMALLEST: RFC 9111 section 4.2.1
      allows either the first occurrence or treating the response as stale, and section 4.2
      says to honour the most restrictive of conflicting directives. The smallest value is
      the conservative choice for every delta directive.

    Garbage never raises.
    """
    flags: set[str] = set()
    deltas: dict[str, int] = {}
    for item in header_values(headers, "cache-control"):
        name, equals, argument = item.partition("=")
        name = name.strip().lower()
        attribute = _FLAGS.get(name)
        if attribute is not None:
            flags.add(attribute)
            continue
        attribute = _DELTAS.get(name)
        if attribute is None:
            continue
        seconds = _delta_seconds(_unquote(argument.strip())) if equals else None
        if seconds is None:
            if attribute == "max_age":
                seconds = 0  # invalid freshness information: treat as stale
            elif attribute == "max_stale" and not equals:
                seconds = MAX_DELTA
            else:
                continue
        previous = deltas.get(attribute)
        deltas[attribute] = seconds if previous is None else min(previous, seconds)
    if not flags and not deltas:
        return _EMPTY
    fields: dict[str, Any] = dict.fromkeys(flags, True)
    fields.update(deltas)
    return CacheControl(**fields)


_EMPTY = CacheControl()


# -- age and freshness --------------------------------------------------------------------------


def current_age(
    headers: Headers, *, request_time: float, response_time: float, now: float
) -> float:
    """The response's current age in seconds, exactly as RFC 9111 section 4.2.3 computes it.

    ::

        apparent_age = max(0, response_time - date_value)
        response_delay = response_time - request_time
        corrected_age_value = age_value + response_delay
        corrected_initial_age = max(apparent_age, corrected_age_value)
        resident_time = now - response_time
        current_age = corrected_initial_age + resident_time

    ``age_value`` is the first member of ``Age`` (invalid or absent: 0; clamped to
    :data:`MAX_DELTA`, RFC 9111 section 5.1); ``date_value`` is ``Date`` (absent or invalid:
    ``response_time``). The result is never negative.

    Args:
        headers: the stored response's headers.
        request_time: when the request that got this response was sent.
        response_time: when the response was received.
        now: the current time.
    """
    ages = header_values(headers, "age")
    age_value = (_delta_seconds(ages[0]) or 0) if ages else 0
    date_value = _date(headers, "date", response_time)
    if date_value is None:
        date_value = response_time
    apparent_age = max(0.0, response_time - date_value)
    corrected_age_value = age_value + (response_time - request_time)
    corrected_initial_age = max(apparent_age, corrected_age_value)
    return max(0.0, corrected_initial_age + (now - response_time))


def freshness_lifetime(
    status: int,
    headers: Headers,
    cc: CacheControl,
    *,
    shared: bool = False,
    heuristic_fraction: float = 0.1,
    heuristic_cap: float = 86_400.0,
    received: float | None = None,
) -> tuple[float, bool]:
    """How long the response stays fresh, in seconds, and whether that is a heuristic guess.

    The first rule that applies wins (RFC 9111 section 4.2.1):

    1. ``s-maxage`` when ``shared``;
    2. ``max-age``;
    3. ``Expires`` minus ``Date`` (an invalid ``Expires``, such as ``"0"``, means already
       expired: 0; without a valid ``Date``, ``received`` stands in for it, and without that
       the lifetime is 0);
    4. the heuristic of section 4.2.2, only for a status in :data:`HEURISTIC_STATUSES` with a
       valid ``Last-Modified`` earlier than ``Date``:
       ``min(heuristic_fraction * (date - last_modified), heuristic_cap)``;
    5. otherwise 0.

    The lifetime lies in ``[0, MAX_DELTA]``.

    Args:
        status: the response status.
        headers: the response headers.
        cc: the response's parsed ``Cache-Control``.
        shared: apply shared-cache rules (``s-maxage``).
        heuristic_fraction: the share of the time since ``Last-Modified`` (in ``[0, 1]``).
        heuristic_cap: the longest heuristic lifetime, seconds (>= 0).
        received: when the response was received (epoch seconds), used when ``Date`` is
            missing; also decides the century of RFC 850 two-digit years.

    Raises:
        ValueError: ``heuristic_fraction`` or ``heuristic_cap`` is out of range (checked when
            the heuristic applies).
        TypeError: either is not a number (likewise).
    """
    if shared and cc.s_maxage is not None:
        return float(cc.s_maxage), False
    if cc.max_age is not None:
        return float(cc.max_age), False
    reference = _REFERENCE_TIME if received is None else received
    date = _date(headers, "date", reference)
    if date is None:
        date = received
    expires = header(headers, "expires")
    if expires is not None:
        if date is None:
            return 0.0, False
        instant = parse_http_date(expires, date)
        if instant is None:
            return 0.0, False
        return min(max(0.0, instant - date), float(MAX_DELTA)), False
    if status not in HEURISTIC_STATUSES or date is None:
        return 0.0, False
    last_modified = _date(headers, "last-modified", date)
    if last_modified is None or last_modified >= date:
        return 0.0, False
    # checked here, where they are used, to keep the common paths free of it
    check_number(
        "freshness_lifetime", "heuristic_fraction", heuristic_fraction, minimum=0, maximum=1
    )
    check_number("freshness_lifetime", "heuristic_cap", heuristic_cap, minimum=0)
    lifetime = min(heuristic_fraction * (date - last_modified), heuristic_cap, float(MAX_DELTA))
    return lifetime, True


# -- storing ------------------------------------------------------------------------------------


def storable(
    method: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    *,
    methods: frozenset[str] = frozenset({"GET", "HEAD"}),
    shared: bool = False,
) -> str | None:
    """Why RFC 9111 section 3 forbids storing this response, or None when it may be stored.

    Rules, in order: the method is one of ``methods``; the status is final and neither 206
    (partial content is not stored) nor 304; no ``no-store`` in the request or the response;
    in a shared cache, no ``private`` and no ``Authorization`` in the request unless the
    response says ``public``, ``s-maxage`` or ``must-revalidate`` (section 3.5); and the
    response carries explicit freshness (``max-age``, ``Expires``, ``s-maxage`` when shared,
    ``public``, ``private`` when not shared) or its status is heuristically cacheable (so a
    200 with only an ``ETag`` is stored, with lifetime 0, and revalidated on use).

    ``Vary: *`` does not prevent storing: :func:`vary_key` returns None and it never matches.

    Returns:
        None, or a short reason such as ``"no-store"`` or ``"method POST not cacheable"``.
    """
    if method not in methods:
        return f"method {method} not cacheable"
    if status < 200:
        return f"status {status} is not final"
    if status == 206:
        return "status 206 (partial content is not stored)"
    if status == 304:
        return "status 304 (not a complete response)"
    request_cc = parse_cache_control(request_headers)
    if request_cc.no_store:
        return "no-store in the request"
    cc = parse_cache_control(response_headers)
    if cc.no_store:
        return "no-store"
    if shared:
        if cc.private:
            return "private in a shared cache"
        if (
            header(request_headers, "authorization") is not None
            and not cc.public
            and cc.s_maxage is None
            and not cc.must_revalidate
        ):
            return "Authorization in a shared cache"
    explicit = (
        cc.max_age is not None
        or cc.public
        or header(response_headers, "expires") is not None
        or (cc.s_maxage is not None if shared else cc.private)
    )
    if not explicit and status not in HEURISTIC_STATUSES:
        return f"no explicit freshness for status {status}"
    return None


def storable_headers(headers: Headers) -> list[tuple[str, str]]:
    """``headers`` without the fields a cache must not store (RFC 9111 section 3.1).

    Removed: ``Connection`` and every field it names, ``Keep-Alive``, ``Proxy-Connection``,
    ``TE``, ``Transfer-Encoding``, ``Upgrade``, ``Trailer``, the proxy authentication fields
    (``Proxy-Authenticate``, ``Proxy-Authentication-Info``, ``Proxy-Authorization``), and
    ``Set-Cookie`` / ``Set-Cookie2`` (API.md 10.4: a cookie is never replayed from the cache).
    """
    drop = _NOT_STORED.union(name.lower() for name in header_values(headers, "connection"))
    return [(name, value) for name, value in headers if name.lower() not in drop]


def freshen(stored_headers: Headers, new_headers: Headers) -> list[tuple[str, str]]:
    """The stored headers updated with a 304's (RFC 9111 sections 3.2 and 4.3.4).

    Every field of the 304 replaces all stored lines of that field (at the position of the
    first one); fields the stored response lacks are appended in the 304's order. Not taken
    from the 304: the fields :func:`storable_headers` removes, and the stored body's framing
    (``Content-Length``, ``Content-Encoding``, ``Transfer-Encoding``, ``Content-Range``).
    """
    updates = [
        (name, value)
        for name, value in storable_headers(new_headers)
        if name.lower() not in _BODY_FRAMING
    ]
    by_name: dict[str, list[tuple[str, str]]] = {}
    for name, value in updates:
        by_name.setdefault(name.lower(), []).append((name, value))
    result: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in storable_headers(stored_headers):
        lower = name.lower()
        if lower not in by_name:
            result.append((name, value))
        elif lower not in placed:
            result.extend(by_name[lower])
            placed.add(lower)
    result.extend((name, value) for name, value in updates if name.lower() not in placed)
    return result


# -- Vary ---------------------------------------------------------------------------------------


def _normalized(headers: Headers, name: str) -> str | None:
    """The request's value of ``name`` for Vary matching, or None when the field is absent.

    Lines are combined with ``", "`` and whitespace around commas collapses to one space
    (RFC 9111 section 4.1 allows such normalization); case is preserved; a NUL becomes SP.
    """
    lines = [value.strip() for field, value in headers if field.lower() == name]
    if not lines:
        return None
    combined = _COMMA_SPACES.sub(", ", ", ".join(lines))
    return combined.replace("\x00", " ")


def vary_key(
    response_headers: Headers, request_headers: Headers
) -> tuple[tuple[str, str], ...] | None:
    """The secondary cache key of RFC 9111 section 4.1.

    For each field named by the response's ``Vary`` (lowercased, deduplicated, sorted), the
    request's normalized value; a field the request lacks is recorded as ``"\\x00"`` (no
    normalized value can contain a NUL), so "absent" and "empty" differ. ``()`` when the
    response has no ``Vary``; None when ``Vary`` contains ``*`` (the entry never matches).
    """
    names = {name.lower() for name in header_values(response_headers, "vary")}
    if "*" in names:
        return None
    key: list[tuple[str, str]] = []
    for name in sorted(names):
        value = _normalized(request_headers, name)
        key.append((name, _ABSENT if value is None else value))
    return tuple(key)


def vary_matches(stored: tuple[tuple[str, str], ...] | None, request_headers: Headers) -> bool:
    """Whether a request selects an entry whose :func:`vary_key` is ``stored``.

    Every listed field must have the same normalized value in the request; a field absent from
    both matches, absent from one only does not. A None key (``Vary: *``) never matches.
    """
    if stored is None:
        return False
    for name, value in stored:
        current = _normalized(request_headers, name.lower())
        if (_ABSENT if current is None else current) != value:
            return False
    return True


# -- using a stored response --------------------------------------------------------------------


class Use(enum.Enum):
    """What to do with a stored response."""

    FRESH = "fresh"
    """Serve it from the cache."""
    STALE_OK = "stale_ok"
    """It is stale, but the request's ``max-stale`` allows serving it."""
    REVALIDATE = "revalidate"
    """Send a conditional request first."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of :func:`evaluate`, with the numbers behind it (for logs and headers)."""

    use: Use
    age: float
    """Current age, seconds."""
    lifetime: float
    """Freshness lifetime, seconds."""
    staleness: float
    """``max(0, age - lifetime)``."""
    heuristic: bool
    """Whether the lifetime is a heuristic guess (RFC 9111 section 4.2.2)."""


def _request_no_cache(request_headers: Headers, request_cc: CacheControl) -> bool:
    """``no-cache`` in the request, or ``Pragma: no-cache`` without ``Cache-Control`` (5.4)."""
    if request_cc.no_cache:
        return True
    if any(name.lower() == "cache-control" for name, _ in request_headers):
        return False
    return any(value.lower() == "no-cache" for value in header_values(request_headers, "pragma"))


def _forbids_stale(cc: CacheControl, shared: bool) -> bool:
    """Whether the response forbids serving it stale without revalidation (RFC 9111 4.2.4)."""
    if cc.must_revalidate or cc.no_cache:
        return True
    return shared and (cc.proxy_revalidate or cc.s_maxage is not None)


def evaluate(
    status: int,
    response_headers: Headers,
    request_headers: Headers,
    *,
    request_time: float,
    response_time: float,
    now: float,
    shared: bool = False,
    heuristic_fraction: float = 0.1,
    heuristic_cap: float = 86_400.0,
) -> Verdict:
    """May a stored response answer this request as is (RFC 9111 sections 4.2 and 5.2.1)?

    In order:

    1. ``no-cache`` in the request (or ``Pragma: no-cache`` when it has no ``Cache-Control``)
       or in the response: REVALIDATE.
    2. The request's ``max-age=N`` and ``age > N``: REVALIDATE.
    3. Fresh (``lifetime > age``) and, with the request's ``min-fresh=N``,
       ``lifetime - age >= N``: FRESH.
    4. Still fresh but not fresh enough for ``min-fresh``: REVALIDATE.
    5. Stale and the response says ``must-revalidate`` (when shared, also ``proxy-revalidate``
       or ``s-maxage``): REVALIDATE, whatever the request's ``max-stale``.
    6. Stale by at most the request's ``max-stale``: STALE_OK.
    7. Otherwise REVALIDATE.

    ``only-if-cached`` is the transport's business (answer 504 rather than go to the network).

    Args:
        status: the stored response's status.
        response_headers: the stored response's headers.
        request_headers: the new request's headers.
        request_time: when the stored response's request was sent.
        response_time: when the stored response was received.
        now: the current time.
        shared: apply shared-cache rules.
        heuristic_fraction: see :func:`freshness_lifetime`.
        heuristic_cap: see :func:`freshness_lifetime`.
    """
    stored = stored_facts(
        status,
        response_headers,
        request_time=request_time,
        response_time=response_time,
        shared=shared,
        heuristic_fraction=heuristic_fraction,
        heuristic_cap=heuristic_cap,
    )
    return judge(stored, request_headers, response_time=response_time, now=now, shared=shared)


@dataclass(frozen=True, slots=True)
class StoredFacts:
    """What :func:`evaluate` needs of a stored response that does not change while it is stored.

    A transport can keep these per entry and call :func:`judge` alone on each hit.
    """

    cc: CacheControl
    initial_age: float  # the corrected initial age (RFC 9111 section 4.2.3)
    lifetime: float
    heuristic: bool


def stored_facts(
    status: int,
    response_headers: Headers,
    *,
    request_time: float,
    response_time: float,
    shared: bool = False,
    heuristic_fraction: float = 0.1,
    heuristic_cap: float = 86_400.0,
) -> StoredFacts:
    """The request-independent half of :func:`evaluate` (arguments as there)."""
    cc = parse_cache_control(response_headers)
    initial_age = current_age(
        response_headers, request_time=request_time, response_time=response_time, now=response_time
    )
    lifetime, heuristic = freshness_lifetime(
        status,
        response_headers,
        cc,
        shared=shared,
        heuristic_fraction=heuristic_fraction,
        heuristic_cap=heuristic_cap,
        received=response_time,
    )
    return StoredFacts(cc, initial_age, lifetime, heuristic)


def judge(
    stored: StoredFacts,
    request_headers: Headers,
    *,
    response_time: float,
    now: float,
    shared: bool = False,
    request_cc: CacheControl | None = None,
) -> Verdict:
    """The request-dependent half of :func:`evaluate`: the verdict at ``now`` for this request.

    ``request_cc``: the request's directives, when the caller parsed them already.
    """
    cc = stored.cc
    lifetime, heuristic = stored.lifetime, stored.heuristic
    if request_cc is None:
        request_cc = parse_cache_control(request_headers)
    age = max(0.0, stored.initial_age + (now - response_time))
    staleness = max(0.0, age - lifetime)

    def verdict(use: Use) -> Verdict:
        return Verdict(use, age, lifetime, staleness, heuristic)

    if _request_no_cache(request_headers, request_cc) or cc.no_cache:
        return verdict(Use.REVALIDATE)
    if request_cc.max_age is not None and age > request_cc.max_age:
        return verdict(Use.REVALIDATE)
    if lifetime > age:
        if request_cc.min_fresh is None or lifetime - age >= request_cc.min_fresh:
            return verdict(Use.FRESH)
        return verdict(Use.REVALIDATE)
    if _forbids_stale(cc, shared):
        return verdict(Use.REVALIDATE)
    if request_cc.max_stale is not None and staleness <= request_cc.max_stale:
        return verdict(Use.STALE_OK)
    return verdict(Use.REVALIDATE)


def stale_on_error(
    response_headers: Headers,
    request_headers: Headers,
    staleness: float,
    *,
    allowance: float = 0.0,
    shared: bool = False,
) -> bool:
    """May a stale response be served because revalidation failed (RFC 5861 section 4)?

    Revalidation failed means a 5xx, a connection error, a timeout or an open circuit. True
    when ``staleness`` is within the response's ``stale-if-error``, the request's
    ``stale-if-error``, or ``allowance`` (the user's policy, seconds).

    Our reading of RFC 9111 section 4.2.4: ``must-revalidate`` and ``no-cache`` in the response
    (and, when shared, ``proxy-revalidate`` and ``s-maxage``) forbid serving it stale, so they
    also veto the request's ``stale-if-error`` and ``allowance``; but an explicit
    ``stale-if-error`` in the same response is the origin's own permission for the error case,
    and it wins. ``no-cache`` in the request does not forbid it. ``staleness`` may be 0 (a
    fresh entry whose ``no-cache`` forced a revalidation).
    """
    staleness = max(0.0, staleness)
    cc = parse_cache_control(response_headers)
    if cc.stale_if_error is not None and staleness <= cc.stale_if_error:
        return True
    if _forbids_stale(cc, shared):
        return False
    request_cc = parse_cache_control(request_headers)
    if request_cc.stale_if_error is not None and staleness <= request_cc.stale_if_error:
        return True
    return staleness <= allowance


def stale_while_revalidate(
    response_headers: Headers, staleness: float, *, shared: bool = False
) -> bool:
    """May a stale response be served while it is revalidated in the background (RFC 5861 3)?

    True when ``0 < staleness <= stale-while-revalidate`` and the response does not forbid
    serving it stale (``must-revalidate``, ``no-cache``; when shared, ``proxy-revalidate`` and
    ``s-maxage``).
    """
    cc = parse_cache_control(response_headers)
    window = cc.stale_while_revalidate
    if window is None or _forbids_stale(cc, shared):
        return False
    return 0 < staleness <= window


# -- validation ---------------------------------------------------------------------------------


def conditional_headers(stored_headers: Headers) -> list[tuple[str, str]]:
    """The headers that make a request conditional on the stored response (RFC 9111 4.3.1).

    ``If-None-Match`` with the stored ``ETag`` (as is, weak or strong) and ``If-Modified-Since``
    with the stored ``Last-Modified`` when that is a valid HTTP-date; both when both exist,
    ``[]`` when neither does.
    """
    result: list[tuple[str, str]] = []
    etag = header(stored_headers, "etag")
    if etag:
        result.append(("If-None-Match", etag))
    last_modified = header(stored_headers, "last-modified")
    if last_modified and parse_http_date(last_modified, _REFERENCE_TIME) is not None:
        result.append(("If-Modified-Since", last_modified))
    return result


def _etag(value: str) -> tuple[bool, str]:
    """``(weak, opaque-tag)`` of an entity tag."""
    if value.startswith("W/"):
        return True, value[2:].strip()
    return False, value


def _same_date(stored: str, new: str) -> bool:
    """Two ``Last-Modified`` values name the same instant (or are the same text)."""
    if stored == new:
        return True
    first = parse_http_date(stored, _REFERENCE_TIME)
    return first is not None and first == parse_http_date(new, _REFERENCE_TIME)


def validators_match(stored_headers: Headers, new_headers: Headers) -> bool:
    """Whether a 304 applies to the stored response (RFC 9111 section 4.3.4).

    - The 304 has a strong ``ETag``: it must equal the stored one by strong comparison (RFC
      9110 section 8.8.3.2: neither is weak and the opaque tags are identical).
    - The 304 has a weak ``ETag``: weak comparison (``W/"x"`` matches a stored ``W/"x"`` or
      ``"x"``). Acceptable here because the cache sent ``If-None-Match`` for this one entry,
      so the server vouches for this entry's representation.
    - No ``ETag`` but a ``Last-Modified``: it must equal the stored one.
    - No validator at all: the 304 applies to the entry that was revalidated.

    False means the 304 cannot update the entry; the transport then re-fetches without
    conditions.
    """
    new_etag = header(new_headers, "etag")
    if new_etag:
        stored_etag = header(stored_headers, "etag")
        if not stored_etag:
            return False
        new_weak, new_tag = _etag(new_etag)
        stored_weak, stored_tag = _etag(stored_etag)
        if not new_weak and stored_weak:
            return False
        return new_tag == stored_tag
    new_modified = header(new_headers, "last-modified")
    if new_modified:
        stored_modified = header(stored_headers, "last-modified")
        return stored_modified is not None and _same_date(stored_modified, new_modified)
    return True


# -- invalidation -------------------------------------------------------------------------------


def invalidates(method: str, status: int) -> bool:
    """Whether a response to ``method`` evicts stored responses (RFC 9111 section 4.4).

    True for an unsafe method (anything but GET, HEAD, OPTIONS, TRACE) answered with a 2xx or
    3xx status.
    """
    return method not in _SAFE_METHODS and 200 <= status < 400


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` with the default port filled in, or None for a broken URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme)


def invalidation_targets(request_url: str, response_headers: Headers) -> list[str]:
    """The URLs whose stored responses an unsafe request invalidates (RFC 9111 section 4.4).

    The request URL, plus ``Location`` and ``Content-Location`` resolved against it when they
    have the same scheme, host and port (so a response cannot evict another origin's
    entries). Fragments are dropped; the list has no duplicates; a malformed URL is skipped.
    """
    targets = [urldefrag(request_url).url]
    origin = _origin(request_url)
    for name in ("location", "content-location"):
        value = header(response_headers, name)
        if not value or origin is None:
            continue
        try:
            target = urldefrag(urljoin(request_url, value)).url
        except ValueError:
            continue
        if _origin(target) == origin and target not in targets:
            targets.append(target)
    return targets


def age_header(age: float) -> str:
    """The ``Age`` field value for a response of this age: whole seconds in ``[0, MAX_DELTA]``."""
    if math.isnan(age) or age <= 0:
        return "0"
    return str(int(min(age, MAX_DELTA)))
