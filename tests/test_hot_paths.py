"""The shortcuts of the per-request hot paths give exactly what the general paths give.

The cache's lookup key skips decoding a request's headers when none of them matters to the
lookup, the cache skips parsing a response that can never be worth storing, and the retry
layer leaves the timeouts alone while the deadline is far. Each shortcut is checked here
against the general rule it stands for, over generated inputs.
"""

from __future__ import annotations

import logging

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience._cache_rules import parse_cache_control, storable, vary_key
from resilience._transports._httpx import cap_timeouts, header_names
from resilience._transports.cache import _BYPASS_HEADERS, CacheTransport, _worth_storing
from resilience.testing import FakeClock

# names that matter to a lookup or to storing, and some that do not, in any letter case
_REQUEST_NAMES = [
    "accept",
    "accept-language",
    "user-agent",
    "cache-control",
    "pragma",
    "authorization",
    "cookie",
    "x-api-key",
    "if-none-match",
    "range",
    "x-custom",
]
_VALUES = st.sampled_from(["*/*", "no-cache", "max-age=0", "Bearer abc", "a=1", "en", "", "x y"])


def _cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.upper(), name.title()])


_request_headers = st.lists(
    st.tuples(st.sampled_from(_REQUEST_NAMES).flatmap(_cased), _VALUES), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(
    headers=_request_headers,
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
    overridden=st.booleans(),
)
def test_lookup_key_matches_the_decoded_headers(
    headers: list[tuple[str, str]], method: str, overridden: bool
) -> None:
    """The key's credentials, directives and headers are those of the decoded request.

    Under the transport's own policy and under a per-request one (which has other credential
    headers), since the transport keeps its own policy's shortcut names ready.
    """
    own = rs.Cache(methods=frozenset({"GET", "HEAD", "POST"}))
    transport = CacheTransport(httpx.MockTransport(lambda r: httpx.Response(200)), own)
    policy = own.replace(credential_headers=frozenset({"x-api-key"})) if overridden else own
    request = httpx.Request(method, "http://127.0.0.1/r?q=1", headers=headers, content=b"body")
    key = transport._key(request, policy)
    decoded = request.headers.multi_items()
    names = {name for name, _ in decoded}
    if method not in policy.methods or not names.isdisjoint(_BYPASS_HEADERS):
        assert key is None
        return
    assert key is not None
    assert key.headers == decoded
    assert key.credentials == policy.credentials(decoded)
    assert key.directives == parse_cache_control(decoded)
    body = b"body" if method == "POST" else None
    assert key.primary == policy.primary_key(method, "http://127.0.0.1/r?q=1", body)


_RESPONSE_FIELDS = {
    "cache-control": ["max-age=60", "no-store", "stale-if-error=30", "no-cache", "public"],
    "expires": ["Thu, 01 Jan 2099 00:00:00 GMT", "0"],
    "etag": ['"v1"'],
    "last-modified": ["Thu, 01 Jan 2015 00:00:00 GMT"],
    "vary": ["accept", "*"],
    "content-type": ["application/json"],
    "content-length": ["2"],
    "date": ["Thu, 01 Jan 2026 00:00:00 GMT"],
}
_response_headers = st.dictionaries(
    st.sampled_from(sorted(_RESPONSE_FIELDS)), st.integers(0, 4), max_size=5
).map(lambda d: [(n, _RESPONSE_FIELDS[n][i % len(_RESPONSE_FIELDS[n])]) for n, i in d.items()])


@settings(max_examples=300, deadline=None)
@given(
    headers=_response_headers,
    status=st.sampled_from([200, 203, 204, 301, 404, 410, 500, 503]),
    stale_if_error=st.sampled_from([0.0, 30.0]),
    heuristic=st.sampled_from([0.0, 0.1]),
)
def test_miss_shortcut_only_skips_responses_never_worth_storing(
    headers: list[tuple[str, str]], status: int, stale_if_error: float, heuristic: float
) -> None:
    """What ``_miss`` skips unparsed, the full rule (``_worth_storing``) would skip too."""
    clock = FakeClock(wall=1_767_225_600.0)
    policy = rs.Cache(stale_if_error=stale_if_error, heuristic_fraction=heuristic, clock=clock)
    transport = CacheTransport(httpx.MockTransport(lambda r: httpx.Response(200)), policy)
    request = httpx.Request("GET", "http://127.0.0.1/r")
    key = transport._key(request, policy)
    assert key is not None
    response = httpx.Response(status, headers=headers, content=b"ok", request=request)
    meta = transport._miss(response, policy, key, 1_767_225_600.0)
    assert response.extensions["resilience.cache"] == "miss"
    decoded = response.headers.multi_items()
    expected = (
        storable("GET", status, [], decoded) is None
        and _worth_storing(policy, status, decoded, 1_767_225_600.0)
        and vary_key(decoded, []) is not None
    )
    assert (meta is not None) == expected


@settings(max_examples=200, deadline=None)
@given(headers=st.lists(st.tuples(st.text("aBcD-xY", min_size=1), _VALUES), max_size=6))
def test_header_names_are_the_lowered_raw_names(headers: list[tuple[str, str]]) -> None:
    """Pins httpx 0.28's internal header list, which ``header_names`` reads."""
    parsed = httpx.Headers(headers)
    assert header_names(parsed) == [name.lower() for name, _ in parsed.raw]


def _request(timeout: httpx.Timeout) -> httpx.Request:
    return httpx.Request("GET", "http://127.0.0.1/", extensions={"timeout": timeout.as_dict()})


def test_far_deadline_leaves_the_timeouts_untouched() -> None:
    request = _request(httpx.Timeout(5.0))
    before = request.extensions["timeout"]
    assert cap_timeouts(request, 60.0) == frozenset()
    assert request.extensions["timeout"] is before  # not even copied
    assert set(request.extensions) == {"timeout"}


def test_near_deadline_caps_from_the_callers_timeouts() -> None:
    """Later attempts cap from the caller's timeouts, never from an earlier cap."""
    request = _request(httpx.Timeout(5.0, read=30.0))
    assert cap_timeouts(request, 20.0) == frozenset({"read"})
    assert request.extensions["timeout"]["read"] == 20.0
    assert cap_timeouts(request, 2.0) == frozenset({"connect", "read", "write", "pool"})
    assert request.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 2.0)


