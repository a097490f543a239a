"""RFC 9111 / RFC 5861 decisions of the cache: plain numbers in, decisions out, no clock."""

from __future__ import annotations

import math
from email.utils import formatdate
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience._cache_rules import (
    HEURISTIC_STATUSES,
    MAX_DELTA,
    CacheControl,
    Headers,
    Use,
    age_header,
    conditional_headers,
    current_age,
    evaluate,
    freshen,
    freshness_lifetime,
    header,
    header_values,
    invalidates,
    invalidation_targets,
    parse_cache_control,
    stale_on_error,
    stale_while_revalidate,
    storable,
    storable_headers,
    validators_match,
    vary_key,
    vary_matches,
)

T0 = 1_750_000_000.0  # a whole second, so date arithmetic is exact
DAY = 86_400.0


def http_date(epoch: float) -> str:
    """``epoch`` as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return formatdate(epoch, usegmt=True)


def cc(value: str) -> CacheControl:
    """``Cache-Control: value`` parsed."""
    return parse_cache_control([("Cache-Control", value)])


def lifetime(headers: Headers, status: int = 200, **kwargs: Any) -> tuple[float, bool]:
    """The freshness lifetime of a response with ``headers``."""
    return freshness_lifetime(status, headers, parse_cache_control(headers), **kwargs)


def judge(
    response: Headers,
    request: Headers = (),
    *,
    age: float = 0.0,
    status: int = 200,
    shared: bool = False,
) -> tuple[Use, float]:
    """``evaluate`` for a response received at T0 (Date T0, no delay) looked at ``age`` later."""
    verdict = evaluate(
        status,
        [("Date", http_date(T0)), *response],
        request,
        request_time=T0,
        response_time=T0,
        now=T0 + age,
        shared=shared,
    )
    return verdict.use, verdict.staleness


# -- header access ------------------------------------------------------------------------------


def test_header_values_split_lines_and_commas() -> None:
    """List members come from every line, split on commas, stripped, empty ones dropped."""
    headers = [("Vary", "Accept,  accept-encoding ,,"), ("vary", " Origin"), ("Other", "x")]
    assert header_values(headers, "VARY") == ["Accept", "accept-encoding", "Origin"]


def test_header_values_keep_commas_inside_quoted_strings() -> None:
    """A comma inside a quoted string (with an escaped quote) does not split the member."""
    headers = [("Cache-Control", 'no-cache="a, b", private="x\\", y", max-age=1')]
    assert header_values(headers, "cache-control") == [
        'no-cache="a, b"',
        'private="x\\", y"',
        "max-age=1",
    ]


def test_header_returns_the_first_line_unsplit() -> None:
    """A single-valued field keeps its commas (dates have one) and the first line wins."""
    headers = [("date", " Sun, 06 Nov 1994 08:49:37 GMT "), ("Date", "later")]
    assert header(headers, "Date") == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert header(headers, "Expires") is None


# -- Cache-Control ------------------------------------------------------------------------------


def test_cache_control_quoted_argument_is_accepted() -> None:
    """RFC 9111 5.2: ``max-age="5"`` must be read like ``max-age=5``."""
    assert cc('max-age="5"').max_age == 5


def test_cache_control_names_are_case_insensitive() -> None:
    """``MAX-AGE``, ``No-Store`` and ``Must-Revalidate`` are the known directives."""
    parsed = cc("MAX-AGE=60, No-Store, Must-Revalidate")
    assert (parsed.max_age, parsed.no_store, parsed.must_revalidate) == (60, True, True)


def test_cache_control_unknown_directives_are_ignored() -> None:
    """The RFC's extension example ``community="UCI"`` changes nothing."""
    assert cc('private, community="UCI", foo=bar, baz') == CacheControl(private=True)


def test_cache_control_reads_every_line() -> None:
    """Directives on separate field lines are combined."""
    parsed = parse_cache_control([("Cache-Control", "public"), ("cache-control", "max-age=9")])
    assert parsed == CacheControl(public=True, max_age=9)


@pytest.mark.parametrize(
    "value", ["max-age=abc", "max-age=-1", "max-age", "max-age=", "max-age=1.5", "max-age=١٢"]
)
def test_cache_control_invalid_max_age_means_stale(value: str) -> None:
    """An invalid max-age (not ASCII digits, negative, missing) is read as 0: already stale."""
    assert cc(value).max_age == 0


@pytest.mark.parametrize(
    ("value", "attribute"),
    [
        ("s-maxage=abc", "s_maxage"),
        ("min-fresh=-1", "min_fresh"),
        ("stale-if-error=soon", "stale_if_error"),
        ("stale-while-revalidate", "stale_while_revalidate"),
        ("max-stale=abc", "max_stale"),
    ],
)
def test_cache_control_invalid_other_deltas_are_ignored(value: str, attribute: str) -> None:
    """An invalid value of any delta directive but max-age leaves it unset."""
    assert getattr(cc(value), attribute) is None


def test_cache_control_bare_max_stale_means_any_staleness() -> None:
    """``max-stale`` with no value accepts any staleness; with a value, that many seconds."""
    assert cc("max-stale").max_stale == MAX_DELTA
    assert cc("max-stale=10").max_stale == 10


@pytest.mark.parametrize("digits", [11, 20, 100_000])
def test_cache_control_huge_values_clamp(digits: int) -> None:
    """Delta-seconds beyond 2**31 clamp to MAX_DELTA, even 100,000 digits long (no int() limit)."""
    assert cc("max-age=" + "9" * digits).max_age == MAX_DELTA
    assert cc("max-age=" + "0" * digits + "7").max_age == 7


