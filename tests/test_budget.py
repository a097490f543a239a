"""RetryBudget and MemoryBudgetStorage: retries capped at a share of traffic over 10 s."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import MemoryBudgetStorage, RetryBudget

WINDOW = 10


def in_window(stamp: float, now: float) -> bool:
    """Whether ``stamp`` is in the window at ``now``: seconds (int(now) - 10, int(now)]."""
    return int(now) - WINDOW < int(stamp) <= int(now)


@settings(max_examples=200, deadline=None)
@given(
    ratio=st.floats(min_value=0, max_value=1),
    min_per_second=st.floats(min_value=0, max_value=5),
    start=st.integers(min_value=0, max_value=10**6),
    operations=st.lists(
        st.tuples(st.floats(min_value=0, max_value=3), st.sampled_from(["deposit", "withdraw"])),
        max_size=300,
    ),
)
def test_budget_grants_exactly_what_the_window_allows(
    ratio: float,
    min_per_second: float,
    start: int,
    operations: list[tuple[float, str]],
) -> None:
    """A retry is granted iff the window's retries + 1 <= floor + ratio * its requests."""
    budget = RetryBudget(ratio=ratio, min_per_second=min_per_second)
    now = float(start)
    requests: list[float] = []
    granted: list[float] = []
    for advance, operation in operations:
        now += advance
        if operation == "deposit":
            budget.deposit("k", now)
            requests.append(now)
        else:
            sent = sum(in_window(t, now) for t in requests)
            spent = sum(in_window(t, now) for t in granted)
            allowed = spent + 1 <= min_per_second * WINDOW + ratio * sent
            assert budget.withdraw("k", now) is allowed
            if allowed:
                granted.append(now)
                # at the moment of every grant, the window holds no more than the cap
                assert spent + 1 <= min_per_second * WINDOW + ratio * sent
        sent = sum(in_window(t, now) for t in requests)
        spent = sum(in_window(t, now) for t in granted)
        assert budget.storage.totals("k", now) == (sent, spent)


def test_floor_alone_allows_min_per_second_times_window() -> None:
    """With no traffic, ``min_per_second * 10`` retries are allowed, then none."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.5)
    assert [budget.withdraw("k", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2


def test_ratio_adds_retries_per_request() -> None:
    """Each request adds ``ratio`` retries to the allowance."""
    budget = RetryBudget(ratio=0.5, min_per_second=0.0)
    assert not budget.withdraw("k", 0.0)
    for _ in range(4):
        budget.deposit("k", 0.0)
    assert [budget.withdraw("k", 0.0) for _ in range(3)] == [True, True, False]
    assert budget.storage.totals("k", 0.0) == (4, 2)


def test_window_slides() -> None:
    """Retries refused at t=0 are allowed again once second 0 has left the window (t=10)."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.2)  # 2 per window
    assert budget.withdraw("k", 0.0)
    assert budget.withdraw("k", 0.5)
    assert not budget.withdraw("k", 0.9)
    assert not budget.withdraw("k", 5.0)
    assert not budget.withdraw("k", 9.999)
    assert budget.withdraw("k", 10.0)
    assert budget.withdraw("k", 10.0)
    assert not budget.withdraw("k", 10.0)
    assert budget.storage.totals("k", 10.0) == (0, 2)


def test_requests_leave_the_window_too() -> None:
    """Requests older than the window no longer earn retries."""
    budget = RetryBudget(ratio=1.0, min_per_second=0.0)
    budget.deposit("k", 0.0)
    assert budget.storage.totals("k", 9.5) == (1, 0)
    assert budget.storage.totals("k", 10.0) == (0, 0)
    assert not budget.withdraw("k", 10.0)


def test_a_long_pause_empties_the_window() -> None:
    """After much more than a window, every count is gone, whatever slot it lived in."""
    budget = RetryBudget(ratio=1.0, min_per_second=0.0)
    for second in range(10):
        budget.deposit("k", float(second))
    assert budget.storage.totals("k", 9.0) == (10, 0)
    assert budget.storage.totals("k", 1000.0) == (0, 0)


