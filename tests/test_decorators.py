"""Retry as a decorator of plain sync and async functions."""

from __future__ import annotations

import inspect
import logging
import time

import pytest

import resilience as rs
from resilience.testing import FakeClock


class Flaky:
    """Raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_sync_function_is_retried_on_named_exceptions() -> None:
    """Two ConnectionErrors then success: the call returns after 3 tries and 2 sleeps."""
    flaky = Flaky(ConnectionError("a"), ConnectionError("b"))
    clock = FakeClock()
    decorated = rs.Retry(on=ConnectionError, clock=clock)(flaky)
    assert decorated() == "ok"
    assert flaky.calls == 3
    assert len(clock.sleeps) == 2


@pytest.mark.anyio
async def test_async_function_is_retried_on_named_exceptions() -> None:
    """The same for a coroutine function; the sleeps go through the clock's async sleep."""
    clock = FakeClock()
    calls = 0

    @rs.Retry(on=(ConnectionError, TimeoutError), clock=clock)
    async def fetch(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TimeoutError
        return x * 2

    assert await fetch(21) == 42
    assert calls == 3
    assert len(clock.sleeps) == 2


def test_other_exceptions_pass_through_at_once() -> None:
    """An exception `on` does not name is raised unchanged after one call."""
    flaky = Flaky(KeyError("nope"))
    decorated = rs.Retry(on=ConnectionError, clock=FakeClock())(flaky)
    with pytest.raises(KeyError):
        decorated()
    assert flaky.calls == 1


def test_exhaustion_raises_retry_error_chained() -> None:
    """When attempts run out, RetryError carries the count and the last exception, chained."""
    last = ConnectionError("third")
    flaky = Flaky(ConnectionError("1"), ConnectionError("2"), last)
    decorated = rs.Retry(attempts=3, on=ConnectionError, clock=FakeClock())(flaky)
    with pytest.raises(rs.RetryError) as caught:
        decorated()
    assert caught.value.attempts == 3
    assert caught.value.last_exception is last
    assert caught.value.__cause__ is last
    assert "attempts exhausted" in caught.value.reason
    assert isinstance(caught.value, rs.ResilienceError)


@pytest.mark.anyio
async def test_async_exhaustion_raises_retry_error() -> None:
    """Async functions give up the same way."""
    clock = FakeClock()

    @rs.Retry(attempts=2, on=OSError, clock=clock)
    async def down() -> None:
        raise OSError("down")

    with pytest.raises(rs.RetryError) as caught:
        await down()
    assert caught.value.attempts == 2
    assert isinstance(caught.value.__cause__, OSError)


def test_predicate_decides() -> None:
    """`on` may be a predicate on the exception."""
    flaky = Flaky(ValueError("retry me"), ValueError("fatal"))
    decorated = rs.Retry(on=lambda e: "retry" in str(e), clock=FakeClock())(flaky)
    with pytest.raises(ValueError, match="fatal"):
        decorated()
    assert flaky.calls == 2


def test_own_errors_are_never_retried() -> None:
    """A ResilienceError stops retrying even when `on` would match it."""
    flaky = Flaky(rs.DeadlineExceeded("late"))
    decorated = rs.Retry(on=Exception, clock=FakeClock())(flaky)
    with pytest.raises(rs.DeadlineExceeded):
        decorated()
    assert flaky.calls == 1


def test_on_is_required_when_decorating() -> None:
    """Decorating without `on=` is a TypeError at decoration time, naming the function."""

    def work() -> None: ...

    with pytest.raises(TypeError, match=r"on=.*required.*work"):
        rs.Retry()(work)


def test_signature_and_metadata_are_kept() -> None:
    """The wrapper keeps the name, docstring and signature of the function."""

    def add(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    decorated = rs.Retry(on=OSError)(add)
    assert decorated.__name__ == "add"
    assert decorated.__doc__ == "Add."
    assert inspect.signature(decorated) == inspect.signature(add)
    assert decorated(1) == 3


def test_async_deadline_cuts_the_attempt() -> None:
    """Under a 0.3 s deadline an async attempt that hangs is cancelled: DeadlineExceeded."""
    import anyio

    @rs.Retry(on=OSError, deadline=0.3)
    async def hang() -> None:
        await anyio.sleep(10)

    started = time.monotonic()
    with pytest.raises(rs.DeadlineExceeded):
        anyio.run(hang)
    assert time.monotonic() - started < 2.0


def test_sync_deadline_stops_sleeping() -> None:
    """A sync call never starts a sleep that would end past the deadline."""
    clock = FakeClock()
    flaky = Flaky(*[OSError(str(i)) for i in range(10)])
    policy = rs.Retry(
        attempts=10,
        on=OSError,
        deadline=1.0,
        backoff=rs.Backoff(base=0.4, multiplier=1.0, cap=0.4, jitter="none"),
        clock=clock,
    )
    with pytest.raises(rs.RetryError) as caught:
        policy(flaky)()
    assert clock.sleeps == [0.4, 0.4]
    assert "deadline" in caught.value.reason


def test_budget_is_keyed_by_qualified_name() -> None:
    """Decorated functions spend their own budget, keyed by module and qualified name."""
    budget = rs.RetryBudget(ratio=0.0, min_per_second=0.1)  # one retry per 10 s window
    policy = rs.Retry(attempts=5, on=OSError, budget=budget, clock=FakeClock())

    def first() -> None:
        raise OSError

    def second() -> None:
        raise OSError

    for function in (first, second):
        with pytest.raises(rs.RetryError) as caught:
            policy(function)()
        assert caught.value.attempts == 2
        assert "budget" in caught.value.reason
    key = f"{__name__}.{first.__qualname__}"
    assert budget.storage.totals(key, 0.0) == (1, 1)


def test_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Each retry of a function emits retry.scheduled with the function's key."""
    flaky = Flaky(OSError("x"))
    with caplog.at_level(logging.INFO, logger="resilience"):
        rs.Retry(on=OSError, clock=FakeClock())(flaky)()
    [record] = [r for r in caplog.records if r.msg == "retry.scheduled"]
    assert record.__dict__["function"].endswith("Flaky")
    assert record.__dict__["reason"] == "OSError"