def test_unbounded_timeout_is_always_capped() -> None:
    request = _request(httpx.Timeout(None))
    assert cap_timeouts(request, 600.0) == frozenset({"connect", "read", "write", "pool"})
    assert request.extensions["timeout"]["pool"] == 600.0


_url_parts = st.text(alphabet="aZ0-._~%/?=&#:@+ é", max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    urls=st.lists(
        st.tuples(
            st.sampled_from(["http", "https"]),
            st.sampled_from(["127.0.0.1", "localhost", "[::1]", "user:pw@127.0.0.1"]),
            st.sampled_from(["", ":80", ":443", ":8080"]),
            _url_parts,
        ),
        min_size=1,
        max_size=8,
    ),
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_remembered_primary_keys_are_those_of_the_url_string(
    urls: list[tuple[str, str, str, str]], method: str
) -> None:
    """The memo by parsed URL parts gives what hashing ``str(url)`` gives, URL after URL."""
    from resilience._transports.cache import _primary_key

    policy = rs.Cache()
    for scheme, host, port, rest in urls:
        try:
            url = httpx.URL(f"{scheme}://{host}{port}/{rest}")
        except httpx.InvalidURL:
            continue
        for _ in range(2):  # the second time from the memo
            assert _primary_key(policy, method, url) == policy.primary_key(method, str(url))


@settings(max_examples=200, deadline=None)
@example(  # "resilience.http" quieter than "resilience": retry and breaker events still go out
    library_level=logging.INFO,
    http_level=logging.ERROR,
    handler=None,
    propagate=True,
    level="info",
    failure_level="warning",
    user_logger=None,
)
@given(
    library_level=st.sampled_from([logging.NOTSET, logging.DEBUG, logging.INFO, logging.WARNING]),
    http_level=st.sampled_from([logging.NOTSET, logging.INFO, logging.ERROR]),
    handler=st.sampled_from([None, "resilience", "resilience.http"]),
    propagate=st.booleans(),
    level=st.sampled_from(["debug", "info", "warning", "error"]),
    failure_level=st.sampled_from(["info", "warning", "error"]),
    user_logger=st.sampled_from([None, logging.DEBUG, logging.WARNING, logging.CRITICAL]),
)
def test_quiet_is_what_the_sinks_and_the_library_loggers_say(
    library_level: int,
    http_level: int,
    handler: str | None,
    propagate: bool,
    level: str,
    failure_level: str,
    user_logger: int | None,
) -> None:
    """Log.quiet() (inline, per request) == no sink for either level and library loggers off."""
    import structlog

    from resilience._logging import library_logging_enabled

    library, http = logging.getLogger("resilience"), logging.getLogger("resilience.http")
    saved = library.level, http.level
    null = logging.NullHandler()
    try:
        library.setLevel(library_level)
        http.setLevel(http_level)
        http.propagate = propagate
        if handler is not None:
            logging.getLogger(handler).addHandler(null)
        logger = (
            None
            if user_logger is None
            else structlog.wrap_logger(
                structlog.testing.CapturingLogger(),
                wrapper_class=structlog.make_filtering_bound_logger(user_logger),
            )
        )
        log = rs.Log(logger, level=level, failure_level=failure_level)
        # the rule: nothing of this policy's can be emitted, and no library logger is on
        rule = log.sinks() == (None, None) and not library_logging_enabled()
        assert log.quiet() == rule
    finally:
        library.setLevel(saved[0])
        http.setLevel(saved[1])
        http.propagate = True
        library.removeHandler(null)
        http.removeHandler(null)


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from([200, 204, 301, 404, 429, 500, 502, 503, 504]),
    failure_statuses=st.frozensets(st.sampled_from([404, 429, 500, 503]), max_size=3),
    predicate=st.sampled_from([None, "never", "always"]),
)
def test_breaker_inline_outcome_is_the_general_rule(
    status: int, failure_statuses: frozenset[int], predicate: str | None
) -> None:
    """The breaker's inline success check records what ``_response_outcome`` decides.

    Observed through the circuit: with ``fail_max=2``, a failure, then ``status``, then a
    failure open it unless ``status`` was a success (a success resets the count); with
    ``fail_max=1``, ``status`` alone opens it when it is a failure.
    """
    from resilience._breaker import Outcome
    from resilience._transports.breaker import CircuitBreakerTransport

    is_failure = {
        None: None,
        "never": lambda outcome: False,
        "always": lambda outcome: True,
    }[predicate]
    expected = CircuitBreakerTransport._response_outcome(
        rs.CircuitBreaker(failure_statuses=failure_statuses, is_failure=is_failure),
        httpx.Response(status),
    )

    def opened(fail_max: int, sent: list[int]) -> bool:
        """Whether the circuit is open after answering ``sent`` (599: a failure) in turn."""
        answers = iter(sent)
        policy = rs.CircuitBreaker(
            fail_max=fail_max, failure_statuses=failure_statuses | {599}, is_failure=is_failure
        )
        transport = CircuitBreakerTransport(
            httpx.MockTransport(lambda request: httpx.Response(next(answers))), policy
        )
        for _ in sent:
            try:
                transport.handle_request(httpx.Request("GET", "http://127.0.0.1/b"))
            except rs.CircuitOpenError:
                return True  # opened before the last answer
        return policy.state("http://127.0.0.1:80") == "open"

    alone = opened(fail_max=1, sent=[status])
    between_failures = opened(fail_max=2, sent=[599, status, 599])
    if expected is Outcome.FAILURE:
        assert alone
    elif expected is Outcome.SUCCESS:  # resets the count of failures before it
        assert not alone
        assert not between_failures
    else:  # neutral: counts nothing, resets nothing
        assert not alone
        assert between_failures


