"""Deadlines for asyncio tasks with one timer per event loop, not one per attempt.

``asyncio.timeout()`` schedules a timer handle on every use and cancels it on the way out:
about 5 µs of handle and heap work per attempt, paid in full by the common attempt that ends
long before its deadline. A :class:`DeadlineWatch` keeps the attempts of one event loop in a
set and a single timer at the earliest deadline among them, so arming and disarming an
attempt is a set insertion and a removal. When the timer fires, every attempt past its
deadline is cancelled, and the timer is set again for the earliest deadline left; with the
same deadline on every request that is about one wake-up per deadline's length.

The cancellation follows ``asyncio.timeout`` exactly: the task's cancel count is taken when an
attempt is armed and checked when it is cut off, so a cancellation from outside is never
mistaken for the deadline, and a cut that lands after the attempt ended is withdrawn
(``Task.uncancel``). Python 3.11 or later (``Task.cancelling``/``uncancel``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

__all__ = ["DeadlineWatch", "Guard", "arm"]

# The loop may run a timer callback up to its clock's resolution early (asyncio compares
# ``when < now + clock_resolution``): a guard that close to its deadline counts as due.
_EARLY = time.get_clock_info("monotonic").resolution


class Guard:
    """One armed attempt: its task, its deadline (loop time) and whether the watch cut it."""

    __slots__ = ("cancelling", "expired", "task", "watch", "when")

    # ``task`` is an asyncio.Task of 3.11+; typed Any since our type checks target 3.10's stubs
    def __init__(self, watch: DeadlineWatch, task: Any, when: float) -> None:
        self.watch = watch
        self.task = task
        self.when = when
        self.cancelling = task.cancelling()  # the cancel requests pending before this attempt
        self.expired = False

    def claim(self) -> bool:
        """After a ``CancelledError`` in the attempt: whether it is the watch's cut alone.

        True when the watch cut the attempt off and nothing else asked to cancel the task
        meanwhile; the cut is then withdrawn, and the caller raises its own error instead.
        """
        if not self.expired:
            return False
        self.expired = False
        return bool(self.task.uncancel() <= self.cancelling)

    def disarm(self) -> None:
        """The attempt is over: stop watching it, and withdraw a cut it did not see."""
        self.watch._guards.discard(self)
        if self.expired:  # cut off, but the attempt ended some other way
            self.expired = False
            self.task.uncancel()


class DeadlineWatch:
    """The armed attempts of one event loop and the one timer that cuts them off.

    Only the loop's own thread touches it (every method runs on the loop), so it needs no lock.
    """

    __slots__ = ("_guards", "_timer", "_wake_at", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._guards: set[Guard] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = math.inf

    def __len__(self) -> int:
        return len(self._guards)

    def arm(self, task: Any, remaining: float) -> Guard:
        """Watch ``task`` until :meth:`Guard.disarm`; cancel it ``remaining`` seconds from now."""
        guard = Guard(self, task, self.loop.time() + remaining)
        self._guards.add(guard)
        if guard.when < self._wake_at:
            self._schedule(guard.when)
        return guard

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._wake_at = when
        self._timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._wake_at = math.inf
        due = self.loop.time() + _EARLY
        earliest = math.inf
        for guard in list(self._guards):
            if guard.when <= due:
                self._guards.discard(guard)
                guard.expired = True
                guard.task.cancel()
            elif guard.when < earliest:
                earliest = guard.when
        if earliest < math.inf:
            self._schedule(earliest)

    def __repr__(self) -> str:
        return f"DeadlineWatch({len(self._guards)} armed, next wake at {self._wake_at:.3f})"


class _ThreadWatch(threading.local):
    current: DeadlineWatch | None = None


_local = _ThreadWatch()


def arm(task: Any, remaining: float) -> Guard:
    """Cancel the asyncio ``task`` in ``remaining`` seconds unless disarmed first.

    Use as::

        guard = arm(task, remaining)
        try:
            await attempt
        except asyncio.CancelledError:
            if not guard.claim():
                raise  # cancelled from outside
            raise DeadlineExceeded(...) from None
        finally:
            guard.disarm()
    """
    loop = task.get_loop()
    found = _local.current  # the watch of this thread's running loop (one loop at a time)
    if found is None or found.loop is not loop:
        found = _local.current = DeadlineWatch(loop)
    return found.arm(task, remaining)
