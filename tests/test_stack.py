"""Stack and wrap: the order of API.md section 3, proven against the loopback server."""

from __future__ import annotations

import os
from typing import Any

import anyio
import httpx
import pytest

import resilience as rs
from resilience.testing import FakeClock, FaultServer, Respond

from .conftest import Driver


def chain(transport: Any) -> list[str]:
    """The class names of a stack's layers, outermost first, down to the network."""
    names = []
    while True:
        names.append(type(transport).__name__)
        inner = getattr(transport, "transport", None)
        if inner is None:
            return names
        transport = inner


def test_the_layers_are_built_in_the_documented_order() -> None:
    stack = rs.Stack(
        cache=rs.Cache(),
        retry=rs.Retry(),
        breaker=rs.CircuitBreaker(),
        rate_limit=rs.RateLimit("5/second"),
        log=rs.Log(),
    )
    assert chain(stack.transport()) == [
        "LogTransport",
        "CacheTransport",
        "RetryTransport",
        "CircuitBreakerTransport",
        "RateLimitTransport",
        "LogTransport",
        "HTTPTransport",
    ]
    assert chain(stack.async_transport())[-1] == "AsyncHTTPTransport"
    assert chain(rs.Stack(retry=rs.Retry()).transport()) == ["RetryTransport", "HTTPTransport"]
    assert chain(rs.Stack().transport()) == ["HTTPTransport"]
    text = str(stack)
    order = ["log (request)", "cache", "retry", "breaker", "rate_limit", "log (attempt)", "network"]
    positions = [text.index(name) for name in order]
    assert positions == sorted(positions)


def test_the_shown_configuration_is_the_same_in_every_process() -> None:
    """str(stack) lists every set sorted, so two processes with other hash seeds agree."""
    import subprocess
    import sys

    code = "import resilience as rs; print(rs.Stack.default())"
    shown = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(shown) == 1
    [text] = shown
    assert "statuses=frozenset({408, 429, 500, 502, 503, 504})" in text
    assert "methods=frozenset({'GET', 'HEAD'})" in text
    assert repr(rs.Retry(statuses=())).count("statuses=frozenset()") == 1


def test_a_cache_hit_costs_no_token_and_no_breaker_slot(
    server: FaultServer, driver: Driver
) -> None:
    server.script("/c", then=Respond(200, b"x", {"cache-control": "max-age=60"}))
    limit = rs.RateLimit("1/minute", mode="raise")
    breaker = rs.CircuitBreaker(fail_max=1)
    stack = rs.Stack(cache=rs.Cache(), breaker=breaker, rate_limit=limit)
    client = driver.client(stack.transport if driver.mode == "sync" else stack.async_transport)
    for _ in range(5):
        assert client.request("GET", f"{server.url}/c").content == b"x"
    assert server.count("/c") == 1  # one token, four hits that needed none
    with pytest.raises(rs.RateLimitExceeded):
        client.request("GET", f"{server.url}/uncached")


def test_every_attempt_consumes_a_token(server: FaultServer, driver: Driver) -> None:
    server.script("/r", Respond(503), Respond(503), then=Respond(200, b"ok"))
    clock = FakeClock()
    stack = rs.Stack(
        retry=rs.Retry(attempts=3, clock=clock),
        rate_limit=rs.RateLimit("3/minute", mode="raise"),
    )
    client = driver.client(stack.transport if driver.mode == "sync" else stack.async_transport)
    assert client.request("GET", f"{server.url}/r").status_code == 200
    assert server.count("/r") == 3
    with pytest.raises(rs.RateLimitExceeded):
        client.request("GET", f"{server.url}/r")


def test_an_open_breaker_fails_fast_without_using_tokens(
    server: FaultServer, driver: Driver
) -> None:
    server.script("/b", Respond(503), then=Respond(200, b"back"))
    clock = FakeClock()
    breaker = rs.CircuitBreaker(fail_max=1, reset_timeout=10, clock=clock)
    limit = rs.RateLimit("2/minute", mode="raise")
    stack = rs.Stack(retry=rs.Retry(attempts=5, clock=clock), breaker=breaker, rate_limit=limit)
    client = driver.client(stack.transport if driver.mode == "sync" else stack.async_transport)
    with pytest.raises(rs.CircuitOpenError):
        client.request("GET", f"{server.url}/b")  # 503 opens it; the retry stops at once
    for _ in range(5):
        with pytest.raises(rs.CircuitOpenError):
            client.request("GET", f"{server.url}/b")
    assert server.count("/b") == 1
    clock.advance(11)
    probe = client.request("GET", f"{server.url}/b")  # the second and last token
    assert (probe.status_code, probe.content) == (200, b"back")


def test_a_429_pauses_the_limiter_for_the_key(server: FaultServer, driver: Driver) -> None:
    server.script("/t", Respond(429, headers={"retry-after": "3"}), then=Respond(200, b"ok"))
    clock = FakeClock()
    stack = rs.Stack(
        retry=rs.Retry(attempts=2, clock=clock),
        rate_limit=rs.RateLimit("100/second", clock=clock),
    )
    client = driver.client(stack.transport if driver.mode == "sync" else stack.async_transport)
    assert client.request("GET", f"{server.url}/t").status_code == 200
    assert sum(clock.sleeps) >= 3  # the retry's wait and the limiter's pause share the clock
    started = clock.monotonic()
    assert client.request("GET", f"{server.url}/t").status_code == 200
    assert clock.monotonic() - started < 3  # the pause has passed: no second wait


