"""Policies as decorators of plain functions, sync and async, by inspection of what they wrap."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio

from ._exceptions import DeadlineExceeded, ResilienceError, RetryError
from ._log import EventLogger
from ._retry import Retry, RetryCall

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = ["retry_function"]

_events = EventLogger("resilience.retry")


def _decorated_key(policy: Retry, function: Callable[..., Any]) -> str:
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    if policy.on is None:
        raise TypeError(
            f"Retry(on=...) is required to decorate {name}: name the exceptions to retry, "
            "e.g. Retry(on=(ConnectionError, TimeoutError))"
        )
    if policy.key is None:
        return f"{getattr(function, '__module__', '?')}.{name}"
    if not isinstance(policy.key, str):
        raise TypeError(f"Retry.key must be a string to decorate {name}, got {policy.key!r}")
    return policy.key


def retry_function(policy: Retry, function: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``function`` so that the exceptions ``policy.on`` names are retried.

    Exceptions ``on`` does not name, and resilience's own errors, propagate at once. When
    retrying stops, :class:`RetryError` is raised from the last exception. Under a deadline, an
    async attempt still running at the deadline is cancelled and :class:`DeadlineExceeded`
    raised; a sync attempt cannot be interrupted, but no sleep is started past the deadline.
    """
    key = _decorated_key(policy, function)
    name = key

    def begin() -> RetryCall:
        now = policy.clock.monotonic()
        if policy.budget is not None:
            policy.budget.deposit(key, now)
        deadline = None if policy.deadline is None else now + policy.deadline
        return RetryCall(policy, key, deadline)

    def give_up_or_delay(call: RetryCall, exc: Exception) -> float:
        """The delay before the next attempt; raises what the caller must see otherwise."""
        if isinstance(exc, ResilienceError):
            raise exc
        verdict = policy.classify_exception(exc)
        if not verdict.retryable:
            raise exc
        decision = call.decide(verdict, policy.clock.monotonic())
        if not decision.retry:
            raise RetryError(call.attempts, exc, decision.reason) from exc
        _events.info(
            "retry.scheduled",
            function=name,
            attempt=call.attempts - 1,
            delay=round(decision.delay, 4),
            reason=decision.reason,
        )
        return decision.delay

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = begin()
            while True:
                try:
                    if call.deadline is None:
                        return await function(*args, **kwargs)
                    with anyio.move_on_after(call.deadline - policy.clock.monotonic()) as scope:
                        return await function(*args, **kwargs)
                    if scope.cancelled_caught:
                        raise DeadlineExceeded(
                            f"{name}: attempt {call.attempts} cut off by the "
                            f"{policy.deadline:g}s deadline",
                            deadline=policy.deadline,
                        )
                except Exception as exc:
                    delay = give_up_or_delay(call, exc)
                await policy.clock.asleep(delay)

        return cast("Callable[P, R]", async_wrapper)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = begin()
        while True:
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                delay = give_up_or_delay(call, exc)
            policy.clock.sleep(delay)

    return cast("Callable[P, R]", wrapper)
