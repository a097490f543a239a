"""The Retry policy: validation, the decision table (API.md 10.2) and RetryCall's decisions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import IDEMPOTENT, RETRY_STATUSES, Backoff, Retry, RetryBudget
from resilience._retry import Decision, Failure, RetryCall, Verdict
from resilience.testing import FakeClock

NOW = 1_750_000_000.0
NO_JITTER = Backoff(base=1.0, multiplier=2.0, cap=30.0, jitter="none")
RETRYABLE = Verdict(True, "status 503")


def classify(
    method: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    *,
    keyed: bool = False,
    replayable: bool = True,
    policy: Retry | None = None,
) -> Verdict:
    """The default policy's verdict on a response."""
    policy = policy or Retry()
    return policy.classify_response(
        method, status, headers or {}, keyed=keyed, replayable=replayable, now=NOW
    )


def failure(
    method: str,
    kind: Failure,
    *,
    keyed: bool = False,
    replayable: bool = True,
) -> Verdict:
    """The default policy's verdict on a failed attempt."""
    return Retry().classify_failure(method, kind, "boom", keyed=keyed, replayable=replayable)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"attempts": 0}, ValueError, r"Retry\.attempts.*0"),
        ({"attempts": -3}, ValueError, r"Retry\.attempts.*-3"),
        ({"attempts": 1.5}, TypeError, r"Retry\.attempts.*1\.5"),
        ({"attempts": True}, TypeError, r"Retry\.attempts.*True"),
        ({"backoff": 1.0}, TypeError, r"Retry\.backoff.*1\.0"),
        ({"statuses": {503, 99}}, ValueError, r"Retry\.statuses.*99"),
        ({"statuses": [600]}, ValueError, r"Retry\.statuses.*600"),
        ({"statuses": "500"}, TypeError, r"Retry\.statuses.*'500'"),
        ({"statuses": 500}, TypeError, r"Retry\.statuses.*500"),
        ({"statuses": ["500"]}, TypeError, r"Retry\.statuses.*'500'"),
        ({"statuses": [True]}, TypeError, r"Retry\.statuses.*True"),
        ({"methods": {"G ET"}}, ValueError, r"Retry\.methods.*'G ET'"),
        ({"methods": "GET"}, TypeError, r"Retry\.methods.*'GET'"),
        ({"methods": {1}}, ValueError, r"Retry\.methods.*1"),
        ({"max_retry_after": -1}, ValueError, r"Retry\.max_retry_after.*-1"),
        ({"max_retry_after": float("nan")}, ValueError, r"Retry\.max_retry_after.*nan"),
        ({"deadline": 0}, ValueError, r"Retry\.deadline.*0"),
        ({"deadline": -1}, ValueError, r"Retry\.deadline.*-1"),
        ({"deadline": "60"}, TypeError, r"Retry\.deadline.*'60'"),
        ({"budget": "x"}, TypeError, r"Retry\.budget.*'x'"),
        ({"read_body": "yes"}, TypeError, r"Retry\.read_body.*'yes'"),
        ({"respect_retry_after": 1}, TypeError, r"Retry\.respect_retry_after.*1"),
        ({"read_body_limit": -1}, ValueError, r"Retry\.read_body_limit.*-1"),
        ({"idempotency_header": ""}, ValueError, r"Retry\.idempotency_header.*''"),
        ({"on": int}, TypeError, r"Retry\.on.*int"),
        ({"on": (ValueError, "x")}, TypeError, r"Retry\.on.*'x'"),
        ({"on": ()}, ValueError, r"Retry\.on"),
        ({"on": 5}, TypeError, r"Retry\.on.*5"),
        ({"key": 5}, TypeError, r"Retry\.key.*5"),
        ({"clock": object()}, TypeError, r"Retry\.clock.*object"),
    ],
)
def test_invalid_retry_is_rejected(
    changes: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad values fail at construction with a message naming the field and the value."""
    with pytest.raises(error, match=match):
        Retry(**changes)  # type: ignore[arg-type]


def test_valid_optional_fields_are_accepted() -> None:
    """Every documented kind of value for the optional fields builds a policy."""
    Retry(
        attempts=1,
        deadline=0.5,
        budget=RetryBudget(),
        max_retry_after=0,
        on=(ConnectionError, TimeoutError),
        key="payments",
        clock=FakeClock(),
    )
    Retry(on=ValueError, key=lambda request: "k")
    Retry(on=lambda exc: True)


def test_statuses_are_normalised_to_a_frozenset() -> None:
    """A list or set of statuses is stored as a frozenset."""
    from_list = Retry(statuses=[500, 503, 503])
    from_set = Retry(statuses={500, 503})
    assert from_list.statuses == frozenset({500, 503})
    assert type(from_list.statuses) is frozenset
    assert type(from_set.statuses) is frozenset
    assert from_list == from_set


def test_methods_are_normalised_to_an_upper_case_frozenset() -> None:
    """Lower-case method names become an upper-case frozenset, and classification uses it."""
    policy = Retry(methods={"get", "post"})
    assert policy.methods == frozenset({"GET", "POST"})
    assert type(policy.methods) is frozenset
    assert classify("POST", 503, policy=policy).retryable
    assert not classify("PUT", 503, policy=policy).retryable


def test_defaults() -> None:
    """The defaults are the documented ones."""
    policy = Retry()
    assert policy.attempts == 4
    assert policy.statuses == RETRY_STATUSES == {408, 429, 500, 502, 503, 504}
    assert policy.methods == IDEMPOTENT == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
    assert policy.respect_retry_after is True
    assert policy.max_retry_after == 120.0
    assert policy.deadline is None
    assert policy.budget is None
    assert policy.read_body is False


# -- the decision table: responses ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("status", [200, 201, 301, 400, 404, 409])
def test_success_and_ordinary_client_errors_are_not_retried(method: str, status: int) -> None:
    """2xx, 3xx and 4xx other than 408/429 come back as they are."""
    assert not classify(method, status).retryable
    assert not classify(method, status, keyed=True).retryable


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PUT", "DELETE"])
def test_429_is_retried_for_any_method(method: str) -> None:
    """429 means the server did not process the request: any method may be resent."""
    assert classify(method, 429).retryable


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
@pytest.mark.parametrize("method", sorted(IDEMPOTENT))
def test_transient_statuses_are_retried_for_idempotent_methods(method: str, status: int) -> None:
    """408 and 5xx in ``statuses`` are retried for GET, PUT, DELETE and other idempotent methods."""
    verdict = classify(method, status)
    assert verdict.retryable
    assert str(status) in verdict.reason


@pytest.mark.parametrize("status", [408, 503])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_transient_statuses_need_a_key_for_unsafe_methods(method: str, status: int) -> None:
    """POST and PATCH are retried on 408/503 only with an idempotency key."""
    verdict = classify(method, status)
    assert not verdict.retryable
    assert "idempotency key" in verdict.reason
    assert classify(method, status, keyed=True).retryable


@pytest.mark.parametrize("status", [501, 505, 599])
def test_statuses_outside_the_set_are_not_retried(status: int) -> None:
    """A 5xx not in ``statuses`` is returned, even for GET."""
    assert not classify("GET", status).retryable
    assert not classify("GET", status, keyed=True).retryable


def test_custom_statuses_replace_the_default_set() -> None:
    """Only the statuses the policy lists are retried."""
    policy = Retry(statuses={501})
    assert classify("GET", 501, policy=policy).retryable
    assert not classify("GET", 503, policy=policy).retryable
    assert not classify("POST", 429, policy=policy).retryable


def test_should_retry_true_makes_any_method_and_status_retryable() -> None:
    """``x-should-retry: true`` makes a POST 409 retryable."""
    verdict = classify("POST", 409, {"x-should-retry": "true"})
    assert verdict.retryable
    assert "x-should-retry" in verdict.reason


def test_should_retry_false_stops_a_retryable_status() -> None:
    """``x-should-retry: false`` makes a GET 503 (and a 429) not retryable."""
    verdict = classify("GET", 503, {"x-should-retry": "false"})
    assert not verdict.retryable
    assert "x-should-retry" in verdict.reason
    assert not classify("POST", 429, {"x-should-retry": "false"}).retryable


def test_should_retry_with_httpx_headers_in_any_case() -> None:
    """The hint is read case-insensitively from httpx.Headers."""
    assert classify("POST", 409, httpx.Headers({"X-Should-Retry": "TRUE"})).retryable
    assert not classify("GET", 503, httpx.Headers({"X-Should-Retry": "False"})).retryable


def test_should_retry_true_does_not_retry_a_success() -> None:
    """The hint is ignored on a 2xx: a success is never retried."""
    assert not classify("GET", 200, {"x-should-retry": "true"}).retryable


@pytest.mark.parametrize(
    ("method", "status", "headers", "keyed"),
    [
        ("GET", 503, {}, False),
        ("POST", 429, {}, False),
        ("POST", 503, {}, True),
        ("POST", 409, {"x-should-retry": "true"}, False),
    ],
)
def test_a_body_that_cannot_be_replayed_is_never_retried_on_a_status(
    method: str, status: int, headers: dict[str, str], keyed: bool
) -> None:
    """Whatever the status says, a request whose body cannot be resent is not retried."""
    assert classify(method, status, headers, keyed=keyed).retryable
    verdict = classify(method, status, headers, keyed=keyed, replayable=False)
    assert not verdict.retryable
    assert "replayed" in verdict.reason


def test_retry_after_is_extracted_when_respected() -> None:
    """Retry-After (seconds, ms or date) ends up in ``verdict.retry_after``."""
    assert classify("POST", 429, {"retry-after": "5"}).retry_after == 5.0
    assert classify("GET", 503, {"retry-after-ms": "1500"}).retry_after == 1.5
    date = httpx.Headers({"Retry-After": "Tue, 15 Nov 1994 08:12:31 GMT"})
    assert classify("GET", 503, date).retry_after is None  # in the past
    assert classify("GET", 503).retry_after is None


def test_retry_after_is_ignored_when_not_respected() -> None:
    """With ``respect_retry_after=False`` the verdict carries no server delay."""
    policy = Retry(respect_retry_after=False)
    verdict = classify("POST", 429, {"retry-after": "5"}, policy=policy)
    assert verdict.retryable
    assert verdict.retry_after is None


def test_retry_after_is_not_extracted_for_a_response_that_is_returned() -> None:
    """A non-retryable response has no ``retry_after``."""
    assert classify("GET", 200, {"retry-after": "5"}).retry_after is None


# -- the decision table: failed attempts ---------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
@pytest.mark.parametrize("replayable", [True, False])
def test_not_sent_is_retried_for_any_method(method: str, replayable: bool) -> None:
    """A request that never left (connect error) is resent, whatever its method or body."""
    assert failure(method, Failure.NOT_SENT, replayable=replayable).retryable


@pytest.mark.parametrize(
    ("method", "keyed", "replayable", "expected"),
    [
        ("GET", False, True, True),
        ("PUT", False, True, True),
        ("DELETE", False, True, True),
        ("POST", False, True, False),
        ("PATCH", False, True, False),
        ("POST", True, True, True),
        ("PATCH", True, True, True),
        ("POST", True, False, False),
        ("GET", False, False, False),
    ],
)
def test_maybe_sent_needs_idempotent_or_keyed_and_replayable(
    method: str, keyed: bool, replayable: bool, expected: bool
) -> None:
    """A read/write error is retried only for an idempotent or keyed, replayable request."""
    verdict = failure(method, Failure.MAYBE_SENT, keyed=keyed, replayable=replayable)
    assert verdict.retryable is expected
    assert "boom" in verdict.reason


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_fatal_is_never_retried(method: str) -> None:
    """Our own errors and unknown failures are never retried, keyed or not."""
    verdict = failure(method, Failure.FATAL, keyed=True)
    assert not verdict.retryable
    assert verdict.reason == "boom"


# -- classify_exception --------------------------------------------------------------------------


def test_classify_exception_by_type() -> None:
    """``on=`` a type matches it and its subclasses only."""
    policy = Retry(on=LookupError)
    assert policy.classify_exception(KeyError("k")).retryable
    assert not policy.classify_exception(ValueError()).retryable
    assert policy.classify_exception(IndexError()).reason == "IndexError"


def test_classify_exception_by_tuple() -> None:
    """``on=`` a tuple of types matches any of them."""
    policy = Retry(on=(ConnectionError, TimeoutError))
    assert policy.classify_exception(ConnectionResetError()).retryable
    assert policy.classify_exception(TimeoutError()).retryable
    assert not policy.classify_exception(ValueError()).retryable


def test_classify_exception_by_predicate() -> None:
    """``on=`` a predicate decides from the exception."""
    policy = Retry(on=lambda exc: "transient" in str(exc))
    assert policy.classify_exception(RuntimeError("transient glitch")).retryable
    assert not policy.classify_exception(RuntimeError("permanent")).retryable


def test_classify_exception_without_on_is_not_retryable() -> None:
    """A transport policy (``on=None``) retries no exception through this path."""
    verdict = Retry().classify_exception(ConnectionError())
    assert not verdict.retryable
    assert "on=" in verdict.reason


# -- RetryCall.decide -----------------------------------------------------------------------------


def test_attempts_three_gives_exactly_two_retries() -> None:
    """``attempts=3`` allows two retries, then stops saying attempts are exhausted."""
    call = RetryCall(Retry(attempts=3, backoff=NO_JITTER), "k", None)
    assert call.attempts == 1
    decisions = []
    for _ in range(5):
        decision = call.decide(RETRYABLE, 0.0)
        decisions.append(decision)
        if not decision.retry:
            break
    assert [d.retry for d in decisions] == [True, True, False]
    assert [d.delay for d in decisions[:2]] == [1.0, 2.0]
    assert "attempts exhausted" in decisions[-1].reason
    assert call.attempts == 3
    assert call.retries == 2


def test_attempts_one_never_retries() -> None:
    """``attempts=1`` means a single try."""
    decision = RetryCall(Retry(attempts=1), "k", None).decide(RETRYABLE, 0.0)
    assert decision == Decision(False, 0.0, "status 503; attempts exhausted")


def test_non_retryable_verdict_stops_with_its_reason() -> None:
    """A non-retryable verdict stops at once, with the verdict's own reason."""
    call = RetryCall(Retry(), "k", None)
    decision = call.decide(Verdict(False, "status 404"), 0.0)
    assert decision == Decision(False, 0.0, "status 404")
    assert call.attempts == 1


def test_delay_is_the_larger_of_backoff_and_retry_after() -> None:
    """The server's Retry-After is a floor on the backoff, never a ceiling."""
    policy = Retry(backoff=NO_JITTER)
    assert RetryCall(policy, "k", None).decide(Verdict(True, "429", 5.0), 0.0).delay == 5.0
    assert RetryCall(policy, "k", None).decide(Verdict(True, "429", 0.2), 0.0).delay == 1.0


def test_retry_after_above_max_retry_after_stops() -> None:
    """A server demand longer than ``max_retry_after`` is not waited for."""
    policy = Retry(backoff=NO_JITTER, max_retry_after=10.0)
    decision = RetryCall(policy, "k", None).decide(Verdict(True, "status 429", 11.0), 0.0)
    assert not decision.retry
    assert "max_retry_after" in decision.reason
    equal = RetryCall(policy, "k", None).decide(Verdict(True, "status 429", 10.0), 0.0)
    assert equal.retry
    assert equal.delay == 10.0


def test_retry_after_is_ignored_by_decide_when_not_respected() -> None:
    """With ``respect_retry_after=False`` even a huge server delay does not stop or slow us."""
    policy = Retry(backoff=NO_JITTER, respect_retry_after=False, max_retry_after=10.0)
    decision = RetryCall(policy, "k", None).decide(Verdict(True, "status 429", 500.0), 0.0)
    assert decision == Decision(True, 1.0, "status 429")


def test_deadline_stops_a_sleep_that_would_end_past_it() -> None:
    """``now + delay >= deadline`` stops; a sleep that ends before the deadline goes ahead."""
    policy = Retry(backoff=NO_JITTER)
    late = RetryCall(policy, "k", deadline=10.0).decide(RETRYABLE, 9.0)
    assert not late.retry
    assert "deadline" in late.reason
    in_time = RetryCall(policy, "k", deadline=10.0).decide(RETRYABLE, 8.5)
    assert in_time == Decision(True, 1.0, "status 503")


def test_budget_is_consumed_only_by_actual_retries() -> None:
    """Stops for any other reason leave the budget alone; a retry takes one from it."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.2)  # 2 retries per 10 s window
    policy = Retry(attempts=2, backoff=NO_JITTER, budget=budget, max_retry_after=5.0)
    storage = budget.storage

    RetryCall(policy, "k", None).decide(Verdict(False, "status 404"), 100.0)
    RetryCall(policy, "k", deadline=100.5).decide(RETRYABLE, 100.0)
    RetryCall(policy, "k", None).decide(Verdict(True, "status 429", 6.0), 100.0)
    exhausted = RetryCall(policy, "k", None)
    exhausted.retries = 1
    assert not exhausted.decide(RETRYABLE, 100.0).retry
    assert storage.totals("k", 100.0) == (0, 0)

    assert RetryCall(policy, "k", None).decide(RETRYABLE, 100.0).retry
    assert storage.totals("k", 100.0) == (0, 1)
    assert RetryCall(policy, "k", None).decide(RETRYABLE, 100.0).retry
    assert storage.totals("k", 100.0) == (0, 2)

    call = RetryCall(policy, "k", None)
    refused = call.decide(RETRYABLE, 100.0)
    assert not refused.retry
    assert "budget" in refused.reason
    assert call.attempts == 1
    assert storage.totals("k", 100.0) == (0, 2)
    assert RetryCall(policy, "other", None).decide(RETRYABLE, 100.0).retry


def test_decorrelated_jitter_feeds_the_previous_backoff() -> None:
    """RetryCall remembers the last backoff, which decorrelated jitter grows from."""
    backoff = Backoff(base=1.0, multiplier=2.0, cap=100.0, jitter="decorrelated")
    call = RetryCall(Retry(attempts=10, backoff=backoff), "k", None, random=lambda: 0.5)
    delays = [call.decide(RETRYABLE, 0.0).delay for _ in range(3)]
    assert delays == [2.0, 3.5, 5.75]  # uniform midpoint of [1, 3 * previous]


@settings(max_examples=200, deadline=None)
@given(
    attempts=st.integers(min_value=1, max_value=20),
    retry_after=st.none() | st.floats(min_value=0, max_value=200),
    u=st.floats(min_value=0, max_value=1, exclude_max=True),
    jitter=st.sampled_from(["full", "equal", "decorrelated", "none"]),
)
def test_decisions_are_bounded(
    attempts: int, retry_after: float | None, u: float, jitter: str
) -> None:
    """At most ``attempts - 1`` retries, each delay within [0, max(cap, Retry-After)]."""
    backoff = Backoff(base=0.5, multiplier=2.0, cap=30.0, jitter=jitter)  # type: ignore[arg-type]
    policy = Retry(attempts=attempts, backoff=backoff, max_retry_after=120.0)
    call = RetryCall(policy, "k", None, random=lambda: u)
    retries = 0
    while (decision := call.decide(Verdict(True, "x", retry_after), 0.0)).retry:
        retries += 1
        assert 0 <= decision.delay <= max(30.0, retry_after or 0.0)
        if retry_after is not None:
            assert decision.delay >= retry_after
    assert retries == (0 if (retry_after or 0) > 120.0 else attempts - 1)


# -- values ---------------------------------------------------------------------------------------


def test_replace_keeps_the_budget_object() -> None:
    """``replace`` shares the very same budget (and so its counts) with the original."""
    budget = RetryBudget()
    policy = Retry(budget=budget)
    changed = policy.replace(attempts=2)
    assert changed.budget is budget
    assert changed.attempts == 2
    assert policy.attempts == 4


def test_replace_revalidates() -> None:
    """``replace`` runs the same checks as construction."""
    with pytest.raises(ValueError, match=r"Retry\.attempts.*0"):
        Retry().replace(attempts=0)
    with pytest.raises(ValueError, match=r"Retry\.statuses.*99"):
        Retry().replace(statuses={99})


def test_replace_normalises() -> None:
    """``replace`` normalises statuses and methods like construction does."""
    policy = Retry().replace(statuses=[503], methods=["get"])
    assert policy.statuses == frozenset({503})
    assert policy.methods == frozenset({"GET"})


def test_policies_are_equal_and_hashable_by_value() -> None:
    """Equal configurations are equal and hash alike; different ones are not equal."""
    a = Retry(attempts=3, statuses=[503, 502], methods={"get"}, budget=RetryBudget())
    b = Retry(attempts=3, statuses={502, 503}, methods={"GET"}, budget=RetryBudget())
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, Retry()}) == 2
    assert a != a.replace(attempts=4)
    assert Retry(clock=FakeClock()) == Retry()


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (Retry(), "attempts"),
        (Retry(), "statuses"),
        (RetryBudget(), "ratio"),
        (Verdict(True, "x"), "retryable"),
        (Decision(True, 1.0, "x"), "delay"),
    ],
)
def test_policies_are_immutable(value: object, field: str) -> None:
    """Assigning to a field raises FrozenInstanceError."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, 1)
