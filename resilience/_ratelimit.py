"""The rate-limit policy, over the ``limits`` package: rate strings, strategies and storages.

``limits`` counts; this module decides how a caller waits for a slot:

- A caller that finds a slot free and nobody queued takes it at once (the fast path).
- Otherwise callers queue per key and are served first come, first served: only the head of
  the queue asks the storage; when it gets its slot it wakes the next one. The head sleeps
  until the window frees a slot (computed from the storage's window stats, never polled).
  Threads queue among themselves, and the tasks of each event loop among themselves; both
  draw on the same counts.
- A server that says the quota is spent (a 429 with Retry-After, or ``RateLimit-Remaining:
  0`` with a reset) pauses the key: every caller on it waits until then, bounded by
  ``max_wait``.

The in-memory storage is guarded by our own lock, because ``limits``' ``MemoryStorage`` is not
safe under heavy thread contention; the same storage serves the sync and the async path, so
both share one count. Other storages (``redis://...``) are reached through ``limits.aio`` on
the async path.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import anyio
import limits
import limits.aio.strategies
import limits.strategies
from limits.storage import storage_from_string

from ._clock import SYSTEM_CLOCK, Clock
from ._exceptions import RateLimitExceeded
from ._forksafe import after_fork_in_child
from ._keys import KeyFunc
from ._log import redact_url
from ._validate import check_instance, check_number

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = ["STRATEGIES", "RateLimit", "RateLimitStorage", "acquire", "acquire_async"]

Strategy = Literal["moving-window", "fixed-window", "sliding-window-counter"]
STRATEGIES: tuple[str, ...] = ("moving-window", "fixed-window", "sliding-window-counter")
_MIN_WAIT = 0.001  # added to every wait: sleep past a window's edge, never spin on it
_MAX_KEYS = 10_000
_ZERO_MULTIPLES = re.compile(r"/\s*0+\s*[a-z]", re.IGNORECASE)

Exceeded = Callable[[str, float, str], BaseException]
"""Builds the error raised when a wait is refused: (message, retry_after, key) -> exception."""


def _exceeded(message: str, retry_after: float, key: str) -> BaseException:
    return RateLimitExceeded(message, retry_after=retry_after, key=key)


class RateLimitStorage:
    """Where a rate limit's state lives: counts in a ``limits`` storage, queues and pauses here.

    Every policy holding this object shares its counts, sync and async callers included.

    Args:
        uri: a ``limits`` storage URI: ``"memory://"`` (default), ``"redis://host:port/db"``...
        options: passed to ``limits.storage.storage_from_string`` (e.g. socket timeouts).

    Raises:
        ValueError: an unknown or unusable URI, naming it.
    """

    def __init__(self, uri: str = "memory://", **options: Any) -> None:
        if not isinstance(uri, str):
            raise TypeError(f"RateLimit.storage must be a storage URI or object, got {uri!r}")
        if uri.startswith("async+"):
            raise ValueError(
                f"RateLimit.storage: give the sync URI ({uri[6:]!r}), not {uri!r}; the async "
                "path reaches the same storage by itself, so sync and async share one count"
            )
        try:
            self._sync = storage_from_string(uri, **options)
        except (limits.errors.ConfigurationError, ValueError) as exc:
            raise ValueError(f"RateLimit.storage: unusable storage URI {uri!r}: {exc}") from exc
        self.uri = uri
        self._options = options
        self.in_memory = uri.startswith("memory://")
        self._async: Any = None
        self._limiters: dict[tuple[str, bool], Any] = {}
        self._lock = threading.Lock()  # queues, pauses, and the in-memory storage
        self._pauses: OrderedDict[str, float] = OrderedDict()
        self.thread_queues: dict[str, deque[threading.Event]] = {}
        self.task_queues: dict[tuple[str, int], deque[anyio.Event]] = {}
        after_fork_in_child(self, RateLimitStorage._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self.thread_queues.clear()
        self.task_queues.clear()

    def __repr__(self) -> str:
        return f"RateLimitStorage({redact_url(self.uri)!r})"  # a URI may hold a password

    def limiter(self, strategy: str) -> Any:
        """The sync ``limits`` strategy over this storage."""
        limiter = self._limiters.get((strategy, False))
        if limiter is None:
            kind: Any = limits.strategies.STRATEGIES[strategy]
            limiter = self._limiters[(strategy, False)] = kind(self._sync)
        return limiter

    def async_limiter(self, strategy: str) -> Any:
        """The ``limits.aio`` strategy over the async twin of this (non-memory) storage."""
        limiter = self._limiters.get((strategy, True))
        if limiter is None:
            if self._async is None:
                options = dict(self._options)
                if self.uri.startswith(("redis", "valkey")):
                    options.setdefault("implementation", "redispy")
                self._async = storage_from_string(f"async+{self.uri}", **options)
            kind: Any = limits.aio.strategies.STRATEGIES[strategy]
            limiter = self._limiters[(strategy, True)] = kind(self._async)
        return limiter

    # -- pauses ----------------------------------------------------------------------------------

    def pause(self, key: str, seconds: float, now: float) -> None:
        """Hold every caller on ``key`` until monotonic time ``now + seconds`` (never shorter)."""
        until = now + seconds
        with self._lock:
            if self._pauses.get(key, 0.0) < until:
                self._pauses[key] = until
                self._pauses.move_to_end(key)
                if len(self._pauses) > _MAX_KEYS:
                    self._pauses.popitem(last=False)

    def paused_for(self, key: str, now: float) -> float:
        """Seconds left of a pause on ``key`` (0 when none)."""
        until = self._pauses.get(key)
        if until is None:
            return 0.0
        if until <= now:
            with self._lock:
                if self._pauses.get(key) == until:
                    del self._pauses[key]
            return 0.0
        return until - now

    # -- taking a slot -----------------------------------------------------------------------------

    @staticmethod
    def _take(limiter: Any, items: tuple[Any, ...], key: str, strategy: str, now: float) -> float:
        if len(items) == 1 and strategy != "fixed-window":
            # moving and sliding windows do not count a refused hit: one call suffices
            if limiter.hit(items[0], key):
                return 0.0
        elif all(limiter.test(item, key) for item in items) and all(
            limiter.hit(item, key) for item in items
        ):
            # hit() can still refuse after test() said yes (limits counts an entry at exactly
            # now - expiry as live in one and expired in the other; Redis has races): then we
            # wait, and a slot taken in an earlier window is spent: never more than the limit.
            return 0.0
        return RateLimitStorage._wait(limiter, items, key, now)

    @staticmethod
    def _wait(limiter: Any, items: tuple[Any, ...], key: str, now: float) -> float:
        wait = 0.0
        for item in items:
            if not limiter.test(item, key):
                wait = max(wait, limiter.get_window_stats(item, key).reset_time - now)
        return wait + _MIN_WAIT  # land just past the reset, not on it

    def try_acquire(self, policy: RateLimit, key: str) -> float:
        """Take a slot for ``key`` in every window: 0.0 if taken, else seconds to wait."""
        clock = policy.clock
        paused = self.paused_for(key, clock.monotonic())
        if paused:
            return paused
        limiter = self.limiter(policy.strategy)
        if self.in_memory:
            with self._lock:
                return self._take(limiter, policy.items, key, policy.strategy, time.time())
        return self._take(limiter, policy.items, key, policy.strategy, time.time())

    async def try_acquire_async(self, policy: RateLimit, key: str) -> float:
        """Async :meth:`try_acquire` (the in-memory storage is used as is: it never blocks)."""
        if self.in_memory:
            return self.try_acquire(policy, key)
        clock = policy.clock
        paused = self.paused_for(key, clock.monotonic())
        if paused:
            return paused
        limiter = self.async_limiter(policy.strategy)
        items = policy.items
        if len(items) == 1 and policy.strategy != "fixed-window":
            if await limiter.hit(items[0], key):
                return 0.0
        else:
            tests = [await limiter.test(item, key) for item in items]
            if all(tests):
                for item in items:
                    if not await limiter.hit(item, key):
                        break  # see _take: wait, with a slot possibly spent
                else:
                    return 0.0
        now = time.time()  # limits dates its windows with time.time(), whatever our clock is
        wait = 0.0
        for item in items:
            if not await limiter.test(item, key):
                stats = await limiter.get_window_stats(item, key)
                wait = max(wait, stats.reset_time - now)
        return wait + _MIN_WAIT

    def clear(self, policy: RateLimit, key: str) -> None:
        """Forget the counts and any pause of ``key`` (tests, administration)."""
        limiter = self.limiter(policy.strategy)
        with self._lock:
            self._pauses.pop(key, None)
            for item in policy.items:
                limiter.clear(item, key)


def _parse_rate(rate: object) -> tuple[Any, ...]:
    if not isinstance(rate, str):
        raise TypeError(f"RateLimit.rate must be a string such as '10/second', got {rate!r}")
    try:
        items = tuple(limits.parse_many(rate))
    except ValueError as exc:
        raise ValueError(
            f"RateLimit.rate: cannot read {rate!r}; write e.g. '10/second' or "
            "'10/second;500/minute' ({exc})"
        ) from exc
    if _ZERO_MULTIPLES.search(rate):
        raise ValueError(f"RateLimit.rate: a window of 0 in {rate!r} makes no sense")
    for item in items:
        if item.amount < 1:
            raise ValueError(f"RateLimit.rate: {rate!r} allows no call at all (amount 0)")
    return items


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most so many calls per window, per key. Immutable; change with ``replace``.

    Used as the policy of a :class:`RateLimitTransport` and as a decorator on sync and async
    functions. Built on the ``limits`` package: its rate strings, strategies and storages.

    Args:
        rate: one or more windows, e.g. ``"10/second;500/minute"``: every window must allow.
        key: which calls share a budget: a function of the request for transports (default:
            per host), a string for decorators (default: the function's module and qualified
            name).
        mode: ``"wait"`` sleeps until the window allows (at most ``max_wait``); ``"raise"``
            raises :class:`RateLimitExceeded` at once.
        max_wait: the longest a call waits, seconds; a longer wait raises at once.
        storage: a ``limits`` storage URI (``"memory://"``, ``"redis://127.0.0.1:6379"``) or a
            :class:`RateLimitStorage`; every policy holding the same object shares the counts.
        strategy: ``"moving-window"`` (default: never more than the limit in any window),
            ``"fixed-window"`` (cheapest; allows up to twice the limit across a window edge)
            or ``"sliding-window-counter"`` (an approximation of the moving window).
        clock: where waits sleep and pauses are timed. The windows themselves are kept by
            ``limits``, which reads ``time.time()``; a test that fakes time for the windows
            patches ``time.time`` as well (see tests/test_ratelimit_policy.py).
    """

    rate: str
    _: KW_ONLY
    key: KeyFunc | str | None = None
    mode: Literal["wait", "raise"] = "wait"
    max_wait: float = 30.0
    storage: RateLimitStorage | str = "memory://"
    strategy: Strategy = "moving-window"
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False, repr=False)
    items: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _parse_rate(self.rate))
        key: object = self.key
        if key is not None and not (isinstance(key, str) or callable(key)):
            raise TypeError(f"RateLimit.key must be a string or a function, got {key!r}")
        mode: object = self.mode
        if mode not in ("wait", "raise"):
            raise ValueError(f"RateLimit.mode must be 'wait' or 'raise', got {mode!r}")
        check_number("RateLimit", "max_wait", self.max_wait, minimum=0)
        strategy: object = self.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"RateLimit.strategy must be one of {STRATEGIES}, got {strategy!r}")
        if isinstance(self.storage, str):
            object.__setattr__(self, "storage", RateLimitStorage(self.storage))
        check_instance("RateLimit", "storage", self.storage, RateLimitStorage)
        check_instance("RateLimit", "clock", self.clock, Clock)

    @property
    def state(self) -> RateLimitStorage:
        """The storage object holding this policy's counts, queues and pauses."""
        return cast("RateLimitStorage", self.storage)

    def replace(self, **changes: Any) -> RateLimit:
        """A copy with ``changes`` applied (and validated); the storage is kept."""
        return dataclasses.replace(self, **changes)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function: each call first takes a slot."""
        name = getattr(function, "__qualname__", None) or type(function).__qualname__
        if self.key is None:
            key = f"{getattr(function, '__module__', '?')}.{name}"
        elif isinstance(self.key, str):
            key = self.key
        else:
            raise TypeError(f"RateLimit.key must be a string to decorate {name}, got {self.key!r}")
        policy = self

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await acquire_async(policy, key, policy.max_wait)
                return await function(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            acquire(policy, key, policy.max_wait)
            return function(*args, **kwargs)

        return cast("Callable[P, R]", wrapper)


def _refuse(
    policy: RateLimit, key: str, wait: float, max_wait: float, exceeded: Exceeded
) -> BaseException:
    if policy.mode == "raise":
        reason = "the limit is reached"
    elif max_wait < policy.max_wait:
        reason = f"the wait would pass the deadline ({max_wait:.3g}s left)"
    else:
        reason = f"the wait would pass max_wait ({policy.max_wait:g}s)"
    return exceeded(f"rate limit {policy.rate!r} for {key!r}: {reason}", wait, key)


def _estimate(policy: RateLimit, key: str) -> float:
    """Seconds until the head of the queue may get a slot (for a refused waiter's retry_after)."""
    state = policy.state
    paused = state.paused_for(key, policy.clock.monotonic())
    if paused or not state.in_memory:
        return paused or policy.max_wait
    with state._lock:
        limiter = state.limiter(policy.strategy)
        return state._wait(limiter, policy.items, key, time.time())


def acquire(policy: RateLimit, key: str, max_wait: float, exceeded: Exceeded = _exceeded) -> None:
    """Take a slot for ``key``, waiting at most ``max_wait`` seconds, first come first served.

    Raises:
        RateLimitExceeded: (or what ``exceeded`` builds) in ``"raise"`` mode when no slot is
            free, or when the wait would pass ``max_wait``. Nothing is consumed then.
    """
    state = policy.state
    clock = policy.clock
    if policy.mode == "raise":
        wait = state.try_acquire(policy, key)
        if wait:
            raise _refuse(policy, key, wait, max_wait, exceeded)
        return
    queues = state.thread_queues
    with state._lock:
        queue = queues.get(key)
        if queue is None:
            queue = queues[key] = deque()
        me = threading.Event()
        queue.append(me)
        head = queue[0] is me
    started = clock.monotonic()
    try:
        while True:
            if not head:
                # wait for the caller ahead to take its slot and wake us (real time)
                if not me.wait(max(max_wait - (clock.monotonic() - started), 0.0)):
                    raise _refuse(policy, key, _estimate(policy, key), max_wait, exceeded)
                head = True
            wait = state.try_acquire(policy, key)
            if not wait:
                return
            if clock.monotonic() - started + wait > max_wait:
                raise _refuse(policy, key, wait, max_wait, exceeded)
            clock.sleep(wait)
    finally:
        with state._lock:
            queue.remove(me)
            if queue:
                queue[0].set()
            elif queues.get(key) is queue:
                del queues[key]


async def acquire_async(
    policy: RateLimit, key: str, max_wait: float, exceeded: Exceeded = _exceeded
) -> None:
    """Async :func:`acquire`: waiting tasks sleep on the loop; no lock is held across an await."""
    state = policy.state
    clock = policy.clock
    if policy.mode == "raise":
        wait = await state.try_acquire_async(policy, key)
        if wait:
            raise _refuse(policy, key, wait, max_wait, exceeded)
        return
    queues = state.task_queues
    slot = (key, threading.get_ident())  # one queue per event loop (loops live in one thread)
    with state._lock:
        queue = queues.get(slot)
        if queue is None:
            queue = queues[slot] = deque()
        me = anyio.Event()
        queue.append(me)
        head = queue[0] is me
    started = clock.monotonic()
    try:
        while True:
            if not head:
                with anyio.move_on_after(max(max_wait - (clock.monotonic() - started), 0.0)):
                    await me.wait()
                if not me.is_set():
                    raise _refuse(policy, key, _estimate(policy, key), max_wait, exceeded)
                head = True
            wait = await state.try_acquire_async(policy, key)
            if not wait:
                return
            if clock.monotonic() - started + wait > max_wait:
                raise _refuse(policy, key, wait, max_wait, exceeded)
            await clock.asleep(wait)
    finally:
        with state._lock:
            queue.remove(me)
            if queue:
                queue[0].set()
            elif queues.get(slot) is queue:
                del queues[slot]
