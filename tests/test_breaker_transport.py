"""CircuitBreakerTransport against the real loopback server, and the layers working together."""

from __future__ import annotations

import time

import httpx
import pytest

import resilience as rs
from resilience.testing import FakeClock, FaultServer, Reset, Respond

from .conftest import Driver, free_port


def breaking(policy: rs.CircuitBreaker) -> object:
    """A transport factory for ``Driver.client``."""
    return lambda inner: rs.CircuitBreakerTransport(inner, policy)


def key_of(server: FaultServer) -> str:
    """The per-host key of a loopback server."""
    return f"http://127.0.0.1:{server.port}"


def test_opens_after_fail_max_fails_fast_probes_once_and_recovers(
    server: FaultServer, driver: Driver
) -> None:
    """Three 503s open it; it fails fast; after reset_timeout one probe closes it."""
    server.script("/s", Respond(503), Respond(503), Respond(503), then=Respond(200))
    clock = FakeClock(wall=time.time())
    breaker = rs.CircuitBreaker(fail_max=3, reset_timeout=30.0, clock=clock)
    client = driver.client(breaking(breaker))
    url = f"{server.url}/s"
    # the 5xx responses come back as they are: recorded, not swallowed
    assert [client.request("GET", url).status_code for _ in range(3)] == [503, 503, 503]
    assert breaker.state(key_of(server)) == "open"

    started = time.perf_counter()
    with pytest.raises(rs.CircuitOpenError) as caught:
        client.request("GET", url)
    elapsed = time.perf_counter() - started
    assert isinstance(caught.value, httpx.TransportError)
    assert caught.value.request.url == url  # httpx's request, as its own errors carry
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert caught.value.key == key_of(server)
    assert 29.0 < caught.value.retry_after <= 30.001
    assert server.count("/s") == 3  # nothing reached the network
    if driver.mode == "sync":
        assert elapsed < 0.005  # fail fast (well under a millisecond without the client)

    clock.advance(30.5)
    assert client.request("GET", url).status_code == 200  # the probe
    assert breaker.state(key_of(server)) == "closed"
    assert server.count("/s") == 4
    assert client.request("GET", url).status_code == 200


def test_failed_probe_reopens(server: FaultServer, driver: Driver) -> None:
    """A probe that fails re-opens the circuit for another reset_timeout."""
    server.script("/p", then=Respond(502))
    clock = FakeClock(wall=time.time())
    breaker = rs.CircuitBreaker(fail_max=2, reset_timeout=10.0, clock=clock)
    client = driver.client(breaking(breaker))
    for _ in range(2):
        client.request("GET", f"{server.url}/p")
    clock.advance(11)
    assert client.request("GET", f"{server.url}/p").status_code == 502
    with pytest.raises(rs.CircuitOpenError) as caught:
        client.request("GET", f"{server.url}/p")
    assert caught.value.retry_after > 9
    assert server.count("/p") == 3


def test_4xx_and_429_never_open_it(server: FaultServer, driver: Driver) -> None:
    """404s are the caller's problem and 429 is throttling: neither is a failure."""
    server.script("/missing", then=Respond(404))
    server.script("/busy", then=Respond(429))
    breaker = rs.CircuitBreaker(fail_max=2)
    client = driver.client(breaking(breaker))
    for _ in range(5):
        assert client.request("GET", f"{server.url}/missing").status_code == 404
        assert client.request("GET", f"{server.url}/busy").status_code == 429
    assert breaker.state(key_of(server)) == "closed"


def test_connection_failures_count(driver: Driver) -> None:
    """Refused connections and resets are failures: the circuit opens on them."""
    breaker = rs.CircuitBreaker(fail_max=2)
    client = driver.client(breaking(breaker))
    url = f"http://127.0.0.1:{free_port()}/"
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            client.request("GET", url)
    with pytest.raises(rs.CircuitOpenError):
        client.request("GET", url)


def test_resets_count_as_failures(server: FaultServer, driver: Driver) -> None:
    """A connection reset before any byte is a failure."""
    server.script("/r", then=Reset())
    breaker = rs.CircuitBreaker(fail_max=2)
    client = driver.client(breaking(breaker))
    for _ in range(2):
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.request("GET", f"{server.url}/r")
    assert breaker.state(key_of(server)) == "open"


