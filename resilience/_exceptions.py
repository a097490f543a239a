"""The exception tree of resilience.

::

    ResilienceError                 every error this library raises on purpose
    ├── RetryError                  a decorated function ran out of attempts
    ├── DeadlineExceeded            an attempt was cut off by the logical request's deadline
    ├── RateLimitExceeded           the rate limit refused a call (mode="raise", or max_wait)
    └── CircuitOpenError            the circuit is open (or its one probe is in flight)

These are plain Python classes and carry no HTTP library in their ancestry. The httpx adapter
(``resilience._transports``) raises subclasses that also derive from the matching httpx class,
so that ``except rs.DeadlineExceeded`` and ``except httpx.TimeoutException`` both catch one
raised inside a transport.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "DeadlineExceeded",
    "RateLimitExceeded",
    "ResilienceError",
    "RetryError",
]


class ResilienceError(Exception):
    """Base class of every error resilience raises on purpose."""


class RetryError(ResilienceError):
    """A function decorated with ``Retry`` failed on every attempt it was allowed.

    Raised ``from`` the last exception, which is also kept in ``last_exception``.

    Attributes:
        attempts: how many times the function was called.
        last_exception: the exception the last attempt raised.
        reason: why retrying stopped ("attempts exhausted", "deadline", "budget exhausted"...).
    """

    def __init__(self, attempts: int, last_exception: BaseException, reason: str) -> None:
        self.attempts = attempts
        self.last_exception = last_exception
        self.reason = reason
        super().__init__(
            f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} ({reason}): "
            f"{type(last_exception).__name__}: {last_exception}"
        )


class DeadlineExceeded(ResilienceError):
    """An attempt was cut off because the logical request's deadline passed.

    Attributes:
        deadline: the deadline in seconds, as configured on the policy.
    """

    def __init__(self, message: str, *, deadline: float | None = None) -> None:
        self.deadline = deadline
        super().__init__(message)


class RateLimitExceeded(ResilienceError):
    """The rate limit refused a call: ``mode="raise"``, or the wait would pass ``max_wait``.

    Nothing was sent.

    Attributes:
        retry_after: seconds until the limit is expected to let a call through.
        key: the rate-limit key that is exhausted.
    """

    def __init__(self, message: str, *, retry_after: float, key: str) -> None:
        self.retry_after = retry_after
        self.key = key
        super().__init__(message)


class CircuitOpenError(ResilienceError):
    """The circuit is open: the call failed fast, without touching the dependency.

    The call that trips a breaker gets its own outcome; only later calls get this error.

    Attributes:
        retry_after: seconds until a probe is allowed (0 while another caller's probe is in
            flight: callers never queue behind a probe).
        key: the breaker's key.
    """

    def __init__(self, message: str, *, retry_after: float, key: str) -> None:
        self.retry_after = retry_after
        self.key = key
        super().__init__(message)