def test_overrides_reach_every_layer(server: FaultServer, driver: Driver) -> None:
    server.script("/o", Respond(503), then=Respond(200, b"x", {"cache-control": "max-age=60"}))
    limit = rs.RateLimit("1/minute", mode="raise")
    stack = rs.Stack(cache=rs.Cache(), retry=rs.Retry(clock=FakeClock()), rate_limit=limit)
    client = driver.client(stack.transport if driver.mode == "sync" else stack.async_transport)
    no_retry = {"resilience": {"retry": None, "cache": False}}
    assert client.request("GET", f"{server.url}/o", extensions=no_retry).status_code == 503
    tenant = {"resilience": {"rate_limit": limit.replace(key="tenant-7"), "cache": False}}
    assert client.request("GET", f"{server.url}/o", extensions=tenant).status_code == 200
    unlimited = {"resilience": {"rate_limit": None, "cache": False}}
    assert client.request("GET", f"{server.url}/o", extensions=unlimited).status_code == 200
    assert server.count("/o") == 3


def test_client_keeps_the_httpx_settings() -> None:
    stack = rs.Stack(retry=rs.Retry())
    client = stack.client(
        base_url="http://127.0.0.1:1",
        limits=httpx.Limits(max_connections=7),
        http2=False,
        verify=False,
        proxy="http://127.0.0.1:9",
    )
    with client:
        inner = client._transport
        assert chain(inner) == ["RetryTransport", "HTTPTransport"]
        pool = inner.transport._pool  # type: ignore[attr-defined]
        assert pool._max_connections == 7
        assert pool._ssl_context.verify_mode.name == "CERT_NONE"
        # httpx mounts the proxy for every URL; that transport is wrapped too
        (proxied,) = [t for t in client._mounts.values() if t is not None]
        assert chain(proxied) == ["RetryTransport", "HTTPTransport"]
        proxy_pool = proxied.transport._pool  # type: ignore[attr-defined]
        assert type(proxy_pool).__name__ == "HTTPProxy"
        assert proxy_pool._max_connections == 7


def test_client_keeps_environment_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with rs.Stack(retry=rs.Retry()).client() as client:
        mounted = [t for t in client._mounts.values() if t is not None]
        assert mounted
        assert all(chain(t)[0] == "RetryTransport" for t in mounted)


def test_wrap_keeps_every_client_setting_and_is_idempotent(server: FaultServer) -> None:
    server.script("/w", Respond(503), then=Respond(200, b"ok"))
    seen: list[str] = []
    client = httpx.Client(
        base_url=server.url,
        auth=("user", "pass"),
        headers={"x-app": "demo"},
        cookies={"c": "1"},
        timeout=httpx.Timeout(3.0),
        event_hooks={"request": [lambda request: seen.append(request.url.path)]},
    )
    stack = rs.Stack(retry=rs.Retry(clock=FakeClock()))
    assert rs.wrap(client, stack) is client
    rs.wrap(client, stack)
    assert chain(client._transport) == ["RetryTransport", "HTTPTransport"]  # not doubled
    assert str(client.base_url).rstrip("/") == server.url
    assert client.headers["x-app"] == "demo"
    assert client.cookies["c"] == "1"
    assert client.timeout == httpx.Timeout(3.0)
    with client:
        assert client.get("/w").status_code == 200  # retried through the stack
    sent = server.requests_for("/w")
    assert len(sent) == 2
    assert all(r.header("authorization") == "Basic dXNlcjpwYXNz" for r in sent)
    assert all(r.header("x-app") == "demo" and r.header("cookie") == "c=1" for r in sent)
    assert seen == ["/w"]
    rs.wrap(client, rs.Stack(breaker=rs.CircuitBreaker()))  # another stack replaces the first
    assert chain(client._transport) == ["CircuitBreakerTransport", "HTTPTransport"]


def test_wrap_an_async_client(server: FaultServer) -> None:
    server.script("/aw", Respond(503), then=Respond(200, b"ok"))

    async def main() -> int:
        async with httpx.AsyncClient(base_url=server.url) as client:
            rs.wrap(client, rs.Stack(retry=rs.Retry(clock=FakeClock())))
            assert chain(client._transport) == ["RetryTransport", "AsyncHTTPTransport"]
            return (await client.get("/aw")).status_code

    assert anyio.run(main) == 200
    assert server.count("/aw") == 2


def test_a_stack_decorates_functions() -> None:
    calls: list[int] = []
    stack = rs.Stack(
        retry=rs.Retry(attempts=3, on=ValueError, clock=FakeClock()),
        breaker=rs.CircuitBreaker(fail_max=10),
        rate_limit=rs.RateLimit("100/second"),
        cache=rs.Cache(),  # ignored for functions
    )

    @stack
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return "done"

    @stack
    async def aflaky() -> str:
        calls.append(2)
        if calls.count(2) < 2:
            raise ValueError("not yet")
        return "adone"

    assert flaky() == "done"
    assert anyio.run(aflaky) == "adone"
    assert calls == [1, 1, 1, 2, 2]
    with pytest.raises(TypeError, match=r"Retry\(on=\.\.\.\)"):
        rs.Stack(retry=rs.Retry())(flaky)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Stack\.retry"):
        rs.Stack(retry=rs.CircuitBreaker())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Stack\.transport\.inner"):
        rs.Stack().transport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"wrap\.client"):
        rs.wrap(object(), rs.Stack())  # type: ignore[call-overload]


def test_default_preset() -> None:
    stack = rs.Stack.default()
    assert stack.retry is not None
    assert stack.retry.budget is not None
    assert stack.breaker is not None
    assert stack.cache is not None
    assert stack.log is not None
    assert stack.rate_limit is None
    assert chain(stack.transport())[0] == "LogTransport"