def test_one_failing_host_does_not_trip_another(driver: Driver) -> None:
    """Breakers are per host by default."""
    with FaultServer() as sick, FaultServer() as healthy:
        sick.script("/", then=Respond(503))
        breaker = rs.CircuitBreaker(fail_max=2)
        client = driver.client(breaking(breaker))
        for _ in range(2):
            client.request("GET", f"{sick.url}/")
        with pytest.raises(rs.CircuitOpenError):
            client.request("GET", f"{sick.url}/")
        assert client.request("GET", f"{healthy.url}/").status_code == 200
        assert breaker.state(key_of(healthy)) == "closed"


def test_per_request_override(server: FaultServer, driver: Driver) -> None:
    """extensions={"resilience": {"breaker": None}} bypasses an open breaker."""
    server.script("/o", Respond(503), then=Respond(200))
    client = driver.client(breaking(rs.CircuitBreaker(fail_max=1)))
    client.request("GET", f"{server.url}/o")
    with pytest.raises(rs.CircuitOpenError):
        client.request("GET", f"{server.url}/o")
    response = client.request(
        "GET", f"{server.url}/o", extensions={"resilience": {"breaker": None}}
    )
    assert response.status_code == 200


def test_retry_stops_when_the_breaker_opens_mid_retry(server: FaultServer, driver: Driver) -> None:
    """Retry outside the breaker: the third 503 opens it and the next attempt ends retrying."""
    server.script("/x", then=Respond(503))
    breaker = rs.CircuitBreaker(fail_max=3)
    retry = rs.Retry(attempts=10, clock=FakeClock())
    client = driver.client(
        lambda inner: rs.RetryTransport(rs.CircuitBreakerTransport(inner, breaker), retry)
    )
    with pytest.raises(rs.CircuitOpenError):
        client.request("GET", f"{server.url}/x")
    assert server.count("/x") == 3
    assert len(retry.clock.sleeps) == 3  # type: ignore[attr-defined]


def test_open_breaker_consumes_no_rate_limit_tokens(server: FaultServer, driver: Driver) -> None:
    """Breaker outside the limiter: requests refused by an open breaker take no slot."""
    server.script("/y", then=Respond(503))
    limit = rs.RateLimit("100/minute")
    breaker = rs.CircuitBreaker(fail_max=2)
    client = driver.client(
        lambda inner: rs.CircuitBreakerTransport(rs.RateLimitTransport(inner, limit), breaker)
    )
    for _ in range(2):
        client.request("GET", f"{server.url}/y")
    for _ in range(5):
        with pytest.raises(rs.CircuitOpenError):
            client.request("GET", f"{server.url}/y")
    stats = limit.state.limiter(limit.strategy).get_window_stats(limit.items[0], key_of(server))
    assert stats.remaining == 98


def test_is_failure_predicate(server: FaultServer) -> None:
    """A predicate can make a 200 whose body reports an error count as a failure."""
    server.script("/z", then=Respond(200, body=b'{"error": "overloaded"}'))

    def is_failure(outcome: object) -> bool | None:
        if isinstance(outcome, httpx.Response):
            return b"error" in outcome.read()
        return None

    breaker = rs.CircuitBreaker(fail_max=2, is_failure=is_failure)
    with httpx.Client(transport=rs.CircuitBreakerTransport(httpx.HTTPTransport(), breaker)) as c:
        for _ in range(2):
            assert c.get(f"{server.url}/z").status_code == 200
        assert breaker.state(key_of(server)) == "open"


def test_bad_construction() -> None:
    """CircuitBreakerTransport names what is wrong with its arguments."""
    with pytest.raises(TypeError, match="needs an httpx transport"):
        rs.CircuitBreakerTransport(object(), rs.CircuitBreaker())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a CircuitBreaker"):
        rs.CircuitBreakerTransport(httpx.MockTransport(lambda r: httpx.Response(200)), 3)  # type: ignore[arg-type]