def test_cache_control_duplicates_keep_the_smallest() -> None:
    """A directive given twice, on one line or two, keeps its most restrictive (smallest) value."""
    assert cc("max-age=60, max-age=30").max_age == 30
    headers = [("Cache-Control", "stale-if-error=5"), ("Cache-Control", "stale-if-error=500")]
    assert parse_cache_control(headers).stale_if_error == 5
    assert cc("max-age=60, max-age=oops").max_age == 0


def test_cache_control_qualified_no_cache_and_private_are_plain() -> None:
    """``no-cache="Set-Cookie"`` counts as no-cache and ``private="x"`` as private."""
    parsed = cc('no-cache="Set-Cookie, X-Id", private="x"')
    assert (parsed.no_cache, parsed.private) == (True, True)


def test_cache_control_request_and_rfc5861_directives() -> None:
    """Request directives and the RFC 5861 extensions are parsed."""
    parsed = cc(
        "only-if-cached, min-fresh=20, max-stale=30, stale-if-error=300, "
        "stale-while-revalidate=60, immutable, proxy-revalidate, s-maxage=7"
    )
    assert parsed == CacheControl(
        only_if_cached=True,
        min_fresh=20,
        max_stale=30,
        stale_if_error=300,
        stale_while_revalidate=60,
        immutable=True,
        proxy_revalidate=True,
        s_maxage=7,
    )


def test_cache_control_absent_is_all_defaults() -> None:
    """No Cache-Control field gives every default."""
    assert parse_cache_control([("Content-Type", "text/plain")]) == CacheControl()


@pytest.mark.parametrize(
    "value",
    [
        "\x00\xff\ud800",
        "=",
        "==,=,=60",
        "," * 100_000,
        '"unterminated, max-age=5',
        'max-age="60',
        'max-age="6\\0"',
        "no-cache=" * 10_000,
    ],
)
def test_cache_control_garbage_never_raises(value: str) -> None:
    """Binary junk, lone equals signs, 100 KB of commas and broken quotes parse quietly."""
    parsed = cc(value)
    assert parsed.max_age is None or 0 <= parsed.max_age <= MAX_DELTA


DELTA_ATTRIBUTES = (
    "max_age",
    "s_maxage",
    "max_stale",
    "min_fresh",
    "stale_if_error",
    "stale_while_revalidate",
)
DIRECTIVES = st.sampled_from(
    [
        "max-age",
        "s-maxage",
        "max-stale",
        "min-fresh",
        "stale-if-error",
        "stale-while-revalidate",
        "no-cache",
        "no-store",
        "private",
        "public",
        "must-revalidate",
        "only-if-cached",
        "x-ext",
    ]
)
DIRECTIVE_TEXT = st.lists(
    st.tuples(
        DIRECTIVES,
        st.one_of(
            st.none(),
            st.integers(-5, 10**40).map(str),
            st.text(max_size=8),
            st.integers(0, 10**12).map(lambda n: f'"{n}"'),
        ),
    ).map(lambda pair: pair[0] if pair[1] is None else f"{pair[0]}={pair[1]}"),
    max_size=6,
).map(", ".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), DIRECTIVE_TEXT), st.lists(st.text(max_size=30), max_size=3))
def test_cache_control_never_raises_and_stays_in_range(value: str, more: list[str]) -> None:
    """Any text on any number of lines parses, and every delta is within [0, MAX_DELTA]."""
    parsed = parse_cache_control([("Cache-Control", value)] + [("cache-control", m) for m in more])
    for attribute in DELTA_ATTRIBUTES:
        seconds = getattr(parsed, attribute)
        assert seconds is None or (isinstance(seconds, int) and 0 <= seconds <= MAX_DELTA)


# -- current age (RFC 9111 4.2.3) ----------------------------------------------------------------


def age(headers: Headers, request_time: float, response_time: float, now: float) -> float:
    """``current_age`` with positional times, for short tests."""
    return current_age(headers, request_time=request_time, response_time=response_time, now=now)


def test_current_age_without_headers_is_delay_plus_residence() -> None:
    """No Age, no Date: the age is the response delay plus the time spent in the cache."""
    assert age([], T0 - 2, T0, T0 + 10) == 12


def test_current_age_adds_the_age_header() -> None:
    """An upstream cache's ``Age: 100`` is added to the response delay and the resident time."""
    headers = [("Age", "100"), ("Date", http_date(T0))]
    assert age(headers, T0 - 1, T0, T0 + 5) == 100 + 1 + 5


def test_current_age_uses_the_apparent_age_when_larger() -> None:
    """A Date 50 s before receipt (slow path, no Age) makes the response 50 s old on arrival."""
    headers = [("Date", http_date(T0 - 50))]
    assert age(headers, T0 - 1, T0, T0 + 5) == 50 + 5


def test_current_age_takes_the_larger_of_apparent_and_corrected() -> None:
    """corrected_initial_age = max(apparent_age, age_value + response_delay)."""
    headers = [("Date", http_date(T0 - 50)), ("Age", "60")]
    assert age(headers, T0 - 3, T0, T0) == 63
    headers = [("Date", http_date(T0 - 50)), ("Age", "10")]
    assert age(headers, T0 - 3, T0, T0) == 50


