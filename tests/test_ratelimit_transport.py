"""RateLimitTransport against the real loopback server, with sync and async clients."""

from __future__ import annotations

import time

import httpx
import pytest

import resilience as rs
from resilience.testing import FakeClock, FaultServer, Respond

from .conftest import Driver


def limited(policy: rs.RateLimit) -> object:
    """A transport factory for ``Driver.client``."""
    return lambda inner: rs.RateLimitTransport(inner, policy)


def test_limit_holds_over_several_windows(server: FaultServer, driver: Driver) -> None:
    """12 requests at "5/second": they span two full windows and never crowd one second."""
    client = driver.client(limited(rs.RateLimit("5/second")))
    started = time.monotonic()
    for _ in range(12):
        assert client.request("GET", f"{server.url}/r").status_code == 200
    assert time.monotonic() - started >= 2.0
    arrivals = [r.received_at for r in server.requests_for("/r")]
    for t in arrivals:  # 0.95 s: server-side timestamps jitter a little around the client's
        assert sum(t <= u < t + 0.95 for u in arrivals) <= 5


def test_raise_mode_sends_nothing_past_the_limit(server: FaultServer, driver: Driver) -> None:
    """mode="raise": the 4th request on "3/minute" raises at once and never reaches the server."""
    client = driver.client(limited(rs.RateLimit("3/minute", mode="raise")))
    for _ in range(3):
        client.request("GET", f"{server.url}/r")
    with pytest.raises(rs.RateLimitExceeded) as caught:
        client.request("GET", f"{server.url}/r")
    assert isinstance(caught.value, httpx.TransportError)
    assert caught.value.retry_after > 50
    assert caught.value.key == f"http://127.0.0.1:{server.port}"
    assert server.count("/r") == 3


def test_max_wait_bounds_the_wait(server: FaultServer, driver: Driver) -> None:
    """A wait longer than max_wait raises at once instead of sleeping."""
    client = driver.client(limited(rs.RateLimit("1/minute", max_wait=1.0)))
    client.request("GET", f"{server.url}/r")
    started = time.monotonic()
    with pytest.raises(rs.RateLimitExceeded, match="max_wait"):
        client.request("GET", f"{server.url}/r")
    assert time.monotonic() - started < 0.5
    assert server.count("/r") == 1


def test_429_pauses_the_key_but_not_another_host(driver: Driver) -> None:
    """A 429 with Retry-After: 1 makes the next request to that host wait; another host doesn't."""
    with FaultServer() as busy, FaultServer() as calm:
        busy.script("/a", Respond(429, headers={"Retry-After": "1"}), then=Respond(200))
        client = driver.client(limited(rs.RateLimit("100/second")))
        assert client.request("GET", f"{busy.url}/a").status_code == 429
        started = time.monotonic()
        assert client.request("GET", f"{calm.url}/b").status_code == 200
        assert time.monotonic() - started < 0.5
        assert client.request("GET", f"{busy.url}/b").status_code == 200
        assert time.monotonic() - started >= 0.9


def test_remaining_zero_with_reset_pauses(server: FaultServer, driver: Driver) -> None:
    """RateLimit-Remaining: 0 with RateLimit-Reset: 1 pauses the key for about a second."""
    headers = {"RateLimit-Remaining": "0", "RateLimit-Reset": "1"}
    server.script("/q", Respond(200, headers=headers), then=Respond(200))
    client = driver.client(limited(rs.RateLimit("100/second")))
    client.request("GET", f"{server.url}/q")
    started = time.monotonic()
    client.request("GET", f"{server.url}/q")
    assert 0.9 <= time.monotonic() - started < 3.0
    first, second = server.requests_for("/q")
    assert second.received_at - first.received_at >= 0.9


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "99999999999"},  # epoch in 5138
        {"RateLimit-Remaining": "0", "RateLimit-Reset": "86400000"},  # 1,000 days
        {"Retry-After": "100000000"},
    ],
    ids=["epoch-far-future", "huge-delta", "huge-retry-after"],
)
def test_hostile_reset_headers_are_bounded(
    server: FaultServer, driver: Driver, headers: dict[str, str]
) -> None:
    """A hostile reset cannot pause a key beyond max_wait."""
    status = 429 if "Retry-After" in headers else 200
    server.script("/h", Respond(status, headers=headers), then=Respond(200))
    client = driver.client(limited(rs.RateLimit("100/second", max_wait=0.5)))
    client.request("GET", f"{server.url}/h")
    started = time.monotonic()
    assert client.request("GET", f"{server.url}/h").status_code == 200
    assert time.monotonic() - started < 2.0


def test_garbage_reset_headers_are_ignored(server: FaultServer, driver: Driver) -> None:
    """Unreadable reset values do not pause anything."""
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"}
    server.script("/g", Respond(200, headers=headers), then=Respond(200))
    client = driver.client(limited(rs.RateLimit("100/second")))
    client.request("GET", f"{server.url}/g")
    started = time.monotonic()
    client.request("GET", f"{server.url}/g")
    assert time.monotonic() - started < 0.5


def test_per_request_override(server: FaultServer, driver: Driver) -> None:
    """extensions can skip the limit, or swap the key while sharing the counts."""
    policy = rs.RateLimit("1/minute", mode="raise")
    client = driver.client(limited(policy))
    url = f"{server.url}/o"
    client.request("GET", url)
    client.request("GET", url, extensions={"resilience": {"rate_limit": None}})
    tenant = policy.replace(key="tenant-7")
    client.request("GET", url, extensions={"resilience": {"rate_limit": tenant}})
    with pytest.raises(rs.RateLimitExceeded):
        client.request("GET", url, extensions={"resilience": {"rate_limit": tenant}})
    assert server.count("/o") == 3


def test_retry_wrapping_limiter_spends_a_token_per_attempt(
    server: FaultServer, driver: Driver
) -> None:
    """Retry outside, limiter inside: 503, 503, 200 uses three tokens."""
    server.script("/t", Respond(503), Respond(503), Respond(200))
    policy = rs.RateLimit("100/minute")
    retry = rs.Retry(clock=FakeClock())
    client = driver.client(
        lambda inner: rs.RetryTransport(rs.RateLimitTransport(inner, policy), retry)
    )
    assert client.request("GET", f"{server.url}/t").status_code == 200
    key = f"http://127.0.0.1:{server.port}"
    stats = policy.state.limiter(policy.strategy).get_window_stats(policy.items[0], key)
    assert stats.remaining == 97


def test_limiter_wait_respects_the_deadline(server: FaultServer, driver: Driver) -> None:
    """Under a 0.5 s deadline the limiter refuses a 60 s wait at once, naming the deadline."""
    policy = rs.RateLimit("1/minute", max_wait=120)
    retry = rs.Retry(deadline=0.5)
    client = driver.client(
        lambda inner: rs.RetryTransport(rs.RateLimitTransport(inner, policy), retry)
    )
    client.request("GET", f"{server.url}/d")
    started = time.monotonic()
    with pytest.raises(rs.RateLimitExceeded, match="deadline"):
        client.request("GET", f"{server.url}/d")
    assert time.monotonic() - started < 1.0
    assert server.count("/d") == 1


def test_bad_construction() -> None:
    """RateLimitTransport names what is wrong with its arguments."""
    with pytest.raises(TypeError, match="needs an httpx transport"):
        rs.RateLimitTransport(object(), rs.RateLimit("1/second"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a RateLimit"):
        rs.RateLimitTransport(httpx.MockTransport(lambda r: httpx.Response(200)), "1/s")  # type: ignore[arg-type]
