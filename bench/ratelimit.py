"""The rate-limiter half of the benchmark: limits that never bind, peers, and accuracy runs.

Imported by ``bench/run.py``, which owns the tables and the interleaving. Nothing here makes a
network call: the accuracy runs call the limiters directly, with no HTTP.

- :func:`never_binding` is the policy of the overhead sections: a limit far above anything the
  benchmark reaches, so every call takes its slot on the fast path and only the bookkeeping
  is measured.
- :class:`AioLimiterPeer` and :class:`PyratePeer` give ``aiolimiter`` and ``pyrate-limiter``
  the same shape as ours: an awaitable acquisition, and a reset between batches.
- :func:`accuracy_async` and :func:`accuracy_threads` run many callers against a binding limit
  on the real clock and record when each acquisition returned; :class:`Accuracy` turns the
  times into an achieved rate and the largest count seen in any window of the limit's length.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiolimiter
import pyrate_limiter

import resilience
from resilience._ratelimit import Strategy, acquire_async

# A limit the benchmark never reaches. The window is limits' smallest (one second) on purpose:
# the moving window keeps one entry per hit for as long as the window lasts, so a one-second
# window holds at most one second of hits, while "1000000/hour" would hold every hit of the run.
NEVER_PER_SECOND = 1_000_000
NEVER_RATE = f"{NEVER_PER_SECOND}/second"

# The binding limit of the accuracy runs.
ACCURACY_PER_SECOND = 20
ACCURACY_RATE = f"{ACCURACY_PER_SECOND}/second"
WINDOW = 1.0  # seconds: the window of both rates

KEY = "k"


def never_binding(strategy: Strategy = "moving-window") -> resilience.RateLimit:
    """A fresh policy (with its own in-memory storage) that never makes a caller wait."""
    return resilience.RateLimit(NEVER_RATE, strategy=strategy)


def reset(policy: resilience.RateLimit, key: str) -> None:
    """Forget ``key``'s hits, so a moving window starts every batch empty (bounded memory)."""
    policy.state.clear(policy, key)


async def occupancy_costs(levels: tuple[int, ...], calls: int) -> dict[int, float]:
    """µs per ``acquire_async`` (moving window) with ``level`` hits already in the window.

    limits' in-memory moving window keeps one entry per hit in a list and inserts each new hit
    at its front, so a hit costs more the more hits the window holds. One pass, not
    interleaved: the window is filled up to each level in turn (a one-minute window, so nothing
    expires meanwhile), ``calls`` acquisitions are timed, and the window is emptied at the end.
    """
    policy = resilience.RateLimit(f"{NEVER_PER_SECOND}/minute")
    costs: dict[int, float] = {}
    held = 0
    try:
        for level in sorted(levels):
            for _ in range(level - held):
                await acquire_async(policy, KEY, 30)
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                for _ in range(calls):
                    await acquire_async(policy, KEY, 30)
                elapsed = time.perf_counter_ns() - start
            finally:
                gc.enable()
            costs[level] = elapsed / calls / 1000
            held = level + calls
    finally:
        reset(policy, KEY)
    return costs


# --------------------------------------------------------------------------- peers


class Peer(Protocol):
    """A peer limiter, shaped like ours for the benchmark."""

    name: str

    async def acquire(self) -> None:
        """Take one slot, waiting as long as it takes."""

    def reset(self) -> None:
        """Forget past acquisitions (between batches, untimed)."""

    def close(self) -> None: ...


class AioLimiterPeer:
    """``aiolimiter.AsyncLimiter(rate, 1)`` entered with ``async with`` for every acquisition.

    A leaky bucket: it holds one float, so there is nothing to reset between batches.
    """

    name = "aiolimiter"

    def __init__(self, per_second: int) -> None:
        self.limiter = aiolimiter.AsyncLimiter(per_second, WINDOW)

    async def acquire(self) -> None:
        async with self.limiter:
            pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class PyratePeer:
    """pyrate-limiter 4, set up for asyncio as its README says.

    ``Limiter(BucketAsyncWrapper(InMemoryBucket([Rate(n, Duration.SECOND)])))`` with
    ``await limiter.try_acquire_async(key)`` (blocking, no timeout). The in-memory bucket uses its
    default sliding-window log: one entry per acquisition, like our moving window. Build it in a
    running event loop: the async bucket's leak task is created on it.
    """

    name = "pyrate-limiter"

    def __init__(self, per_second: int) -> None:
        rate = pyrate_limiter.Rate(per_second, pyrate_limiter.Duration.SECOND)
        self.bucket = pyrate_limiter.InMemoryBucket([rate])
        self.limiter = pyrate_limiter.Limiter(pyrate_limiter.BucketAsyncWrapper(self.bucket))

    async def acquire(self) -> None:
        if not await self.limiter.try_acquire_async(KEY):
            raise RuntimeError("pyrate-limiter refused an acquisition")

    def reset(self) -> None:
        self.bucket.flush()  # like reset(): every batch starts from an empty log

    def close(self) -> None:
        self.limiter.close()