def test_keys_are_independent() -> None:
    """Spending one key's budget leaves another key's untouched."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1)  # 1 per window
    assert budget.withdraw("a", 0.0)
    assert not budget.withdraw("a", 0.0)
    assert budget.withdraw("b", 0.0)
    budget.deposit("c", 0.0)
    assert budget.storage.totals("a", 0.0) == (0, 1)
    assert budget.storage.totals("c", 0.0) == (1, 0)


def test_max_keys_evicts_the_least_recently_used_key() -> None:
    """With ``max_keys=3``, a fourth key evicts the key used least recently."""
    storage = MemoryBudgetStorage(max_keys=3)
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, storage=storage)
    for key in ("a", "b", "c"):
        budget.deposit(key, 0.0)
    budget.deposit("a", 0.0)  # "b" is now the least recently used
    budget.deposit("d", 0.0)
    assert storage.totals("a", 0.0) == (2, 0)
    assert storage.totals("c", 0.0) == (1, 0)
    assert storage.totals("d", 0.0) == (1, 0)
    assert storage.totals("b", 0.0) == (0, 0)  # gone (this read is the last one on purpose)


def test_memory_stays_bounded_with_many_keys() -> None:
    """However many keys are used, at most ``max_keys`` are kept."""
    storage = MemoryBudgetStorage(max_keys=100)
    budget = RetryBudget(storage=storage)
    for number in range(10_000):
        budget.deposit(f"host-{number}", 0.0)
    assert len(storage._keys) == 100
    assert storage.totals("host-9999", 0.0) == (1, 0)


def test_budgets_sharing_storage_share_counts() -> None:
    """``replace`` keeps the storage, so both budgets see the same counts."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1)
    other = budget.replace(min_per_second=0.1)
    assert other.storage is budget.storage
    assert budget.withdraw("k", 0.0)
    assert not other.withdraw("k", 0.0)


def test_withdraw_is_thread_safe() -> None:
    """8 threads x 1000 withdraws against a floor of 500 grant exactly 500."""
    budget = RetryBudget(ratio=0.0, min_per_second=50.0)
    barrier = threading.Barrier(8)
    granted = [0] * 8

    def worker(index: int) -> None:
        barrier.wait()
        granted[index] = sum(budget.withdraw("k", 100.0) for _ in range(1000))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 500
    assert budget.storage.totals("k", 100.0) == (0, 500)


def test_deposit_is_thread_safe() -> None:
    """8 threads x 1000 deposits on one key count exactly 8000 requests."""
    budget = RetryBudget()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(1000):
            budget.deposit("k", 5.0)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.storage.totals("k", 5.0) == (8000, 0)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: RetryBudget(ratio=-0.1), ValueError, r"RetryBudget\.ratio.*-0\.1"),
        (lambda: RetryBudget(ratio=float("nan")), ValueError, r"RetryBudget\.ratio.*nan"),
        (lambda: RetryBudget(min_per_second=-1), ValueError, r"RetryBudget\.min_per_second.*-1"),
        (lambda: RetryBudget(ratio="0.2"), TypeError, r"RetryBudget\.ratio.*'0\.2'"),
        (lambda: RetryBudget(storage="x"), TypeError, r"RetryBudget\.storage.*'x'"),
        (lambda: RetryBudget().replace(ratio=-1), ValueError, r"RetryBudget\.ratio.*-1"),
        (lambda: MemoryBudgetStorage(window=0), ValueError, r"MemoryBudgetStorage\.window.*0"),
        (lambda: MemoryBudgetStorage(max_keys=0), ValueError, r"MemoryBudgetStorage\.max_keys"),
        (lambda: MemoryBudgetStorage(max_keys=1.5), TypeError, r"MemoryBudgetStorage\.max_keys"),
    ],
)
def test_invalid_budget_is_rejected(factory: object, error: type[Exception], match: str) -> None:
    """Bad values fail at construction with a message naming the field and the value."""
    with pytest.raises(error, match=match):
        factory()  # type: ignore[operator]


def test_budget_equality_ignores_storage() -> None:
    """Budgets compare by configuration; the storage is state, not configuration."""
    assert RetryBudget(ratio=0.2) == RetryBudget(ratio=0.2)
    assert RetryBudget(ratio=0.2) != RetryBudget(ratio=0.3)
    assert hash(RetryBudget()) == hash(RetryBudget())
