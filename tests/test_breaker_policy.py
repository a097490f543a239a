"""The CircuitBreaker policy: validation, the state machine, listeners, concurrency, decorators."""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pybreaker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience._breaker import MemoryBreakerStorage, Outcome, Permit, Ticket
from resilience.testing import FakeClock

SUCCESS, FAILURE, NEUTRAL = Outcome.SUCCESS, Outcome.FAILURE, Outcome.NEUTRAL


def make(**kwargs: Any) -> tuple[rs.CircuitBreaker, FakeClock]:
    """A breaker on a fresh FakeClock (fail_max=3, reset_timeout=30 unless told)."""
    clock = FakeClock()
    kwargs.setdefault("fail_max", 3)
    kwargs.setdefault("reset_timeout", 30.0)
    return rs.CircuitBreaker(clock=clock, **kwargs), clock


def call(breaker: rs.CircuitBreaker, key: str, outcome: Outcome) -> Ticket:
    """Admit one call on ``key`` and record ``outcome`` for it at once."""
    permit = breaker.admit(key)
    breaker.record(key, permit, outcome)
    return permit


def trip(breaker: rs.CircuitBreaker, key: str) -> None:
    """Record failures on ``key`` until its circuit is open."""
    for _ in range(breaker.fail_max):
        call(breaker, key, FAILURE)
    assert breaker.state(key) == "open"


def refused(breaker: rs.CircuitBreaker, key: str) -> rs.CircuitOpenError:
    """The CircuitOpenError that admitting a call on ``key`` raises."""
    with pytest.raises(rs.CircuitOpenError) as caught:
        breaker.admit(key)
    return caught.value


