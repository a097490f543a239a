"""RateLimit: validation, accuracy with a fake clock, waiting, pauses, fairness, decorators."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience._ratelimit import acquire, acquire_async
from resilience.testing import FakeClock


@contextmanager
def fake_time(clock: FakeClock) -> Iterator[FakeClock]:
    """Make `limits` (which reads time.time) run on the fake clock too."""
    with mock.patch("time.time", clock.time):
        yield clock


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rate": "ten per second"}, ValueError, r"RateLimit.rate: cannot read 'ten per second'"),
        ({"rate": "0/second"}, ValueError, r"allows no call"),
        ({"rate": "10/0 seconds"}, ValueError, r"window of 0"),
        ({"rate": 10}, TypeError, r"RateLimit.rate must be a string"),
        ({"rate": "1/second", "mode": "later"}, ValueError, r"RateLimit.mode .* got 'later'"),
        ({"rate": "1/second", "max_wait": -1}, ValueError, r"RateLimit.max_wait must be >= 0"),
        ({"rate": "1/second", "strategy": "leaky"}, ValueError, r"RateLimit.strategy .*'leaky'"),
        ({"rate": "1/second", "storage": "nope://x"}, ValueError, r"storage URI 'nope://x'"),
        ({"rate": "1/second", "storage": "async+memory://"}, ValueError, r"the sync URI"),
        ({"rate": "1/second", "key": 5}, TypeError, r"RateLimit.key must be"),
    ],
)
def test_bad_configuration_fails_at_construction(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Each bad value raises when the policy is built, naming the field and the value."""
    rate = kwargs.pop("rate")
    with pytest.raises(error, match=match):
        rs.RateLimit(rate, **kwargs)  # type: ignore[arg-type]


def test_several_windows_and_replace_keeps_the_storage() -> None:
    """A rate string may hold several windows; replace() keeps the counts."""
    policy = rs.RateLimit("10/second;500/minute")
    assert [item.amount for item in policy.items] == [10, 500]
    other = policy.replace(key="tenant-7", mode="raise")
    assert other.storage is policy.storage
    assert other.items == policy.items
    assert isinstance(policy.storage, rs.RateLimitStorage)


