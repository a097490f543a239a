"""The per-loop deadline watch: one timer for every attempt, each cut off at its own deadline.

These run a real asyncio loop (``asyncio.run``) with real sleeps; the time bounds are generous.
The retry layer's use of the watch, against a transport that ignores httpx's timeouts, is
tested in test_retry_transport.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

from resilience._transports._deadlines import DeadlineWatch

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the watch needs Task.uncancel (3.11+)"
)


async def _guarded(deadlines: DeadlineWatch, remaining: float, work: float) -> str:
    """Sleep ``work`` seconds under a deadline ``remaining`` seconds away; say how it ended."""
    task: Any = asyncio.current_task()
    guard = deadlines.arm(task, remaining)
    try:
        await asyncio.sleep(work)
        return "done"
    except asyncio.CancelledError:
        if not guard.claim():
            raise
        return "cut"
    finally:
        guard.disarm()


def test_each_attempt_is_cut_at_its_own_deadline() -> None:
    """Staggered deadlines, armed longest first: each is cut at its own time, not the first's."""

    async def main() -> tuple[list[tuple[str, float]], int]:
        deadlines = DeadlineWatch(asyncio.get_running_loop())
        started = time.monotonic()

        async def one(remaining: float, work: float) -> tuple[str, float]:
            outcome = await _guarded(deadlines, remaining, work)
            return outcome, time.monotonic() - started

        results = await asyncio.gather(
            one(5.0, 0.05),  # finishes long before its deadline
            one(0.6, 10.0),
            one(0.3, 10.0),  # armed after a later deadline: the timer must move earlier
            one(0.45, 0.1),  # finishes first
        )
        return results, len(deadlines)

    results, left = asyncio.run(main())
    (first, t1), (second, t2), (third, t3), (fourth, t4) = results
    assert (first, second, third, fourth) == ("done", "cut", "cut", "done")
    assert t1 < 1.0
    assert t4 < 0.45
    assert 0.3 <= t3 < 0.3 + 1.0
    assert 0.6 <= t2 < 0.6 + 1.0
    assert t3 < t2
    assert left == 0


def test_one_timer_serves_many_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred attempts under the same deadline schedule one timer, not a hundred."""

    async def main() -> tuple[int, list[str]]:
        loop = asyncio.get_running_loop()
        deadlines = DeadlineWatch(loop)
        scheduled: list[float] = []
        real_call_at = loop.call_at

        def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(callback, "__self__", None) is deadlines:  # not asyncio.sleep's timers
                scheduled.append(when)
            return real_call_at(when, callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_at", call_at)
        outcomes = await asyncio.gather(*(_guarded(deadlines, 60.0, 0.001) for _ in range(100)))
        return len(scheduled), outcomes

    timers, outcomes = asyncio.run(main())
    assert outcomes == ["done"] * 100
    assert timers == 1


def test_a_cancellation_from_outside_is_not_claimed() -> None:
    """The task is cancelled from outside as its deadline passes: CancelledError, not a cut."""

    async def main() -> tuple[str, int]:
        deadlines = DeadlineWatch(asyncio.get_running_loop())
        inner = asyncio.ensure_future(_guarded(deadlines, 0.2, 10.0))
        await asyncio.sleep(0.05)
        inner.cancel()  # the outside cancellation lands first...
        await asyncio.sleep(0)
        outcome = "no exception"
        try:
            await inner
        except asyncio.CancelledError:
            outcome = "cancelled"
        return outcome, len(deadlines)

    assert asyncio.run(main()) == ("cancelled", 0)


def test_both_cancellations_at_once_leave_the_outside_one() -> None:
    """The watch cuts and the caller cancels in the same loop turn: the caller's one wins."""

    async def main() -> tuple[list[bool], int]:
        loop = asyncio.get_running_loop()
        deadlines = DeadlineWatch(loop)
        claimed: list[bool] = []

        async def attempt() -> None:
            task: Any = asyncio.current_task()
            guard = deadlines.arm(task, 0.05)
            loop.call_at(guard.when, task.cancel)  # due with the watch's timer
            try:
                await asyncio.sleep(10.0)
            except asyncio.CancelledError:
                claimed.append(guard.claim())
                raise
            finally:
                guard.disarm()

        inner = asyncio.ensure_future(attempt())
        with pytest.raises(asyncio.CancelledError):
            await inner
        return claimed, inner.cancelling()

    claimed, pending = asyncio.run(main())
    assert claimed == [False]
    assert pending == 1  # the caller's request stands; the watch's was withdrawn


def test_a_cut_the_attempt_swallowed_is_withdrawn() -> None:
    """The attempt caught the cut and returned: disarm withdraws the cancel request."""

    async def main() -> tuple[str, int, int]:
        deadlines = DeadlineWatch(asyncio.get_running_loop())
        task: Any = asyncio.current_task()
        guard = deadlines.arm(task, 0.05)
        try:
            try:
                await asyncio.sleep(10.0)
                outcome = "slept"
            except asyncio.CancelledError:
                outcome = "swallowed"  # e.g. a transport that turns cancellation into a result
            during = task.cancelling()
        finally:
            guard.disarm()
        return outcome, during, task.cancelling()

    # the run ends normally: had the cut stayed pending, asyncio.run would raise CancelledError
    assert asyncio.run(main()) == ("swallowed", 1, 0)
