"""The demo (the README's first command) runs, and the resilient runs beat the bare ones."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pybreaker
import pytest

import resilience as rs
from resilience.__main__ import main
from resilience._demo import (
    FAULTS,
    DemoBackend,
    TripCounter,
    demo_stack,
    plan,
    run_demo,
)
from resilience.testing import RecordedRequest, Reset, Respond

RUNS = ("sync, bare httpx", "sync, resilience", "async, bare httpx", "async, resilience")
_ROW = re.compile(
    r"^(?P<run>(?:sync|async), (?:bare httpx|resilience))\s+(?P<success>[\d.]+)%"
    r"\s+(?P<dup>\d+)\s+(?P<p50>[\d.]+)\s+(?P<p99>[\d.]+)\s+(?P<retries>\d+)"
    r"\s+(?P<trips>\d+)\s+(?P<hits>\d+)\s+(?P<time>[\d.]+)$",
    re.M,
)


def table(text: str) -> dict[str, dict[str, float]]:
    """The demo's table, as {run: {column: value}}."""
    rows = {
        match["run"]: {k: float(v) for k, v in match.groupdict().items() if k != "run"}
        for match in _ROW.finditer(text)
    }
    assert set(rows) == set(RUNS), text
    return rows


def demo(**kwargs: object) -> tuple[str, dict[str, dict[str, float]]]:
    """Run the demo in this process without progress bars; return its text and its table."""
    out = io.StringIO()
    assert run_demo(out=out, progress=False, **kwargs) == 0  # type: ignore[arg-type]
    return out.getvalue(), table(out.getvalue())


def test_demo_resilient_beats_bare() -> None:
    """A small run: the stack succeeds more, takes no order twice, retries and hits its cache."""
    text, rows = demo(requests=60, fault_rate=0.3, seed=3, concurrency=10)
    assert "127.0.0.1" in text
    assert "rs.Stack.default()" in text
    for mode in ("sync", "async"):
        bare, stack = rows[f"{mode}, bare httpx"], rows[f"{mode}, resilience"]
        assert bare["success"] < 100.0
        assert stack["success"] > bare["success"]
        assert stack["success"] >= 95.0
        assert stack["dup"] == 0
        assert bare["dup"] == 0
        assert bare["retries"] == 0
        assert stack["retries"] > 0
        assert bare["hits"] == 0
        assert stack["hits"] > 0
        assert stack["p50"] <= stack["p99"]


def test_demo_without_faults_is_the_same_for_both() -> None:
    """With no faults, everything succeeds and nothing is retried; the cache still answers."""
    _, rows = demo(requests=40, fault_rate=0.0, seed=1, concurrency=4)
    for run in RUNS:
        assert rows[run]["success"] == 100.0
        assert rows[run]["retries"] == 0
        assert rows[run]["trips"] == 0
    pages = [call.target for call in plan(40, 1) if call.target.startswith("/catalog")]
    assert len(pages) > len(set(pages))
    assert rows["sync, resilience"]["hits"] == len(pages) - len(set(pages))


def test_demo_breaker_trips_when_everything_fails() -> None:
    """At a fault rate of 1 the stack's breaker opens, and the table counts it."""
    text, rows = demo(requests=12, fault_rate=1.0, seed=2, concurrency=4)
    assert "The breaker opened" in text  # and the output says why that costs answers
    assert rows["sync, resilience"]["trips"] >= 1
    assert rows["async, resilience"]["trips"] >= 1
    assert rows["sync, bare httpx"]["trips"] == 0


def test_demo_command_line_stays_on_loopback_and_quiet() -> None:
    """`python -m resilience demo` ignores proxy variables and prints no log events."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    # a closed port on loopback: a client that obeyed these would fail every request
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    env.update(ALL_PROXY="http://127.0.0.1:9", NO_PROXY="")
    flags = ["--requests", "20", "--seed", "1", "--fault-rate", "0.2", "--concurrency", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "resilience", "demo", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    rows = table(done.stdout)
    assert rows["sync, bare httpx"]["success"] >= 50.0
    assert rows["sync, resilience"]["success"] >= 90.0
    assert "20 requests" in done.stdout
    for event in ("http.request", "http.attempt", "retry.scheduled", "breaker.", "cache."):
        assert event not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--requests", "0"], "requests must be >= 1, got 0"),
        (["--requests", "1000001"], "requests must be <= 100000, got 1000001"),
        (["--fault-rate", "1.5"], r"fault_rate must be a number in \[0, 1\], got 1.5"),
        (["--fault-rate", "nan"], r"fault_rate must be a number in \[0, 1\], got nan"),
        (["--concurrency", "0"], "concurrency must be >= 1, got 0"),
    ],
)
def test_demo_rejects_bad_flags(argv: list[str], message: str) -> None:
    """A bad flag is a clear error naming it, raised before any server starts."""
    with pytest.raises(ValueError, match=message):
        main(["demo", *argv])


def test_demo_stack_is_the_default_tuned_for_seconds() -> None:
    """The demo's preset changes only time scales, and each call has its own state."""
    default, tuned = rs.Stack.default(), demo_stack()
    assert default.retry is not None
    assert tuned.retry is not None
    assert default.breaker is not None
    assert tuned.breaker is not None
    assert [name for name, _ in tuned.layers] == [name for name, _ in default.layers]
    assert tuned.retry.attempts == default.retry.attempts
    assert tuned.retry.budget == default.retry.budget
    assert tuned.retry.backoff.base < default.retry.backoff.base
    assert tuned.retry.deadline is not None
    assert default.retry.deadline is not None
    assert tuned.retry.deadline < default.retry.deadline
    assert tuned.breaker.fail_max == default.breaker.fail_max
    assert tuned.breaker.reset_timeout < 1.0
    assert tuned.cache is not None
    assert default.cache is not None
    assert tuned.cache.replace(storage=default.cache.storage) == default.cache
    other = demo_stack()
    assert other.breaker is not None
    assert other.breaker.storage is not tuned.breaker.storage
    assert other.cache is not None
    assert tuned.cache is not None
    assert other.cache.storage is not tuned.cache.storage