# -- accuracy with a fake clock ---------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    amount=st.integers(min_value=1, max_value=8),
    seconds=st.integers(min_value=1, max_value=5),
    calls=st.integers(min_value=1, max_value=60),
)
def test_moving_window_never_exceeds_the_limit(amount: int, seconds: int, calls: int) -> None:
    """Waiting callers never get more than `amount` slots in any window of `seconds`."""
    clock = FakeClock(wall=1_800_000_000.0)
    policy = rs.RateLimit(f"{amount}/{seconds} seconds", clock=clock, max_wait=3600)
    sent: list[float] = []
    with fake_time(clock):
        for _ in range(calls):
            acquire(policy, "k", policy.max_wait)
            sent.append(clock.time())
    for start in sent:
        assert sum(start <= t < start + seconds for t in sent) <= amount
    # and it waits no longer than needed: full windows back to back
    assert sent[-1] - sent[0] <= seconds * ((calls - 1) // amount) + 0.01 * calls


def test_every_window_of_a_multi_window_rate_holds() -> None:
    """With "3/second;5/10 seconds" both windows hold, and a refused window consumes nothing."""
    clock = FakeClock(wall=1_800_000_000.0)
    policy = rs.RateLimit("3/second;5/10 seconds", clock=clock, max_wait=3600)
    sent: list[float] = []
    with fake_time(clock):
        for _ in range(15):
            acquire(policy, "k", policy.max_wait)
            sent.append(clock.time())
    for start in sent:
        assert sum(start <= t < start + 1 for t in sent) <= 3
        assert sum(start <= t < start + 10 for t in sent) <= 5
    assert sent[5] - sent[0] >= 10  # the sixth call had to wait for the 10 s window


def test_raise_mode_refuses_at_once() -> None:
    """mode="raise": the call past the limit raises RateLimitExceeded with retry_after and key."""
    clock = FakeClock(wall=1_800_000_000.0)
    policy = rs.RateLimit("3/minute", mode="raise", clock=clock)
    with fake_time(clock):
        for _ in range(3):
            acquire(policy, "api", policy.max_wait)
        with pytest.raises(rs.RateLimitExceeded) as caught:
            acquire(policy, "api", policy.max_wait)
    assert 59 <= caught.value.retry_after <= 60.01
    assert caught.value.key == "api"
    assert clock.sleeps == []


def test_wait_beyond_max_wait_raises_without_sleeping() -> None:
    """A wait longer than max_wait raises at once; nothing is consumed."""
    clock = FakeClock(wall=1_800_000_000.0)
    policy = rs.RateLimit("1/minute", max_wait=5.0, clock=clock)
    with fake_time(clock):
        acquire(policy, "k", policy.max_wait)
        with pytest.raises(rs.RateLimitExceeded, match="max_wait"):
            acquire(policy, "k", policy.max_wait)
        assert clock.sleeps == []
        clock.advance(60)
        acquire(policy, "k", policy.max_wait)


def test_keys_are_independent() -> None:
    """One key's spent budget does not hold back another."""
    clock = FakeClock(wall=1_800_000_000.0)
    policy = rs.RateLimit("1/minute", mode="raise", clock=clock)
    with fake_time(clock):
        acquire(policy, "a", 0)
        acquire(policy, "b", 0)
        with pytest.raises(rs.RateLimitExceeded):
            acquire(policy, "a", 0)


def test_pause_holds_the_key() -> None:
    """A pause (as a 429 sets) makes the next caller wait it out, though slots are free."""
    clock = FakeClock(wall=1_800_000_000.0)
    policy = rs.RateLimit("100/second", clock=clock)
    with fake_time(clock):
        policy.state.pause("k", 4.0, clock.monotonic())
        acquire(policy, "k", policy.max_wait)
        acquire(policy, "other", policy.max_wait)
    assert clock.sleeps == [4.0]


@pytest.mark.anyio
async def test_async_acquire_uses_the_same_counts() -> None:
    """Sync and async callers of one policy draw on one count (API.md 10.1)."""
    clock = FakeClock(wall=1_800_000_000.0)
    policy = rs.RateLimit("2/minute", mode="raise", clock=clock)
    with fake_time(clock):
        acquire(policy, "k", 0)
        await acquire_async(policy, "k", 0)
        with pytest.raises(rs.RateLimitExceeded):
            await acquire_async(policy, "k", 0)
        with pytest.raises(rs.RateLimitExceeded):
            acquire(policy, "k", 0)


# -- decorators --------------------------------------------------------------------------------


def test_decorated_function_waits_for_its_slot() -> None:
    """@RateLimit on a sync function: calls past the limit sleep until the window allows."""
    clock = FakeClock(wall=1_800_000_000.0)

    @rs.RateLimit("2/second", clock=clock)
    def call(x: int) -> int:
        return x + 1

    with fake_time(clock):
        assert [call(i) for i in range(5)] == [1, 2, 3, 4, 5]
    assert len(clock.sleeps) == 2
    assert clock.monotonic() >= 2.0


@pytest.mark.anyio
async def test_decorated_coroutine_raises_in_raise_mode() -> None:
    """@RateLimit(mode="raise") on an async function raises past the limit."""
    clock = FakeClock(wall=1_800_000_000.0)

    @rs.RateLimit("1/minute", mode="raise", clock=clock)
    async def call() -> str:
        return "ok"

    with fake_time(clock):
        assert await call() == "ok"
        with pytest.raises(rs.RateLimitExceeded) as caught:
            await call()
    assert caught.value.key.endswith("call")


# -- real time: fairness, throughput, threads --------------------------------------------------


def test_threads_are_served_first_come_first_served() -> None:
    """Eight threads queued behind a spent window get their slots in arrival order."""
    policy = rs.RateLimit("4/second")
    order: list[int] = []
    for _ in range(4):
        acquire(policy, "k", 10)

    def worker(index: int) -> None:
        acquire(policy, "k", 10)
        order.append(index)

    threads = []
    for index in range(8):
        thread = threading.Thread(target=worker, args=(index,))
        thread.start()
        threads.append(thread)
        time.sleep(0.02)  # a clear arrival order
    for thread in threads:
        thread.join(10)
    assert order == list(range(8))


def test_memory_storage_is_exact_under_thread_contention() -> None:
    """8 threads hammering one fixed-window key get exactly the limit (our lock guards limits)."""
    policy = rs.RateLimit("1000/hour", mode="raise", strategy="fixed-window")
    granted = [0] * 8
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:

        def worker(index: int) -> None:
            for _ in range(200):
                try:
                    acquire(policy, "k", 0)
                    granted[index] += 1
                except rs.RateLimitExceeded:
                    pass

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(previous)
    assert sum(granted) == 1000


@pytest.mark.anyio
async def test_fifty_callers_get_the_configured_rate_without_blocking_the_loop() -> None:
    """50 tasks against "20/second" for 5 s: within 5% of 20/s, and the loop keeps ticking."""
    policy = rs.RateLimit("20/second", max_wait=60)
    sent: list[float] = []
    ticks = 0
    start = time.monotonic()
    end = start + 5.0

    async def caller() -> None:
        while True:
            await acquire_async(policy, "k", policy.max_wait)
            now = time.monotonic()
            if now >= end:
                return
            sent.append(now)

    async def ticker() -> None:
        nonlocal ticks
        while time.monotonic() < end:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        for _ in range(50):
            group.start_soon(caller)
    rate = len(sent) / 5.0
    assert 19.0 <= rate <= 21.0
    for t in sent:
        assert sum(t <= u < t + 1.0 for u in sent) <= 20
    assert ticks >= 150  # 500 possible 10 ms ticks in 5 s; a blocked loop would give ~none


@pytest.mark.anyio
async def test_thousand_waiting_tasks_are_served_in_order() -> None:
    """1,000 tasks queued on one key are served first come, first served, none lost."""
    policy = rs.RateLimit("500/second", max_wait=30)
    order: list[int] = []

    async def caller(index: int) -> None:
        await acquire_async(policy, "k", policy.max_wait)
        order.append(index)

    async with anyio.create_task_group() as group:
        for index in range(1000):
            group.start_soon(caller, index)
            if index % 100 == 0:
                await anyio.lowlevel.checkpoint()
    assert sorted(order) == list(range(1000))
    assert order == list(range(1000))


@pytest.mark.anyio
async def test_cancelled_waiter_leaves_the_queue() -> None:
    """A waiting task that is cancelled frees its place; the next waiter still gets served."""
    policy = rs.RateLimit("1/second", max_wait=10)
    await acquire_async(policy, "k", 10)
    served: list[str] = []

    async def waiter(name: str) -> None:
        await acquire_async(policy, "k", 10)
        served.append(name)

    scope = anyio.CancelScope()

    async def cancellable() -> None:
        with scope:
            await waiter("cancelled")

    async with anyio.create_task_group() as group:
        group.start_soon(cancellable)
        await anyio.sleep(0.05)
        scope.cancel()
        group.start_soon(waiter, "next")
    assert served == ["next"]
    assert not policy.state.task_queues


def test_the_storage_repr_hides_a_password() -> None:
    storage = rs.RateLimitStorage("memory://")
    storage.uri = "redis://:s3cret@127.0.0.1:6379/0"  # repr only: no connection is made
    assert "s3cret" not in repr(storage)
    assert "127.0.0.1:6379" in repr(storage)


def test_waits_use_the_limits_clock_not_a_fake_one() -> None:
    """limits dates windows with time.time(): a fake policy clock must not skew the wait."""
    clock = FakeClock(wall=1_000.0)  # far from the real time
    policy = rs.RateLimit("1/second", clock=clock)
    assert policy.state.try_acquire(policy, "k") == 0.0
    wait = policy.state.try_acquire(policy, "k")
    assert 0 < wait <= 1.1