@pytest.mark.parametrize(
    ("value", "expected"), [("abc", 0), ("-5", 0), ("5, 10", 5), ("1e3", 0), ("", 0)]
)
def test_current_age_reads_age_strictly(value: str, expected: int) -> None:
    """Invalid or negative Age counts as 0; a list-valued Age uses its first member (5.1)."""
    assert age([("Age", value)], T0, T0, T0) == expected


def test_current_age_clamps_a_huge_age() -> None:
    """An Age beyond 2**31 is clamped to MAX_DELTA."""
    assert age([("Age", "9" * 50)], T0, T0, T0) == MAX_DELTA


def test_current_age_ignores_future_and_invalid_dates() -> None:
    """A Date after receipt gives apparent age 0; an invalid Date stands for the receipt time."""
    assert age([("Date", http_date(T0 + 3600))], T0, T0, T0 + 1) == 1
    assert age([("Date", "yesterday")], T0, T0, T0 + 1) == 1


def test_current_age_is_never_negative() -> None:
    """A clock that went backwards (now before receipt) still gives an age of 0, not less."""
    assert age([], T0, T0, T0 - 100) == 0


TIMES = st.floats(0, 4e9, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    age_value=st.one_of(st.integers(-10, 10**12).map(str), st.text(max_size=5)),
    date_offset=st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    request_time=TIMES,
    delay=st.floats(-10, 1e4),
    now=TIMES,
    later=st.floats(0, 1e6),
)
def test_current_age_is_non_negative_and_monotone(
    age_value: str,
    date_offset: int | None,
    request_time: float,
    delay: float,
    now: float,
    later: float,
) -> None:
    """Whatever the headers and times, the age is >= 0 and never decreases as ``now`` grows."""
    response_time = request_time + delay
    headers: list[tuple[str, str]] = [("Age", age_value)]
    if date_offset is not None:
        headers.append(("Date", http_date(max(0, int(response_time) + date_offset))))
    first = age(headers, request_time, response_time, now)
    second = age(headers, request_time, response_time, now + later)
    assert first >= 0
    assert second >= first


# -- freshness lifetime (RFC 9111 4.2.1, 4.2.2) -------------------------------------------------

DATE = ("Date", http_date(T0))


def test_lifetime_max_age_wins_over_expires() -> None:
    """RFC 9111 5.3: with max-age present, Expires is ignored."""
    headers = [DATE, ("Cache-Control", "max-age=60"), ("Expires", http_date(T0 + 3600))]
    assert lifetime(headers) == (60.0, False)


def test_lifetime_s_maxage_only_in_a_shared_cache() -> None:
    """s-maxage overrides max-age in a shared cache and is ignored in a private one."""
    headers = [DATE, ("Cache-Control", "max-age=60, s-maxage=600")]
    assert lifetime(headers, shared=True) == (600.0, False)
    assert lifetime(headers) == (60.0, False)


def test_lifetime_rfc_expires_example() -> None:
    """RFC 9111 5.3's ``Expires: Thu, 01 Dec 1994 16:00:00 GMT``, one hour after Date."""
    headers = [
        ("Date", "Thu, 01 Dec 1994 15:00:00 GMT"),
        ("Expires", "Thu, 01 Dec 1994 16:00:00 GMT"),
    ]
    assert lifetime(headers) == (3600.0, False)


@pytest.mark.parametrize("expires", ["0", "-1", "never", "", http_date(T0 - 60)])
def test_lifetime_invalid_or_past_expires_is_zero(expires: str) -> None:
    """An invalid Expires (notably ``0``) means already expired, and blocks the heuristic."""
    headers = [DATE, ("Expires", expires), ("Last-Modified", http_date(T0 - 100 * DAY))]
    assert lifetime(headers) == (0.0, False)


def test_lifetime_expires_without_date_uses_the_receipt_time() -> None:
    """Without Date, Expires counts from ``received``; with neither, the lifetime is 0."""
    headers = [("Expires", http_date(T0 + 300))]
    assert lifetime(headers, received=T0) == (300.0, False)
    assert lifetime(headers) == (0.0, False)


def test_lifetime_far_expires_is_clamped() -> None:
    """An Expires in year 9999 clamps to MAX_DELTA."""
    headers = [DATE, ("Expires", "Fri, 31 Dec 9999 23:59:59 GMT")]
    assert lifetime(headers) == (float(MAX_DELTA), False)


def test_lifetime_heuristic_is_a_tenth_of_the_last_modified_age() -> None:
    """Modified 10 hours before Date: a heuristic lifetime of 1 hour (10%, RFC 9111 4.2.2)."""
    headers = [DATE, ("Last-Modified", http_date(T0 - 36_000))]
    assert lifetime(headers) == (3600.0, True)


def test_lifetime_heuristic_is_capped() -> None:
    """Modified a year ago: the heuristic lifetime is capped (one day unless told)."""
    headers = [DATE, ("Last-Modified", http_date(T0 - 365 * DAY))]
    assert lifetime(headers) == (DAY, True)
    assert lifetime(headers, heuristic_cap=60.0) == (60.0, True)
    assert lifetime(headers, heuristic_fraction=0.0) == (0.0, True)


@pytest.mark.parametrize(
    ("status", "heuristic"), [(200, True), (404, True), (302, False), (500, False)]
)
def test_lifetime_heuristic_only_for_heuristic_statuses(status: int, heuristic: bool) -> None:
    """Only statuses RFC 9110 15.1 calls heuristically cacheable get a heuristic lifetime."""
    headers = [DATE, ("Last-Modified", http_date(T0 - 36_000))]
    assert lifetime(headers, status=status) == ((3600.0, True) if heuristic else (0.0, False))