def test_trip_counter_counts_openings() -> None:
    """The listener counts each move to open, not the other transitions."""
    counter = TripCounter()
    breaker = rs.CircuitBreaker(fail_max=1, reset_timeout=0.0, listeners=(counter,))

    @breaker
    def fail() -> None:
        raise OSError("down")

    for _ in range(3):  # open, then half-open and open again, twice
        with pytest.raises(OSError, match="down"):
            fail()
    assert counter.trips == 3
    assert isinstance(counter, pybreaker.CircuitBreakerListener)


def post(order: int, key: str | None = None, body: bytes | None = None) -> RecordedRequest:
    """A POST /orders as the server would record it."""
    headers = [("x-demo-call", str(order))]
    if key is not None:
        headers.append(("idempotency-key", key))
    content = json.dumps({"order": order}).encode() if body is None else body
    return RecordedRequest("POST", "/run0/orders", "", tuple(headers), content, 0.0)


def test_backend_counts_an_order_taken_twice() -> None:
    """The same order sent twice without a key is a duplicate; the server saw one retry."""
    backend = DemoBackend(fault_rate=0.0, seed=0)
    first, second = backend(post(7)), backend(post(7))
    assert isinstance(first, Respond)
    assert first.status == 201
    assert isinstance(second, Respond)
    assert second.status == 201
    assert backend.duplicates == 1
    assert backend.retries == 1
    assert backend.received == 2
    assert backend.replays == 0


def test_backend_replays_a_known_idempotency_key() -> None:
    """A resent POST with the same key gets the recorded answer; the order is taken once."""
    backend = DemoBackend(fault_rate=0.0, seed=0)
    first, second = backend(post(7, key="order-7")), backend(post(7, key="order-7"))
    assert isinstance(first, Respond)
    assert isinstance(second, Respond)
    assert second.body == first.body
    assert ("idempotent-replayed", "true") in tuple(second.headers or ())
    assert backend.duplicates == 0
    assert backend.replays == 1
    backend(post(8, key="order-8"))  # another key is another order
    assert backend.duplicates == 0
    assert backend.retries == 1


def test_backend_takes_the_order_when_a_reset_loses_the_answer() -> None:
    """A reset after a POST loses the answer, not the order: resending without a key duplicates."""
    lossy = DemoBackend(fault_rate=1.0, seed=0, faults=("reset",))
    assert isinstance(lossy(post(1)), Reset)
    assert isinstance(lossy(post(1)), Reset)
    assert lossy.duplicates == 1
    keyed = DemoBackend(fault_rate=1.0, seed=0, faults=("reset",))
    keyed(post(1, key="k"))
    keyed(post(1, key="k"))
    assert keyed.duplicates == 0
    assert keyed.replays == 1


def test_backend_fault_answers_take_nothing() -> None:
    """A 5xx or 429 fault answers before any work: no order is taken."""
    backend = DemoBackend(fault_rate=1.0, seed=0, faults=("503", "429", "500", "502"))
    for order in range(20):
        outcome = backend(post(order))
        assert isinstance(outcome, Respond)
        assert outcome.status in {503, 429, 500, 502}
    assert backend.duplicates == 0
    assert backend.replays == 0


def test_backend_refuses_garbage() -> None:
    """A POST body that is not an order gets a 400; bad settings raise naming them."""
    backend = DemoBackend(fault_rate=0.0, seed=0)
    for body in (b"", b"\xff\xfe", b"[1, 2]", b'{"no": 1}', b"{" * 10_000, b"[" * 100_000):
        outcome = backend(post(1, body=body))
        assert isinstance(outcome, Respond)
        assert outcome.status == 400
    with pytest.raises(ValueError, match="faults must be"):
        DemoBackend(fault_rate=0.5, seed=0, faults=("boom",))
    with pytest.raises(ValueError, match="faults must be"):
        DemoBackend(fault_rate=0.5, seed=0, faults=())
    with pytest.raises(ValueError, match="fault_rate"):
        DemoBackend(fault_rate=-0.1, seed=0)
    assert set(FAULTS) == {"503", "429", "500", "502", "reset", "slow"}


def test_plan_is_seeded_and_mixed() -> None:
    """The workload depends on the seed only, and holds POSTs and cacheable GETs."""
    calls = plan(200, 5)
    assert calls == plan(200, 5)
    assert calls != plan(200, 6)
    assert [call.number for call in calls] == list(range(200))
    assert any(call.method == "POST" for call in calls)
    assert any(call.target.startswith("/catalog?page=") for call in calls)
    assert any(call.target.startswith("/items?id=") for call in calls)