class Recorder(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
    """Records every state change as (cb.name, old, new, cb.fail_counter)."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str | None, str, int]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = None if old_state is None else old_state.name
        self.changes.append((cb.name, old, new_state.name, cb.fail_counter))


class Broken(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
    """A listener that raises on every state change."""

    def __init__(self) -> None:
        self.calls = 0

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.calls += 1
        raise RuntimeError("listener is broken")


# -- 1. validation ---------------------------------------------------------------------------------

_NOT_A_LISTENER = object()
_NOT_A_CLOCK = object()


@pytest.mark.parametrize(
    ("field", "value", "error", "shown"),
    [
        pytest.param("fail_max", 0, ValueError, 0, id="fail_max=0"),
        pytest.param("fail_max", 1.5, TypeError, 1.5, id="fail_max=1.5"),
        pytest.param("fail_max", True, TypeError, True, id="fail_max=True"),
        pytest.param("reset_timeout", -1, ValueError, -1, id="reset_timeout=-1"),
        pytest.param("reset_timeout", math.nan, ValueError, math.nan, id="reset_timeout=nan"),
        pytest.param("success_threshold", 0, ValueError, 0, id="success_threshold=0"),
        pytest.param("failure_statuses", {99}, ValueError, 99, id="failure_statuses={99}"),
        pytest.param("failure_statuses", "500", TypeError, "500", id="failure_statuses='500'"),
        pytest.param("is_failure", 3, TypeError, 3, id="is_failure=3"),
        pytest.param("storage", "x", TypeError, "x", id="storage='x'"),
        pytest.param(
            "listeners", [_NOT_A_LISTENER], TypeError, _NOT_A_LISTENER, id="listeners=[object()]"
        ),
        pytest.param("key", 5, TypeError, 5, id="key=5"),
        pytest.param("clock", _NOT_A_CLOCK, TypeError, _NOT_A_CLOCK, id="clock=object()"),
    ],
)
def test_bad_values_are_refused_naming_field_and_value(
    field: str, value: object, error: type[Exception], shown: object
) -> None:
    """Each bad argument raises at construction with a message naming the field and the value."""
    with pytest.raises(error) as caught:
        rs.CircuitBreaker(**{field: value})
    message = str(caught.value)
    assert f"CircuitBreaker.{field}" in message
    assert repr(shown) in message


def test_good_values_are_accepted_and_normalised() -> None:
    """Valid arguments build a policy; failure statuses become a frozenset, listeners a tuple."""
    listener = Recorder()
    breaker = rs.CircuitBreaker(
        fail_max=1,
        reset_timeout=0,
        success_threshold=3,
        key="k",
        failure_statuses=[500, 503],
        is_failure=lambda outcome: None,
        listeners=[listener],
        clock=FakeClock(),
    )
    assert breaker.failure_statuses == frozenset({500, 503})
    assert breaker.listeners == (listener,)
    assert breaker.reset_timeout == 0


def test_replace_keeps_the_storage_and_revalidates() -> None:
    """replace() shares the same storage object (and so the state) and validates the changes."""
    breaker, _ = make(fail_max=1)
    trip(breaker, "k")
    copy = breaker.replace(fail_max=10)
    assert copy.storage is breaker.storage
    assert copy.fail_max == 10
    assert copy.state("k") == "open"
    with pytest.raises(ValueError, match=r"CircuitBreaker\.fail_max.*0"):
        breaker.replace(fail_max=0)
    with pytest.raises(TypeError, match=r"CircuitBreaker\.storage"):
        breaker.replace(storage="x")
    other = MemoryBreakerStorage()
    assert breaker.replace(storage=other).storage is other


def test_storage_max_keys_is_validated() -> None:
    """MemoryBreakerStorage(max_keys=0) is refused, naming the field."""
    with pytest.raises(ValueError, match=r"MemoryBreakerStorage\.max_keys.*0"):
        MemoryBreakerStorage(max_keys=0)


# -- 2. the state machine --------------------------------------------------------------------------


def test_opens_exactly_at_fail_max_consecutive_failures() -> None:
    """The fail_max-th failure is recorded and opens the circuit; only the next admit raises."""
    breaker, _ = make(fail_max=3)
    assert breaker.state("k") == "closed"
    for _ in range(2):
        assert call(breaker, "k", FAILURE).permit is Permit.NORMAL
        assert breaker.state("k") == "closed"
    permit = breaker.admit("k")  # the tripping call is let through
    assert permit.permit is Permit.NORMAL
    assert breaker.state("k") == "closed"
    breaker.record("k", permit, FAILURE)
    assert breaker.state("k") == "open"
    error = refused(breaker, "k")
    assert error.key == "k"
    assert isinstance(error, rs.ResilienceError)


def test_calls_admitted_together_before_the_trip_all_record() -> None:
    """Three permits taken while closed: their three failures open the circuit."""
    breaker, _ = make(fail_max=3)
    permits = [breaker.admit("k") for _ in range(3)]
    assert [p.permit for p in permits] == [Permit.NORMAL] * 3
    for permit in permits:
        breaker.record("k", permit, FAILURE)
    assert breaker.state("k") == "open"


def test_a_success_resets_the_consecutive_count() -> None:
    """F, F, S, F, F stays closed with fail_max=3; one more failure opens it."""
    breaker, _ = make(fail_max=3)
    for outcome in (FAILURE, FAILURE, SUCCESS, FAILURE, FAILURE):
        call(breaker, "k", outcome)
    assert breaker.state("k") == "closed"
    call(breaker, "k", FAILURE)
    assert breaker.state("k") == "open"


def test_open_refuses_every_call_with_the_remaining_time() -> None:
    """While open, every admit raises with retry_after = time left until the probe, and the key."""
    breaker, clock = make(fail_max=1, reset_timeout=30.0)
    trip(breaker, "svc")
    for elapsed, left in ((0.0, 30.0), (10.0, 20.0), (19.5, 0.5), (0.4, 0.1)):
        clock.advance(elapsed)
        for _ in range(3):
            error = refused(breaker, "svc")
            assert error.retry_after == pytest.approx(left, abs=1e-5)
            assert error.key == "svc"
        assert breaker.state("svc") == "open"
    clock.advance(0.2)  # now past reset_timeout
    assert breaker.admit("svc").permit is Permit.PROBE
    assert breaker.state("svc") == "half-open"


def test_admit_uses_the_error_builder_given() -> None:
    """admit(key, error=...) raises what the builder makes from (message, retry_after, key)."""

    class Custom(Exception):
        pass

    seen: list[tuple[str, float, str]] = []

    def build(message: str, retry_after: float, key: str) -> BaseException:
        seen.append((message, retry_after, key))
        return Custom(message)

    breaker, _ = make(fail_max=1)
    trip(breaker, "k")
    with pytest.raises(Custom):
        breaker.admit("k", error=build)
    [(message, retry_after, key)] = seen
    assert "'k'" in message
    assert retry_after == pytest.approx(30.0)
    assert key == "k"


def test_half_open_lets_exactly_one_probe_through() -> None:
    """After reset_timeout one PROBE permit is given; a second admit raises with retry_after 0."""
    breaker, clock = make(fail_max=1, reset_timeout=30.0)
    trip(breaker, "k")
    clock.advance(31)
    assert breaker.admit("k").permit is Permit.PROBE
    for _ in range(3):
        error = refused(breaker, "k")
        assert error.retry_after == 0
        assert error.key == "k"
    assert breaker.state("k") == "half-open"


def test_probe_success_closes() -> None:
    """A successful probe closes the circuit with a fresh failure count."""
    breaker, clock = make(fail_max=2, reset_timeout=30.0)
    trip(breaker, "k")
    clock.advance(30.5)
    permit = breaker.admit("k")
    assert permit.permit is Permit.PROBE
    breaker.record("k", permit, SUCCESS)
    assert breaker.state("k") == "closed"
    assert breaker.admit("k").permit is Permit.NORMAL
    call(breaker, "k", FAILURE)  # one failure of two: the count started again at zero
    assert breaker.state("k") == "closed"


def test_probe_failure_reopens_with_a_fresh_reset_timeout() -> None:
    """A failed probe re-opens the circuit, counting reset_timeout from the probe's failure."""
    breaker, clock = make(fail_max=1, reset_timeout=30.0)
    trip(breaker, "k")
    clock.advance(45)
    permit = breaker.admit("k")
    assert permit.permit is Permit.PROBE
    clock.advance(5)  # the probe took 5 s to fail
    breaker.record("k", permit, FAILURE)
    assert breaker.state("k") == "open"
    assert refused(breaker, "k").retry_after == pytest.approx(30.0, abs=1e-5)
    clock.advance(29.9)
    assert refused(breaker, "k").retry_after == pytest.approx(0.1, abs=1e-5)
    clock.advance(0.2)
    assert breaker.admit("k").permit is Permit.PROBE


def test_success_threshold_needs_that_many_successive_probes() -> None:
    """With success_threshold=2 the first good probe keeps it half-open; the second closes it."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0, success_threshold=2)
    trip(breaker, "k")
    clock.advance(11)
    assert call(breaker, "k", SUCCESS).permit is Permit.PROBE
    assert breaker.state("k") == "half-open"
    assert call(breaker, "k", SUCCESS).permit is Permit.PROBE
    assert breaker.state("k") == "closed"


def test_success_threshold_starts_over_after_a_failed_probe() -> None:
    """Good probe, failed probe, good probe: still half-open, one more good probe closes it."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0, success_threshold=2)
    trip(breaker, "k")
    clock.advance(11)
    call(breaker, "k", SUCCESS)
    call(breaker, "k", FAILURE)
    assert breaker.state("k") == "open"
    clock.advance(11)
    call(breaker, "k", SUCCESS)
    assert breaker.state("k") == "half-open"
    call(breaker, "k", SUCCESS)
    assert breaker.state("k") == "closed"


def test_neutral_probe_frees_the_probe_slot() -> None:
    """A neutral probe changes no state, and the next admit becomes the probe."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0)
    trip(breaker, "k")
    clock.advance(11)
    permit = breaker.admit("k")
    assert permit.permit is Permit.PROBE
    assert refused(breaker, "k").retry_after == 0
    breaker.record("k", permit, NEUTRAL)
    assert breaker.state("k") == "half-open"
    assert call(breaker, "k", SUCCESS).permit is Permit.PROBE
    assert breaker.state("k") == "closed"


def test_neutral_in_closed_neither_counts_nor_resets() -> None:
    """F, F, N, F opens with fail_max=3 (N did not reset); N, N, N alone never opens."""
    breaker, _ = make(fail_max=3)
    for _ in range(10):
        call(breaker, "quiet", NEUTRAL)
    assert breaker.state("quiet") == "closed"
    for outcome in (FAILURE, FAILURE, NEUTRAL):
        call(breaker, "k", outcome)
    assert breaker.state("k") == "closed"
    call(breaker, "k", FAILURE)
    assert breaker.state("k") == "open"


def test_neutral_while_open_changes_nothing() -> None:
    """A neutral outcome of a call admitted before the trip leaves the open circuit as it was."""
    breaker, clock = make(fail_max=1, reset_timeout=30.0)
    early = breaker.admit("k")
    trip(breaker, "k")
    clock.advance(10)
    breaker.record("k", early, NEUTRAL)
    assert breaker.state("k") == "open"
    assert refused(breaker, "k").retry_after == pytest.approx(20.0, abs=1e-5)


def test_late_failure_while_open_changes_nothing() -> None:
    """A failure from a call admitted before the trip, arriving while open, does not re-arm it."""
    breaker, clock = make(fail_max=2, reset_timeout=30.0)
    late = breaker.admit("k")
    trip(breaker, "k")
    clock.advance(20)
    breaker.record("k", late, FAILURE)
    assert breaker.state("k") == "open"
    # opened_at was not refreshed: still 10 s left, not 30
    assert refused(breaker, "k").retry_after == pytest.approx(10.0, abs=1e-5)
    clock.advance(10.5)
    assert call(breaker, "k", SUCCESS).permit is Permit.PROBE
    assert breaker.state("k") == "closed"


def test_late_success_while_open_changes_nothing() -> None:
    """A success from a call admitted before the trip, arriving while open, does not close it."""
    breaker, _ = make(fail_max=1, reset_timeout=30.0)
    late = breaker.admit("k")
    trip(breaker, "k")
    breaker.record("k", late, SUCCESS)
    assert breaker.state("k") == "open"
    assert refused(breaker, "k").retry_after == pytest.approx(30.0, abs=1e-5)


def test_late_normal_success_while_half_open_does_not_close() -> None:
    """A NORMAL permit's success arriving while half-open neither closes it nor frees the slot."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0)
    late = breaker.admit("k")
    trip(breaker, "k")
    clock.advance(11)
    probe = breaker.admit("k")
    assert probe.permit is Permit.PROBE
    breaker.record("k", late, SUCCESS)
    assert breaker.state("k") == "half-open"
    assert refused(breaker, "k").retry_after == 0  # the probe is still in flight
    breaker.record("k", probe, FAILURE)
    assert breaker.state("k") == "open"


def test_late_normal_success_after_failed_probe_does_not_close() -> None:
    """The pybreaker bug: probe fails and re-opens, then an old call's success must not close it."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0)
    late = breaker.admit("k")
    trip(breaker, "k")
    clock.advance(11)
    probe = breaker.admit("k")
    breaker.record("k", probe, FAILURE)
    breaker.record("k", late, SUCCESS)
    assert breaker.state("k") == "open"


def test_late_normal_failure_while_half_open_changes_nothing() -> None:
    """A failure from a NORMAL permit arriving while half-open does not re-open the circuit."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0)
    late = breaker.admit("k")
    trip(breaker, "k")
    clock.advance(11)
    probe = breaker.admit("k")
    breaker.record("k", late, FAILURE)
    assert breaker.state("k") == "half-open"
    breaker.record("k", probe, SUCCESS)
    assert breaker.state("k") == "closed"


def test_late_failure_from_before_the_trip_is_ignored_after_recovery() -> None:
    """A failure from a call admitted before the trip, arriving after the circuit closed again,
    is stale ("outcomes of calls admitted before a transition are ignored once the state has
    moved on") and must not re-open the recovered circuit."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0)
    late = breaker.admit("k")  # admitted while closed, before the trip
    trip(breaker, "k")
    clock.advance(11)
    call(breaker, "k", SUCCESS)  # the probe closes it
    assert breaker.state("k") == "closed"
    breaker.record("k", late, FAILURE)
    assert breaker.state("k") == "closed"


def test_keys_are_independent() -> None:
    """Opening one key leaves another closed, and each recovers on its own."""
    breaker, clock = make(fail_max=2, reset_timeout=10.0)
    call(breaker, "b", FAILURE)
    trip(breaker, "a")
    assert breaker.state("b") == "closed"
    assert breaker.admit("b").permit is Permit.NORMAL
    call(breaker, "b", SUCCESS)
    call(breaker, "b", FAILURE)  # the earlier failure was reset: 1 of 2
    assert breaker.state("b") == "closed"
    assert refused(breaker, "a").key == "a"
    clock.advance(11)
    assert breaker.admit("a").permit is Permit.PROBE
    assert breaker.admit("b").permit is Permit.NORMAL


def test_policies_sharing_a_storage_share_state() -> None:
    """Two policies built on one storage see the same circuits."""
    storage = MemoryBreakerStorage()
    clock = FakeClock()
    first = rs.CircuitBreaker(fail_max=1, storage=storage, clock=clock)
    second = rs.CircuitBreaker(fail_max=5, storage=storage, clock=clock)
    trip(first, "k")
    assert second.state("k") == "open"
    assert refused(second, "k").key == "k"


def test_storage_forgets_the_oldest_key_beyond_max_keys() -> None:
    """With max_keys=2, a third key makes the first one forgotten (it reads closed again)."""
    storage = MemoryBreakerStorage(max_keys=2)
    breaker = rs.CircuitBreaker(fail_max=1, storage=storage, clock=FakeClock())
    trip(breaker, "a")
    trip(breaker, "b")
    call(breaker, "c", SUCCESS)
    assert breaker.admit("a").permit is Permit.NORMAL
    assert breaker.state("a") == "closed"


def test_storage_evicts_the_least_recently_used_key() -> None:
    """With max_keys=2, a key used again after another is kept; the one not used is forgotten."""
    storage = MemoryBreakerStorage(max_keys=2)
    breaker = rs.CircuitBreaker(fail_max=1, storage=storage, clock=FakeClock())
    trip(breaker, "a")
    trip(breaker, "b")
    refused(breaker, "a")  # "a" is used again: now "b" is the least recently used
    call(breaker, "c", SUCCESS)
    assert breaker.state("a") == "open"
    assert breaker.state("b") == "closed"


_STEPS = st.lists(
    st.one_of(
        st.sampled_from([SUCCESS, FAILURE, NEUTRAL]),
        st.integers(min_value=1, max_value=25),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    steps=_STEPS,
    fail_max=st.integers(min_value=1, max_value=4),
    reset_timeout=st.integers(min_value=0, max_value=20),
    success_threshold=st.integers(min_value=1, max_value=3),
)
def test_sequential_calls_follow_the_model(
    steps: list[Outcome | int], fail_max: int, reset_timeout: int, success_threshold: int
) -> None:
    """One caller at a time: states, permits and retry_after match a simple reference model."""
    breaker, clock = make(
        fail_max=fail_max, reset_timeout=float(reset_timeout), success_threshold=success_threshold
    )
    state, failures, successes, opened, now = "closed", 0, 0, 0.0, 0.0
    for step in steps:
        if isinstance(step, int):
            clock.advance(step)
            now += step
            continue
        if state == "open" and opened + reset_timeout - now > 0:
            error = refused(breaker, "k")
            assert error.retry_after == pytest.approx(opened + reset_timeout - now, abs=1e-5)
            assert breaker.state("k") == "open"
            continue
        if state == "open":
            state, successes = "half-open", 0
        permit = call(breaker, "k", step)
        assert permit.permit is (Permit.NORMAL if state == "closed" else Permit.PROBE)
        if state == "closed":
            if step is FAILURE:
                failures += 1
                if failures >= fail_max:
                    state, opened = "open", now
            elif step is SUCCESS:
                failures = 0
        elif step is FAILURE:
            state, opened = "open", now
        elif step is SUCCESS:
            successes += 1
            if successes >= success_threshold:
                state, failures = "closed", 0
        assert breaker.state("k") == state


# -- 3. listeners and events -----------------------------------------------------------------------


def test_listeners_see_every_transition_with_pybreaker_objects() -> None:
    """closed→open, open→half-open, half-open→open, open→half-open, half-open→closed, in order."""
    recorder = Recorder()
    breaker, clock = make(fail_max=2, reset_timeout=10.0, listeners=[recorder])
    trip(breaker, "svc")
    clock.advance(11)
    call(breaker, "svc", FAILURE)  # failed probe
    clock.advance(11)
    call(breaker, "svc", SUCCESS)  # good probe
    assert recorder.changes == [
        ("svc", "closed", "open", 2),
        ("svc", "open", "half-open", 2),
        ("svc", "half-open", "open", 2),
        ("svc", "open", "half-open", 2),
        ("svc", "half-open", "closed", 0),
    ]


def test_listener_receives_state_objects_and_the_breaker_shell() -> None:
    """state_change gets a cb whose name is the key, and state objects with string names."""
    seen: list[tuple[Any, Any, Any]] = []

    class Keep(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            seen.append((cb, old_state, new_state))

    breaker, _ = make(fail_max=1, listeners=(Keep(),))
    trip(breaker, "db")
    [(cb, old_state, new_state)] = seen
    assert cb.name == "db"
    assert cb.fail_counter == 1
    assert isinstance(old_state.name, str)
    assert (old_state.name, new_state.name) == ("closed", "open")
    assert isinstance(new_state, pybreaker.CircuitBreakerState)


def test_a_raising_listener_does_not_break_the_breaker() -> None:
    """A listener that raises is called, admit/record do not raise, and the transitions happen."""
    broken, recorder = Broken(), Recorder()
    breaker, clock = make(fail_max=1, reset_timeout=10.0, listeners=[broken, recorder])
    permit = breaker.admit("k")
    breaker.record("k", permit, FAILURE)
    assert breaker.state("k") == "open"
    clock.advance(11)
    probe = breaker.admit("k")
    assert probe.permit is Permit.PROBE
    breaker.record("k", probe, SUCCESS)
    assert breaker.state("k") == "closed"
    assert broken.calls == 3
    assert [change[2] for change in recorder.changes] == ["open", "half-open", "closed"]


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """breaker.opened, breaker.half_open and breaker.closed are emitted with the key."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0)
    with caplog.at_level(logging.INFO, logger="resilience"):
        trip(breaker, "logged")
        clock.advance(11)
        call(breaker, "logged", SUCCESS)
    events = [
        (record.msg, record.__dict__.get("key"))
        for record in caplog.records
        if str(record.msg).startswith("breaker.")
    ]
    assert events == [
        ("breaker.opened", "logged"),
        ("breaker.half_open", "logged"),
        ("breaker.closed", "logged"),
    ]


def test_nothing_is_logged_without_transitions(caplog: pytest.LogCaptureFixture) -> None:
    """Successes and failures below fail_max emit no breaker events."""
    breaker, _ = make(fail_max=3)
    with caplog.at_level(logging.INFO, logger="resilience"):
        call(breaker, "k", FAILURE)
        call(breaker, "k", SUCCESS)
        call(breaker, "k", FAILURE)
    assert [r for r in caplog.records if str(r.msg).startswith("breaker.")] == []


# -- 4. concurrency --------------------------------------------------------------------------------


def test_twenty_threads_get_exactly_one_probe() -> None:
    """20 threads admitting at once on a probe-eligible circuit: one PROBE, 19 refusals at 0."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0)
    trip(breaker, "k")
    clock.advance(11)
    barrier = threading.Barrier(20)
    permits: list[Permit] = []
    errors: list[rs.CircuitOpenError] = []

    def worker() -> None:
        barrier.wait()
        try:
            permits.append(breaker.admit("k").permit)
        except rs.CircuitOpenError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert permits == [Permit.PROBE]
    assert len(errors) == 19
    assert all(error.retry_after == 0 and error.key == "k" for error in errors)
    assert breaker.state("k") == "half-open"


@pytest.mark.anyio
async def test_fifty_tasks_get_exactly_one_probe() -> None:
    """50 concurrent tasks through a decorated coroutine: one reaches the body, 49 fail fast."""
    breaker, clock = make(fail_max=1, reset_timeout=10.0, key="async-probe")
    release = anyio.Event()
    calls = 0

    @breaker
    async def probe() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "ok"

    trip(breaker, "async-probe")
    clock.advance(11)
    results: list[str] = []
    errors: list[rs.CircuitOpenError] = []
    all_refused = anyio.Event()

    async def one() -> None:
        try:
            results.append(await probe())
        except rs.CircuitOpenError as exc:
            errors.append(exc)
            if len(errors) == 49:
                all_refused.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)
            await all_refused.wait()
            assert breaker.state("async-probe") == "half-open"
            release.set()
    assert calls == 1
    assert results == ["ok"]
    assert all(error.retry_after == 0 for error in errors)
    assert breaker.state("async-probe") == "closed"


def test_decorated_sync_calls_run_concurrently() -> None:
    """8 threads each calling a decorated 0.2 s function finish in well under 8 x 0.2 s."""
    breaker = rs.CircuitBreaker(key="parallel")

    @breaker
    def slow() -> str:
        time.sleep(0.2)
        return "done"

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(slow())) for _ in range(8)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    elapsed = time.perf_counter() - started
    assert results == ["done"] * 8
    assert elapsed < 1.0
    assert breaker.state("parallel") == "closed"


def test_concurrent_failures_open_exactly_once() -> None:
    """Many threads recording failures at once count every one and open the circuit once."""
    recorder = Recorder()
    breaker, _ = make(fail_max=200, listeners=[recorder])
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            try:
                permit = breaker.admit("k")
            except rs.CircuitOpenError:
                continue
            breaker.record("k", permit, FAILURE)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert breaker.state("k") == "open"
    assert [change[1:3] for change in recorder.changes] == [("closed", "open")]


# -- 5. decorators ---------------------------------------------------------------------------------


def test_sync_decorator_counts_exceptions_and_then_fails_fast() -> None:
    """Failures propagate unchanged; the fail_max-th raises its own error; the next is refused."""
    breaker, _ = make(fail_max=3, key="sync")
    calls = 0
    raised = [ValueError(str(n)) for n in range(3)]

    @breaker
    def boom() -> None:
        nonlocal calls
        calls += 1
        raise raised[calls - 1]

    for expected in raised:
        with pytest.raises(ValueError, match=r"^\d$") as caught:
            boom()
        assert caught.value is expected
    assert breaker.state("sync") == "open"
    with pytest.raises(rs.CircuitOpenError) as refused_error:
        boom()
    assert refused_error.value.key == "sync"
    assert calls == 3


@pytest.mark.anyio
async def test_async_decorator_counts_exceptions_and_then_fails_fast() -> None:
    """The same for a coroutine function, and a probe through it closes the circuit."""
    breaker, clock = make(fail_max=2, reset_timeout=5.0, key="async")
    calls = 0
    failing = True

    @breaker
    async def fetch(x: int) -> int:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        if failing:
            raise ConnectionError(f"down {x}")
        return x * 2

    for n in range(2):
        with pytest.raises(ConnectionError, match=f"down {n}"):
            await fetch(n)
    with pytest.raises(rs.CircuitOpenError):
        await fetch(9)
    assert calls == 2
    clock.advance(6)
    failing = False
    assert await fetch(21) == 42
    assert calls == 3
    assert breaker.state("async") == "closed"


def test_decorated_return_values_are_successes() -> None:
    """A returning call resets the count: fail, return, fail stays closed with fail_max=2."""
    breaker, _ = make(fail_max=2, key="mixed")
    script = [ValueError("a"), "ok", ValueError("b")]

    @breaker
    def step() -> Any:
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    with pytest.raises(ValueError, match="a"):
        step()
    assert step() == "ok"
    with pytest.raises(ValueError, match="b"):
        step()
    assert breaker.state("mixed") == "closed"


def test_is_failure_can_make_a_return_value_a_failure() -> None:
    """is_failure=lambda r: r == "bad" counts "bad" results; they are still returned."""
    breaker, _ = make(fail_max=2, key="bad", is_failure=lambda r: r == "bad")
    calls = 0

    @breaker
    def get() -> str:
        nonlocal calls
        calls += 1
        return "bad"

    assert get() == "bad"
    assert breaker.state("bad") == "closed"
    assert get() == "bad"  # the tripping call gets its own result
    assert breaker.state("bad") == "open"
    with pytest.raises(rs.CircuitOpenError):
        get()
    assert calls == 2


def test_is_failure_can_make_an_exception_a_success() -> None:
    """A KeyError judged False counts as a success: it resets the count and is still raised."""
    breaker, _ = make(
        fail_max=2, key="kerr", is_failure=lambda e: False if isinstance(e, KeyError) else None
    )
    script: list[Exception] = [ValueError("v1"), KeyError("k"), ValueError("v2"), KeyError("k")]

    @breaker
    def step() -> None:
        raise script.pop(0)

    with pytest.raises(ValueError, match="v1"):
        step()
    with pytest.raises(KeyError):
        step()
    with pytest.raises(ValueError, match="v2"):
        step()
    assert breaker.state("kerr") == "closed"  # ValueError, KeyError (reset), ValueError: 1 of 2
    with pytest.raises(KeyError):
        step()
    assert breaker.state("kerr") == "closed"


def test_resilience_errors_inside_are_neutral() -> None:
    """ResilienceError subclasses raised by the function neither count nor reset the count."""
    breaker, _ = make(fail_max=2, key="neutral")
    script: list[Exception] = [
        ValueError("first"),
        rs.RateLimitExceeded("limited", retry_after=1.0, key="x"),
        rs.CircuitOpenError("inner open", retry_after=1.0, key="inner"),
        rs.ResilienceError("ours"),
    ]

    @breaker
    def step() -> None:
        raise script.pop(0)

    with pytest.raises(ValueError, match="first"):
        step()
    for expected in (rs.RateLimitExceeded, rs.CircuitOpenError, rs.ResilienceError):
        with pytest.raises(expected):
            step()
        assert breaker.state("neutral") == "closed"
    script.append(ValueError("second"))
    with pytest.raises(ValueError, match="second"):
        step()
    assert breaker.state("neutral") == "open"  # the first failure was not reset


@pytest.mark.anyio
async def test_cancellation_is_neutral_and_re_raised() -> None:
    """fail_max cancelled calls leave it closed; the caller sees the cancellation each time."""
    breaker, _ = make(fail_max=2, key="cancel")
    entered = 0

    @breaker
    async def hang() -> None:
        nonlocal entered
        entered += 1
        await anyio.sleep_forever()

    cancelled = anyio.get_cancelled_exc_class()
    seen: list[type[BaseException]] = []
    for _ in range(3):
        with anyio.CancelScope() as scope:
            scope.cancel()
            try:
                await hang()
            except BaseException as exc:
                seen.append(type(exc))
                raise
        assert scope.cancelled_caught
    assert seen == [cancelled] * 3
    assert entered == 3
    assert breaker.state("cancel") == "closed"


@pytest.mark.anyio
async def test_cancelled_probe_frees_the_probe_slot() -> None:
    """A probe that is cancelled is neutral: still half-open, and the next call is the probe."""
    breaker, clock = make(fail_max=1, reset_timeout=5.0, key="cancel-probe")
    hang = True

    @breaker
    async def maybe_hang() -> str:
        if hang:
            await anyio.sleep_forever()
        return "ok"

    trip(breaker, "cancel-probe")
    clock.advance(6)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await maybe_hang()
    assert scope.cancelled_caught
    assert breaker.state("cancel-probe") == "half-open"
    hang = False
    assert await maybe_hang() == "ok"
    assert breaker.state("cancel-probe") == "closed"


def test_keyboard_interrupt_is_neutral_and_re_raised() -> None:
    """A BaseException that is not an Exception propagates and is not counted."""
    breaker, _ = make(fail_max=1, key="interrupt")

    @breaker
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert breaker.state("interrupt") == "closed"


def test_wraps_keeps_name_doc_and_signature() -> None:
    """Sync and async decorated functions keep their name, docstring and signature."""
    breaker = rs.CircuitBreaker()

    def plain(a: int, b: str = "x", *, c: float = 1.0) -> str:
        """Plain docstring."""
        return f"{a}{b}{c}"

    async def coro(a: int, *args: int, **kwargs: str) -> int:
        """Coro docstring."""
        return a

    for function in (plain, coro):
        decorated = breaker(function)
        assert decorated.__name__ == function.__name__
        assert decorated.__qualname__ == function.__qualname__
        assert decorated.__doc__ == function.__doc__
        assert decorated.__wrapped__ is function  # type: ignore[attr-defined]
        assert inspect.signature(decorated) == inspect.signature(function)
        assert inspect.iscoroutinefunction(decorated) == inspect.iscoroutinefunction(function)
    assert breaker(plain)(1, "y", c=2.0) == "1y2.0"


def test_default_key_is_module_and_qualified_name() -> None:
    """Without key=, the breaker's key is the function's module and qualified name."""
    breaker, _ = make(fail_max=1)

    def failing() -> None:
        raise OSError("down")

    decorated = breaker(failing)
    with pytest.raises(OSError, match="down"):
        decorated()
    key = f"{failing.__module__}.{failing.__qualname__}"
    assert key.endswith("test_default_key_is_module_and_qualified_name.<locals>.failing")
    assert breaker.state(key) == "open"
    with pytest.raises(rs.CircuitOpenError) as caught:
        decorated()
    assert caught.value.key == key


def test_functions_without_a_key_have_separate_circuits() -> None:
    """Two functions decorated without key= do not share a circuit."""
    breaker, _ = make(fail_max=1)

    @breaker
    def one() -> None:
        raise OSError("one")

    @breaker
    def two() -> str:
        return "fine"

    with pytest.raises(OSError, match="one"):
        one()
    assert two() == "fine"


def test_a_string_key_shares_state_between_functions() -> None:
    """Two functions decorated with key="x" trip and recover one shared circuit."""
    breaker, clock = make(fail_max=2, reset_timeout=5.0, key="x")
    calls = {"a": 0, "b": 0}

    @breaker
    def a() -> None:
        calls["a"] += 1
        raise OSError("a")

    @breaker
    def b() -> str:
        calls["b"] += 1
        return "b"

    with pytest.raises(OSError, match="a"):
        a()
    assert b() == "b"  # b's success resets the shared count
    with pytest.raises(OSError, match="a"):
        a()
    with pytest.raises(OSError, match="a"):
        a()
    assert breaker.state("x") == "open"
    with pytest.raises(rs.CircuitOpenError):
        b()
    assert calls == {"a": 3, "b": 1}
    clock.advance(6)
    assert b() == "b"
    assert breaker.state("x") == "closed"


def test_a_function_key_cannot_decorate() -> None:
    """A key function is for transports: decorating with one is a TypeError naming the function."""
    breaker = rs.CircuitBreaker(key=lambda request: "k")

    def target() -> None:
        return None

    with pytest.raises(TypeError, match="target"):
        breaker(target)
