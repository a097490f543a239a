"""Backoff: exponential delays with jitter, bounded, validated at construction."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resilience import Backoff

JITTERS = ("full", "equal", "decorrelated", "none")


def ideal(base: float, multiplier: float, cap: float, retry: int) -> float:
    """``min(cap, base * multiplier ** (retry - 1))`` computed without overflowing."""
    if base == 0:
        return 0.0
    log_delay = math.log(base) + (retry - 1) * math.log(multiplier)
    if log_delay >= math.log(cap):
        return cap
    return math.exp(log_delay)


def close(a: float, b: float) -> bool:
    """Equal up to float rounding (and subnormal noise)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    """Any valid Backoff within the ranges the property tests cover."""
    base = draw(st.floats(min_value=0, max_value=100))
    multiplier = draw(st.floats(min_value=1, max_value=10))
    cap = draw(st.floats(min_value=base, max_value=1000))
    jitter = draw(st.sampled_from(JITTERS))
    return Backoff(base=base, multiplier=multiplier, cap=cap, jitter=jitter)


@settings(max_examples=200, deadline=None)
@given(
    backoff=backoffs(),
    retry=st.integers(min_value=1, max_value=10_000),
    u=st.floats(min_value=0, max_value=1, exclude_max=True),
    data=st.data(),
)
@example(
    backoff=Backoff(base=0.0, multiplier=2.0, cap=5.0, jitter="none"),
    retry=2000,
    u=0.5,
    data=None,
)
def test_delay_is_bounded_and_follows_its_jitter(
    backoff: Backoff, retry: int, u: float, data: st.DataObject | None
) -> None:
    """Every delay is in [0, cap] and honours its jitter's formula, even for huge retries."""
    previous = None
    if data is not None:
        previous = data.draw(st.none() | st.floats(min_value=0, max_value=backoff.cap))
    delay = backoff.delay(retry, previous, random=lambda: u)
    assert isinstance(delay, float | int)
    assert math.isfinite(delay)
    assert 0 <= delay <= backoff.cap
    d = ideal(backoff.base, backoff.multiplier, backoff.cap, retry)
    if backoff.jitter == "none":
        assert close(delay, d), (delay, d)
    elif backoff.jitter == "equal":
        assert delay >= d / 2 or close(delay, d / 2), (delay, d)
        assert delay <= d or close(delay, d), (delay, d)
    elif backoff.jitter == "full":
        assert delay <= d or close(delay, d), (delay, d)
    else:
        assert delay >= backoff.base


def test_base_zero_never_waits() -> None:
    """With base 0 the formula gives 0 for every retry, however large."""
    backoff = Backoff(base=0.0, multiplier=2.0, cap=5.0, jitter="none")
    assert [backoff.delay(n) for n in (1, 2, 100, 1100, 10_000)] == [0.0] * 5


def test_exact_sequence_without_jitter() -> None:
    """base 0.5, multiplier 2, cap 4: 0.5, 1, 2, 4, 4."""
    backoff = Backoff(base=0.5, multiplier=2, cap=4, jitter="none")
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]


def test_huge_retry_numbers_give_the_cap() -> None:
    """A retry number whose power overflows a float gives the cap, for float and int settings."""
    assert Backoff(base=0.5, multiplier=2.0, cap=30.0, jitter="none").delay(10_000) == 30.0
    assert Backoff(base=1, multiplier=10, cap=30, jitter="none").delay(10_000) == 30


def test_full_jitter_spans_zero_to_the_delay() -> None:
    """Full jitter maps random 0 to 0 and random just under 1 to just under the delay."""
    backoff = Backoff(base=1.0, multiplier=2.0, cap=30.0, jitter="full")
    assert backoff.delay(3, random=lambda: 0.0) == 0.0
    assert backoff.delay(3, random=lambda: 0.5) == 2.0


def test_equal_jitter_spans_half_to_the_delay() -> None:
    """Equal jitter maps random 0 to half the delay."""
    backoff = Backoff(base=1.0, multiplier=2.0, cap=30.0, jitter="equal")
    assert backoff.delay(3, random=lambda: 0.0) == 2.0
    assert backoff.delay(3, random=lambda: 0.5) == 3.0


def test_decorrelated_jitter_grows_from_the_previous_delay() -> None:
    """Decorrelated jitter is uniform in [base, 3 * previous], capped."""
    backoff = Backoff(base=1.0, multiplier=2.0, cap=30.0, jitter="decorrelated")
    assert backoff.delay(1, None, random=lambda: 0.0) == 1.0
    assert backoff.delay(2, 4.0, random=lambda: 0.0) == 1.0
    assert backoff.delay(2, 4.0, random=lambda: 0.5) == 6.5
    assert backoff.delay(9, 20.0, random=lambda: 0.99) == 30.0


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"base": -1}, ValueError, r"Backoff\.base.*-1"),
        ({"base": -0.001}, ValueError, r"Backoff\.base.*-0\.001"),
        ({"multiplier": 0.5}, ValueError, r"Backoff\.multiplier.*0\.5"),
        ({"base": 2.0, "cap": 1.0}, ValueError, r"Backoff\.cap.*1\.0"),
        ({"cap": -1.0}, ValueError, r"Backoff\.cap.*-1\.0"),
        ({"jitter": "gaussian"}, ValueError, r"Backoff\.jitter.*'gaussian'"),
        ({"base": math.nan}, ValueError, r"Backoff\.base.*nan"),
        ({"base": 10**400}, ValueError, r"Backoff\.base must be finite"),
        ({"base": math.inf}, ValueError, r"Backoff\.base.*inf"),
        ({"cap": math.inf}, ValueError, r"Backoff\.cap.*inf"),
        ({"multiplier": math.inf}, ValueError, r"Backoff\.multiplier.*inf"),
        ({"base": "0.5"}, TypeError, r"Backoff\.base.*'0\.5'"),
        ({"base": True}, TypeError, r"Backoff\.base.*True"),
        ({"multiplier": None}, TypeError, r"Backoff\.multiplier.*None"),
    ],
)
def test_invalid_backoff_is_rejected(
    changes: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad values fail at construction with a message naming the field and the value."""
    with pytest.raises(error, match=match):
        Backoff(**changes)  # type: ignore[arg-type]


def test_replace_returns_a_new_validated_copy() -> None:
    """``replace`` changes the fields given, keeps the others, and validates the result."""
    backoff = Backoff(base=0.5, multiplier=2.0, cap=30.0, jitter="full")
    changed = backoff.replace(cap=10.0)
    assert changed == Backoff(base=0.5, multiplier=2.0, cap=10.0, jitter="full")
    assert backoff.cap == 30.0
    same = backoff.replace()
    assert same == backoff
    assert hash(same) == hash(backoff)
    with pytest.raises(ValueError, match=r"Backoff\.base"):
        backoff.replace(base=-1)
    with pytest.raises(ValueError, match=r"Backoff\.cap"):
        backoff.replace(base=31.0)


def test_backoff_is_immutable_and_hashable() -> None:
    """A Backoff is a frozen value: equal by fields, usable as a dict key, not assignable."""
    backoff = Backoff()
    assert backoff == Backoff(base=0.5, multiplier=2.0, cap=30.0, jitter="full")
    assert {backoff: 1}[Backoff()] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        backoff.base = 1.0  # type: ignore[misc]