_LOGGER_NAMES = ["resilience.http", "resilience", ""]  # "" is the root logger
_CHANGES = st.one_of(
    st.tuples(
        st.just("level"), st.sampled_from(_LOGGER_NAMES), st.sampled_from([0, 10, 20, 30, 40])
    ),
    st.tuples(st.just("handler"), st.sampled_from(_LOGGER_NAMES), st.booleans()),
    st.tuples(st.just("propagate"), st.sampled_from(_LOGGER_NAMES[:2]), st.booleans()),
    st.tuples(st.just("disabled"), st.sampled_from(_LOGGER_NAMES[:2]), st.booleans()),
    st.tuples(st.just("disable"), st.just(""), st.sampled_from([0, 20, 30, 50])),
)


@settings(max_examples=150, deadline=None)
@given(
    changes=st.lists(_CHANGES, min_size=1, max_size=12),
    level=st.sampled_from(["debug", "info", "warning"]),
    failure_level=st.sampled_from(["info", "warning", "error"]),
)
def test_quiet_memo_follows_every_change_of_the_loggers(
    changes: list[tuple[str, str, object]], level: str, failure_level: str
) -> None:
    """One Log asked after each change of levels, handlers, propagation or disabling: its
    remembered answer is always the rule's answer for the loggers as they are now."""
    from resilience._logging import library_logging_enabled

    log = rs.Log(level=level, failure_level=failure_level)
    loggers = {name: logging.getLogger(name) for name in _LOGGER_NAMES}
    saved = {
        name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
        for name, lg in loggers.items()
    }
    null = logging.NullHandler()
    loggers[""].handlers[:] = []  # pytest's own capture handlers would hide the root's part
    try:
        for kind, name, value in changes:
            logger = loggers[name]
            if kind == "level":
                assert isinstance(value, int)
                logger.setLevel(value)
            elif kind == "handler":
                (logger.addHandler if value else logger.removeHandler)(null)
            elif kind == "propagate":
                logger.propagate = bool(value)
            elif kind == "disabled":
                logger.disabled = bool(value)
            else:
                assert isinstance(value, int)
                logging.disable(value)
            rule = log.sinks() == (None, None) and not library_logging_enabled()
            assert log.quiet() == rule, (kind, name, value)
            assert log.quiet() == rule  # the second time from the memo
    finally:
        logging.disable(logging.NOTSET)
        for name, (lvl, handlers, propagate, disabled) in saved.items():
            logger = loggers[name]
            logger.setLevel(lvl)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled
