"""Tools to test code that uses resilience, and the integrations built on it.

- :class:`FaultServer`: a real HTTP/1.1 server on 127.0.0.1 whose paths can be scripted to
  fail: error statuses, delays, connection resets, truncated bodies. It records every request.
- :class:`FakeClock`: a clock that never really sleeps; give it to a policy (``clock=``) and
  the sleeps it would have made are recorded in ``sleeps``.
"""

from __future__ import annotations

import threading

from ._testing_server import (
    FaultServer,
    Outcome,
    RecordedRequest,
    Reset,
    ResetMidBody,
    Respond,
    Truncate,
)

__all__ = [
    "FakeClock",
    "FaultServer",
    "Outcome",
    "RecordedRequest",
    "Reset",
    "ResetMidBody",
    "Respond",
    "Truncate",
]


class FakeClock:
    """A clock that advances only when told to, or when something sleeps on it.

    Sleeping advances the clock by the time asked and records it in :attr:`sleeps`, at once.
    Thread-safe.

    Args:
        start: the initial monotonic reading.
        wall: the initial wall-clock reading (seconds since the epoch).

    Example:
        >>> clock = FakeClock()
        >>> clock.sleep(1.5)
        >>> clock.monotonic(), clock.sleeps
        (1.5, [1.5])
    """

    def __init__(self, start: float = 0.0, wall: float = 1_750_000_000.0) -> None:
        self._monotonic = start
        self._offset = wall - start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._monotonic + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` without recording a sleep."""
        with self._lock:
            self._monotonic += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._monotonic += max(seconds, 0.0)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._monotonic!r})"