@pytest.mark.parametrize("modified", [http_date(T0 + 10), http_date(T0), "garbage"])
def test_lifetime_heuristic_needs_a_valid_earlier_last_modified(modified: str) -> None:
    """A Last-Modified at or after Date, or invalid, gives no heuristic lifetime."""
    assert lifetime([DATE, ("Last-Modified", modified)]) == (0.0, False)


def test_lifetime_without_any_information_is_zero() -> None:
    """A 200 with only an ETag has lifetime 0 (stored, but revalidated on every use)."""
    assert lifetime([DATE, ("ETag", '"v1"')]) == (0.0, False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("heuristic_fraction", -0.1),
        ("heuristic_fraction", 1.5),
        ("heuristic_cap", -1.0),
        ("heuristic_cap", math.nan),
    ],
)
def test_lifetime_rejects_bad_heuristic_settings(name: str, value: float) -> None:
    """A bad heuristic setting raises ValueError naming the argument and the value."""
    options: dict[str, Any] = {name: value}
    last_modified = ("Last-Modified", http_date(T0 - 86_400))  # the heuristic applies
    with pytest.raises(ValueError, match=rf"{name}.*{value}"):
        lifetime([DATE, last_modified], **options)


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from(sorted(HEURISTIC_STATUSES | {302, 500})),
    directives=DIRECTIVE_TEXT,
    expires=st.one_of(st.none(), st.integers(-(10**10), 10**11), st.text(max_size=6)),
    modified=st.one_of(st.none(), st.integers(-(10**10), 10**10)),
    shared=st.booleans(),
    fraction=st.floats(0, 1),
    cap=st.floats(0, 1e12),
)
def test_lifetime_stays_in_range(
    status: int,
    directives: str,
    expires: int | str | None,
    modified: int | None,
    shared: bool,
    fraction: float,
    cap: float,
) -> None:
    """The lifetime is within [0, MAX_DELTA], and a heuristic one never exceeds the cap."""
    headers = [DATE, ("Cache-Control", directives)]
    if isinstance(expires, int):
        headers.append(("Expires", http_date(max(0, T0 + expires))))
    elif expires is not None:
        headers.append(("Expires", expires))
    if modified is not None:
        headers.append(("Last-Modified", http_date(max(0, T0 + modified))))
    seconds, heuristic = lifetime(
        headers, status=status, shared=shared, heuristic_fraction=fraction, heuristic_cap=cap
    )
    assert 0 <= seconds <= MAX_DELTA
    if heuristic:
        assert seconds <= cap


# -- storable (RFC 9111 3) ------------------------------------------------------------------------


def store(
    response: Headers,
    request: Headers = (),
    *,
    method: str = "GET",
    status: int = 200,
    shared: bool = False,
) -> str | None:
    """``storable`` with defaults: a GET answered 200."""
    return storable(method, status, request, response, shared=shared)


def test_storable_with_explicit_freshness_or_only_a_validator() -> None:
    """A 200 with max-age is stored, and so is a 200 with only an ETag (heuristic status)."""
    assert store([("Cache-Control", "max-age=60")]) is None
    assert store([("ETag", '"v1"')]) is None


def test_storable_method_must_be_cacheable() -> None:
    """POST is refused by default and accepted when the methods say so."""
    assert store([("Cache-Control", "max-age=60")], method="POST") == "method POST not cacheable"
    assert (
        storable(
            "POST", 200, [], [("Cache-Control", "max-age=60")], methods=frozenset({"GET", "POST"})
        )
        is None
    )


@pytest.mark.parametrize("status", [100, 103, 206, 304])
def test_storable_refuses_interim_partial_and_not_modified(status: int) -> None:
    """1xx, 206 and a bare 304 are never stored."""
    reason = store([("Cache-Control", "max-age=60")], status=status)
    assert reason is not None
    assert str(status) in reason


def test_storable_refuses_no_store_in_request_or_response() -> None:
    """no-store on either side forbids storing."""
    assert store([("Cache-Control", "max-age=60, no-store")]) == "no-store"
    assert store([("Cache-Control", "max-age=60")], [("Cache-Control", "no-store")]) is not None


def test_storable_private_only_in_a_private_cache() -> None:
    """``private`` is fine for a private cache and refused by a shared one."""
    response = [("Cache-Control", "private, max-age=60")]
    assert store(response) is None
    assert store(response, shared=True) == "private in a shared cache"


@pytest.mark.parametrize(
    ("directives", "stored"),
    [
        ("max-age=60", False),
        ("public, max-age=60", True),
        ("s-maxage=60", True),
        ("must-revalidate, max-age=60", True),
    ],
)
def test_storable_authorization_in_a_shared_cache(directives: str, stored: bool) -> None:
    """RFC 9111 3.5: with Authorization a shared cache needs public, s-maxage, must-revalidate."""
    request = [("Authorization", "Bearer x")]
    response = [("Cache-Control", directives)]
    assert store(response, request) is None  # a private cache keys on the credentials instead
    reason = store(response, request, shared=True)
    assert (reason is None) is stored
    if not stored:
        assert reason == "Authorization in a shared cache"


