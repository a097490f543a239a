"""Time: the only module that reads a clock or sleeps.

Policies never read time; they take ``now`` as an argument and return how long to wait. The
transports and decorators read time and sleep through a :class:`Clock`, which tests replace
with :class:`resilience.testing.FakeClock`.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Where resilience reads the time and sleeps."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock: deadlines, windows and delays are measured on it."""

    def time(self) -> float:
        """Seconds since the Unix epoch: only used to read HTTP dates such as ``Retry-After``."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` without blocking the event loop."""


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, :func:`time.sleep`, anyio's sleep.

    ``asleep`` goes through anyio, so it works under asyncio and trio.
    """

    __slots__ = ()

    # the builtins themselves: read on every request, so no Python frame in between
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await anyio.sleep(max(seconds, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()