# --------------------------------------------------------------------------- accuracy


def max_in_window(times: list[float], width: float = WINDOW) -> int:
    """The most of ``times`` that fall in any half-open window ``[t, t + width)``."""
    ordered = sorted(times)
    best = 0
    for index, start in enumerate(ordered):
        best = max(best, bisect.bisect_left(ordered, start + width, lo=index) - index)
    return best


@dataclass
class Accuracy:
    """When each acquisition of a run returned, against the configured rate.

    ``times`` are seconds after the callers started, read with ``time.monotonic`` right after
    the acquisition returned (so they include the wake-up latency a real caller would see).
    """

    name: str
    how: str  # e.g. "50 tasks"
    configured: float  # acquisitions per second
    seconds: float
    times: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Acquisitions within the run."""
        return sum(t < self.seconds for t in self.times)

    @property
    def achieved(self) -> float:
        """Acquisitions per second over the whole run (a fresh limiter's first burst included)."""
        return self.count / self.seconds

    @property
    def steady(self) -> float:
        """Acquisitions per second after the first window, once any initial burst is spent."""
        late = sum(WINDOW <= t < self.seconds for t in self.times)
        return late / (self.seconds - WINDOW)

    @property
    def ratio(self) -> float:
        return self.achieved / self.configured

    @property
    def error_percent(self) -> float:
        return (self.ratio - 1) * 100

    @property
    def max_window(self) -> int:
        """The most acquisitions seen in any window of the limit's length (all of them)."""
        return max_in_window(self.times)

    @property
    def limit(self) -> int:
        return round(self.configured * WINDOW)

    def to_json(self) -> dict[str, Any]:
        return {
            "callers": self.how,
            "configured_per_second": self.configured,
            "seconds": self.seconds,
            "acquisitions": self.count,
            "achieved_per_second": self.achieved,
            "achieved_over_configured": self.ratio,
            "error_percent": self.error_percent,
            "steady_per_second_after_first_window": self.steady,
            "max_in_any_window": self.max_window,
            "window_seconds": WINDOW,
            "limit_per_window": self.limit,
            "times": self.times,
        }


async def accuracy_async(
    result: Accuracy, acquire: Callable[[], Awaitable[object]], tasks: int
) -> Accuracy:
    """``tasks`` tasks acquire in a loop for ``result.seconds``, then are cancelled."""
    times = result.times
    start = time.monotonic()

    async def caller() -> None:
        while True:
            await acquire()
            times.append(time.monotonic() - start)

    running = [asyncio.create_task(caller()) for _ in range(tasks)]
    try:
        await asyncio.sleep(result.seconds)
    finally:
        for task in running:
            task.cancel()
        outcomes = await asyncio.gather(*running, return_exceptions=True)
    failures = [o for o in outcomes if not isinstance(o, asyncio.CancelledError)]
    if failures:
        raise RuntimeError(f"{result.name}: a caller failed: {failures[0]!r}") from None
    return result


def accuracy_threads(
    result: Accuracy, acquire: Callable[[float], object], threads: int
) -> Accuracy:
    """``threads`` threads acquire in a loop for ``result.seconds``.

    ``acquire(max_wait)`` is given the time left, so a wait that would outlast the run raises
    :class:`resilience.RateLimitExceeded` at once and the thread stops on time.
    """
    times = result.times
    errors: list[BaseException] = []
    start = time.monotonic()
    end = start + result.seconds

    def caller() -> None:
        try:
            while (left := end - time.monotonic()) > 0:
                try:
                    acquire(left)
                except resilience.RateLimitExceeded:
                    break
                times.append(time.monotonic() - start)  # list.append is atomic
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    running = [threading.Thread(target=caller, daemon=True) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    if errors:
        raise RuntimeError(f"{result.name}: a caller failed: {errors[0]!r}") from errors[0]
    return result