@pytest.mark.parametrize(
    ("response", "shared", "expected"),
    [
        ([], False, "no explicit freshness for status 302"),
        ([("Cache-Control", "max-age=60")], False, None),
        ([("Expires", "0")], False, None),
        ([("Cache-Control", "public")], False, None),
        ([("Cache-Control", "private")], False, None),
        ([("Cache-Control", "s-maxage=60")], False, "no explicit freshness for status 302"),
        ([("Cache-Control", "s-maxage=60")], True, None),
        ([("Cache-Control", "stale-if-error=60")], False, "no explicit freshness for status 302"),
    ],
)
def test_storable_other_statuses_need_explicit_freshness(
    response: Headers, shared: bool, expected: str | None
) -> None:
    """A 302 is stored only with explicit freshness (s-maxage counts only when shared)."""
    assert store(response, status=302, shared=shared) == expected


def test_storable_vary_star_is_stored_but_never_matches() -> None:
    """``Vary: *`` may be stored; its secondary key is None, which matches no request."""
    response = [("Cache-Control", "max-age=60"), ("Vary", "*")]
    assert store(response) is None
    assert vary_key(response, []) is None
    assert vary_matches(None, []) is False


def test_storable_headers_drop_hop_by_hop_proxy_and_cookies() -> None:
    """Connection and what it names, hop-by-hop fields, proxy auth and Set-Cookie are dropped."""
    headers = [
        ("Content-Type", "text/plain"),
        ("Connection", "keep-alive, X-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("x-hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Set-Cookie", "a=1"),
        ("set-cookie2", "b=2"),
        ("Proxy-Authenticate", "Basic"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Trailer", "X-Sum"),
        ("Proxy-Connection", "close"),
        ("ETag", '"v1"'),
        ("Content-Length", "5"),
    ]
    assert storable_headers(headers) == [
        ("Content-Type", "text/plain"),
        ("ETag", '"v1"'),
        ("Content-Length", "5"),
    ]


# -- freshening after a 304 (RFC 9111 3.2, 4.3.4) ------------------------------------------------


def test_freshen_replaces_in_place_and_appends() -> None:
    """A 304's fields replace stored ones where they stand; new fields come last."""
    stored = [("Date", "old"), ("Cache-Control", "max-age=1"), ("ETag", '"v1"'), ("X-A", "1")]
    new = [("cache-control", "max-age=60"), ("X-New", "n"), ("Date", "new")]
    assert freshen(stored, new) == [
        ("Date", "new"),
        ("cache-control", "max-age=60"),
        ("ETag", '"v1"'),
        ("X-A", "1"),
        ("X-New", "n"),
    ]


def test_freshen_replaces_every_line_of_a_field() -> None:
    """Two stored Link lines give way to the 304's single Link line, at the first one's place."""
    stored = [("Link", "<a>"), ("X", "1"), ("Link", "<b>")]
    assert freshen(stored, [("link", "<c>")]) == [("link", "<c>"), ("X", "1")]


def test_freshen_keeps_the_stored_body_framing() -> None:
    """Content-Length, Content-Encoding, Content-Range, Set-Cookie and hop-by-hop stay out."""
    stored = [("Content-Length", "100"), ("Content-Encoding", "gzip"), ("ETag", '"v1"')]
    new = [
        ("Content-Length", "0"),
        ("Content-Encoding", "br"),
        ("Content-Range", "bytes 0-1/2"),
        ("Transfer-Encoding", "chunked"),
        ("Set-Cookie", "session=evil"),
        ("Connection", "X-Hop"),
        ("X-Hop", "1"),
        ("ETag", '"v1"'),
    ]
    assert freshen(stored, new) == stored


FIELD_NAMES = st.sampled_from(
    [
        "Content-Length",
        "content-length",
        "Set-Cookie",
        "SET-COOKIE",
        "Connection",
        "ETag",
        "Date",
        "X-A",
        "Content-Encoding",
        "Vary",
    ]
)
HEADER_LISTS = st.lists(st.tuples(FIELD_NAMES, st.text(max_size=12)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(stored=HEADER_LISTS, new=HEADER_LISTS)
def test_freshen_never_takes_length_or_cookies_from_the_304(
    stored: list[tuple[str, str]], new: list[tuple[str, str]]
) -> None:
    """Content-Length lines are the stored ones, and no Set-Cookie ever comes through."""
    result = freshen(stored, new)

    def lengths(headers: Headers) -> list[str]:
        return [value for name, value in headers if name.lower() == "content-length"]

    assert lengths(result) == lengths(storable_headers(stored))
    assert all(name.lower() != "set-cookie" for name, _ in result)


# -- Vary (RFC 9111 4.1) --------------------------------------------------------------------------


def test_vary_key_without_vary_is_empty() -> None:
    """No Vary: the empty key, which matches every request."""
    assert vary_key([("Content-Type", "text/plain")], [("Accept", "x")]) == ()
    assert vary_matches((), [("Accept", "y")]) is True


def test_vary_key_names_are_lowercased_sorted_and_deduplicated() -> None:
    """Field names from every Vary line are lowercased, sorted and listed once."""
    response = [("Vary", "Accept-Encoding, Accept"), ("vary", "accept-encoding")]
    request = [("Accept", "text/html"), ("Accept-Encoding", "gzip")]
    assert vary_key(response, request) == (("accept", "text/html"), ("accept-encoding", "gzip"))


def test_vary_star_among_other_names_never_matches() -> None:
    """``Vary: Accept, *`` gives no key at all."""
    assert vary_key([("Vary", "Accept, *")], [("Accept", "x")]) is None


def test_vary_normalizes_whitespace_and_lines_but_not_case() -> None:
    """``gzip,br``, ``gzip ,  br`` and two lines match; ``GZIP`` is a different value."""
    key = vary_key([("Vary", "Accept-Encoding")], [("Accept-Encoding", "gzip,br")])
    assert key == (("accept-encoding", "gzip, br"),)
    assert vary_matches(key, [("accept-encoding", " gzip ,  br ")]) is True
    assert vary_matches(key, [("Accept-Encoding", "gzip"), ("Accept-Encoding", "br")]) is True
    assert vary_matches(key, [("Accept-Encoding", "GZIP, br")]) is False
    assert vary_matches(key, [("Accept-Encoding", "br, gzip")]) is False


def test_vary_absent_matches_only_absent() -> None:
    """A field absent from both requests matches; absent from one, or empty, does not."""
    key = vary_key([("Vary", "Accept-Language")], [])
    assert vary_matches(key, [("Other", "1")]) is True
    assert vary_matches(key, [("Accept-Language", "en")]) is False
    assert vary_matches(key, [("Accept-Language", "")]) is False
    present = vary_key([("Vary", "Accept-Language")], [("Accept-Language", "en")])
    assert vary_matches(present, []) is False


REQUEST_NAMES = st.sampled_from(["Accept", "accept", "Accept-Encoding", "X-User", "Cookie"])


@settings(max_examples=200, deadline=None)
@given(
    vary=st.lists(st.sampled_from(["Accept", "ACCEPT-encoding", "x-user", "Origin", "*", ""])),
    request=st.lists(st.tuples(REQUEST_NAMES, st.text(max_size=10)), max_size=6),
)
def test_vary_key_always_matches_its_own_request(
    vary: list[str], request: list[tuple[str, str]]
) -> None:
    """The key computed from a request matches that same request, unless Vary is ``*``."""
    response = [("Vary", ", ".join(vary))]
    key = vary_key(response, request)
    if "*" in vary:
        assert key is None
    else:
        assert vary_matches(key, request) is True


# -- evaluate (RFC 9111 4.2, 5.2.1) --------------------------------------------------------------


def test_evaluate_fresh_with_its_numbers() -> None:
    """max-age=60 seen 10 s after receipt (sent 1 s before): fresh, age 11, staleness 0."""
    verdict = evaluate(
        200,
        [("Date", http_date(T0)), ("Cache-Control", "max-age=60")],
        [],
        request_time=T0 - 1,
        response_time=T0,
        now=T0 + 10,
    )
    assert (verdict.use, verdict.age, verdict.lifetime) == (Use.FRESH, 11, 60)
    assert (verdict.staleness, verdict.heuristic) == (0, False)


def test_evaluate_stale_revalidates() -> None:
    """Past its lifetime with no max-stale, a response is revalidated; staleness is reported."""
    assert judge([("Cache-Control", "max-age=60")], age=100) == (Use.REVALIDATE, 40)


def test_evaluate_lifetime_equal_to_age_is_stale() -> None:
    """A response is fresh only while lifetime > age (RFC 9111 4.2)."""
    assert judge([("Cache-Control", "max-age=60")], age=60) == (Use.REVALIDATE, 0)


def test_evaluate_request_no_cache_revalidates_a_fresh_response() -> None:
    """``Cache-Control: no-cache`` in the request forces validation."""
    response = [("Cache-Control", "max-age=600")]
    assert judge(response, [("Cache-Control", "no-cache")], age=1)[0] is Use.REVALIDATE


def test_evaluate_pragma_no_cache_counts_only_without_cache_control() -> None:
    """RFC 9111 5.4: Pragma: no-cache acts as no-cache only when Cache-Control is absent."""
    response = [("Cache-Control", "max-age=600")]
    assert judge(response, [("Pragma", "no-cache")], age=1)[0] is Use.REVALIDATE
    request = [("Pragma", "no-cache"), ("Cache-Control", "max-stale=5")]
    assert judge(response, request, age=1)[0] is Use.FRESH


def test_evaluate_response_no_cache_revalidates() -> None:
    """A fresh response marked no-cache is never served without validation."""
    response = [("Cache-Control", "max-age=600, no-cache")]
    assert judge(response, [("Cache-Control", "max-stale")], age=1)[0] is Use.REVALIDATE


def test_evaluate_request_max_age() -> None:
    """Request max-age=N: an age above N revalidates, an age of N or less is fine."""
    response = [("Cache-Control", "max-age=600")]
    assert judge(response, [("Cache-Control", "max-age=30")], age=31)[0] is Use.REVALIDATE
    assert judge(response, [("Cache-Control", "max-age=30")], age=30)[0] is Use.FRESH


def test_evaluate_request_min_fresh() -> None:
    """min-fresh=N needs N more seconds of freshness: 50 left passes 50, fails 51."""
    response = [("Cache-Control", "max-age=60")]
    assert judge(response, [("Cache-Control", "min-fresh=50")], age=10)[0] is Use.FRESH
    assert judge(response, [("Cache-Control", "min-fresh=51")], age=10)[0] is Use.REVALIDATE


def test_evaluate_request_max_stale() -> None:
    """max-stale=N serves up to N seconds of staleness; a bare max-stale serves any."""
    response = [("Cache-Control", "max-age=60")]
    assert judge(response, [("Cache-Control", "max-stale=40")], age=100) == (Use.STALE_OK, 40)
    assert judge(response, [("Cache-Control", "max-stale=39")], age=100)[0] is Use.REVALIDATE
    assert judge(response, [("Cache-Control", "max-stale")], age=1e9)[0] is Use.STALE_OK


@pytest.mark.parametrize(
    ("directives", "shared", "use"),
    [
        ("max-age=60, must-revalidate", False, Use.REVALIDATE),
        ("max-age=60, proxy-revalidate", False, Use.STALE_OK),
        ("max-age=60, proxy-revalidate", True, Use.REVALIDATE),
        ("s-maxage=60", True, Use.REVALIDATE),
    ],
)
def test_evaluate_revalidation_directives_beat_max_stale(
    directives: str, shared: bool, use: Use
) -> None:
    """must-revalidate (and proxy-revalidate, s-maxage when shared) forbid serving stale."""
    request = [("Cache-Control", "max-stale")]
    response = [("Cache-Control", directives)]
    assert judge(response, request, age=100, shared=shared)[0] is use


def test_evaluate_heuristic_freshness() -> None:
    """A 200 modified 10 h before its Date is fresh for an hour, flagged heuristic."""
    response = [("Last-Modified", http_date(T0 - 36_000))]
    verdict = evaluate(
        200,
        [("Date", http_date(T0)), *response],
        [],
        request_time=T0,
        response_time=T0,
        now=T0 + 100,
    )
    assert (verdict.use, verdict.lifetime, verdict.heuristic) == (Use.FRESH, 3600, True)


def test_evaluate_without_date_counts_expires_from_receipt() -> None:
    """With no Date, Expires counts from the response time the transport recorded."""
    verdict = evaluate(
        200,
        [("Expires", http_date(T0 + 300))],
        [],
        request_time=T0,
        response_time=T0,
        now=T0 + 10,
    )
    assert (verdict.use, verdict.lifetime) == (Use.FRESH, 300)


REQUEST_DIRECTIVES = st.lists(
    st.sampled_from(
        [
            "no-cache",
            "max-age=0",
            "max-age=30",
            "min-fresh=20",
            "max-stale",
            "max-stale=50",
            "only-if-cached",
            "no-store",
        ]
    ),
    max_size=3,
).map(", ".join)


@settings(max_examples=300, deadline=None)
@given(
    response_cc=DIRECTIVE_TEXT,
    request_cc=st.one_of(st.none(), REQUEST_DIRECTIVES),
    pragma=st.booleans(),
    modified=st.one_of(st.none(), st.integers(1, 10**7)),
    elapsed=st.floats(-10, 1e6),
    shared=st.booleans(),
)
def test_evaluate_fresh_means_not_stale_and_no_request_no_cache(
    response_cc: str,
    request_cc: str | None,
    pragma: bool,
    modified: int | None,
    elapsed: float,
    shared: bool,
) -> None:
    """FRESH only ever comes with staleness 0 and a request that did not ask for no-cache."""
    response = [("Date", http_date(T0)), ("Cache-Control", response_cc)]
    if modified is not None:
        response.append(("Last-Modified", http_date(T0 - modified)))
    request: list[tuple[str, str]] = [("Pragma", "no-cache")] if pragma else []
    if request_cc is not None:
        request.append(("Cache-Control", request_cc))
    verdict = evaluate(
        200, response, request, request_time=T0, response_time=T0, now=T0 + elapsed, shared=shared
    )
    assert verdict.staleness == max(0.0, verdict.age - verdict.lifetime)
    if verdict.use is Use.FRESH:
        assert verdict.staleness == 0
        assert verdict.lifetime > verdict.age
        assert not parse_cache_control(request).no_cache
        assert not (pragma and request_cc is None)


# -- stale-if-error and stale-while-revalidate (RFC 5861) ----------------------------------------


def test_stale_on_error_response_directive() -> None:
    """The response's stale-if-error=300 covers 300 s of staleness, not 301."""
    response = [("Cache-Control", "max-age=60, stale-if-error=300")]
    assert stale_on_error(response, [], 300) is True
    assert stale_on_error(response, [], 301) is False


def test_stale_on_error_request_directive_and_allowance() -> None:
    """The request's stale-if-error or the user's allowance can also permit it."""
    response = [("Cache-Control", "max-age=60")]
    assert stale_on_error(response, [("Cache-Control", "stale-if-error=100")], 100) is True
    assert stale_on_error(response, [], 100) is False
    assert stale_on_error(response, [], 100, allowance=100.0) is True


def test_stale_on_error_must_revalidate_forbids_all_but_the_response_directive() -> None:
    """must-revalidate vetoes the request's stale-if-error and the allowance, not its own."""
    response = [("Cache-Control", "max-age=60, must-revalidate")]
    request = [("Cache-Control", "stale-if-error=1000")]
    assert stale_on_error(response, request, 10, allowance=1000.0) is False
    own = [("Cache-Control", "max-age=60, must-revalidate, stale-if-error=20")]
    assert stale_on_error(own, [], 10) is True


def test_stale_on_error_no_cache() -> None:
    """Response no-cache forbids it (unless its own stale-if-error); request no-cache does not."""
    assert stale_on_error([("Cache-Control", "no-cache")], [], 0, allowance=60.0) is False
    assert stale_on_error([("Cache-Control", "no-cache, stale-if-error=60")], [], 0) is True
    fresh = [("Cache-Control", "max-age=60")]
    assert stale_on_error(fresh, [("Cache-Control", "no-cache")], 0) is True


def test_stale_on_error_shared_rules() -> None:
    """proxy-revalidate forbids it only in a shared cache."""
    response = [("Cache-Control", "max-age=60, proxy-revalidate")]
    assert stale_on_error(response, [], 5, allowance=10.0) is True
    assert stale_on_error(response, [], 5, allowance=10.0, shared=True) is False


@pytest.mark.parametrize(
    ("directives", "staleness", "allowed"),
    [
        ("max-age=60, stale-while-revalidate=30", 30, True),
        ("max-age=60, stale-while-revalidate=30", 0.5, True),
        ("max-age=60, stale-while-revalidate=30", 31, False),
        ("max-age=60, stale-while-revalidate=30", 0, False),
        ("max-age=60", 1, False),
        ("max-age=60, stale-while-revalidate=30, must-revalidate", 1, False),
        ("max-age=60, stale-while-revalidate=30, no-cache", 1, False),
    ],
)
def test_stale_while_revalidate(directives: str, staleness: float, allowed: bool) -> None:
    """RFC 5861 3: stale within the window, and never with must-revalidate or no-cache."""
    assert stale_while_revalidate([("Cache-Control", directives)], staleness) is allowed


# -- conditional requests and 304 selection (RFC 9111 4.3) ---------------------------------------


def test_conditional_headers_both_validators() -> None:
    """An ETag gives If-None-Match and a valid Last-Modified gives If-Modified-Since."""
    modified = http_date(T0 - DAY)
    stored = [("ETag", 'W/"v1"'), ("Last-Modified", modified)]
    assert conditional_headers(stored) == [
        ("If-None-Match", 'W/"v1"'),
        ("If-Modified-Since", modified),
    ]


def test_conditional_headers_skip_invalid_dates_and_empty_tags() -> None:
    """An invalid Last-Modified or empty ETag sends nothing; no validators gives []."""
    assert conditional_headers([("ETag", '"a"'), ("Last-Modified", "yesterday")]) == [
        ("If-None-Match", '"a"')
    ]
    assert conditional_headers([("ETag", "  "), ("Content-Type", "x")]) == []


@pytest.mark.parametrize(
    ("new", "stored", "matches"),
    [  # RFC 9110 8.8.3.2's table, read with the 304's tag first
        ('W/"1"', 'W/"1"', True),  # weak comparison
        ('W/"1"', 'W/"2"', False),
        ('W/"1"', '"1"', True),  # weak comparison
        ('"1"', '"1"', True),  # strong comparison
        ('"1"', 'W/"1"', False),  # a strong 304 tag needs a strong stored tag
        ('"1"', '"2"', False),
    ],
)
def test_validators_match_entity_tags(new: str, stored: str, matches: bool) -> None:
    """A 304 applies when its ETag matches the stored one (strong, or weak when it is weak)."""
    assert validators_match([("ETag", stored)], [("ETag", new)]) is matches


def test_validators_match_strong_tag_without_stored_tag() -> None:
    """A 304 with an ETag cannot update an entry that has none."""
    assert validators_match([("Last-Modified", http_date(T0))], [("ETag", '"1"')]) is False


def test_validators_match_last_modified() -> None:
    """Without an ETag, Last-Modified must name the same instant; with no validator, it applies."""
    stored = [("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")]
    assert validators_match(stored, [("Last-Modified", "Sun Nov  6 08:49:37 1994")]) is True
    assert validators_match(stored, [("Last-Modified", http_date(T0))]) is False
    assert validators_match([], [("Last-Modified", http_date(T0))]) is False
    assert validators_match(stored, [("Date", http_date(T0))]) is True


# -- invalidation (RFC 9111 4.4) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        ("POST", 201, True),
        ("PUT", 204, True),
        ("DELETE", 303, True),
        ("PATCH", 200, True),
        ("POST", 404, False),
        ("POST", 500, False),
        ("POST", 100, False),
        ("GET", 200, False),
        ("HEAD", 200, False),
        ("OPTIONS", 200, False),
        ("TRACE", 200, False),
    ],
)
def test_invalidates(method: str, status: int, expected: bool) -> None:
    """Unsafe methods answered 2xx or 3xx invalidate; safe methods and errors do not."""
    assert invalidates(method, status) is expected


def test_invalidation_targets_same_origin_only() -> None:
    """Location and Content-Location are resolved and kept only on the request's origin."""
    headers = [("Location", "/items/7#top"), ("Content-Location", "https://api.example:443/x")]
    assert invalidation_targets("https://api.example/items", headers) == [
        "https://api.example/items",
        "https://api.example/items/7",
        "https://api.example:443/x",
    ]
    foreign = [
        ("Location", "https://evil.example/items"),
        ("Content-Location", "http://api.example/y"),
    ]
    assert invalidation_targets("https://api.example/items", foreign) == [
        "https://api.example/items"
    ]


def test_invalidation_targets_deduplicate_and_skip_garbage() -> None:
    """A Location equal to the request URL is listed once; a malformed one is skipped."""
    url = "http://127.0.0.1:8000/a"
    assert invalidation_targets(url, [("Location", "/a"), ("Content-Location", "http://[::1")]) == [
        url
    ]
    assert invalidation_targets(url, [("Location", "http://127.0.0.1:bad/")]) == [url]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (-5.0, "0"),
        (1.9, "1"),
        (3600.0, "3600"),
        (1e30, str(MAX_DELTA)),
        (math.inf, str(MAX_DELTA)),
        (math.nan, "0"),
    ],
)
def test_age_header(value: float, expected: str) -> None:
    """Whole seconds, clamped to [0, MAX_DELTA]; NaN gives 0."""
    assert age_header(value) == expected
