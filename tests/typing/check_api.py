"""Checked by `mypy --strict` in CI (not collected by pytest): the public API's types hold.

Decorators keep the decorated function's signature (ParamSpec), so a type checker still sees
the parameters and the return type.
"""

from __future__ import annotations

import httpx
from typing_extensions import assert_type

import resilience as rs


@rs.Retry(on=ConnectionError)
def fetch(url: str, *, attempts: int = 1) -> bytes:
    return url.encode() * attempts


@rs.Retry(on=(ConnectionError, TimeoutError))
async def afetch(url: str) -> int:
    return len(url)


async def use() -> None:
    assert_type(fetch("x", attempts=2), bytes)
    assert_type(await afetch("x"), int)
    fetch(1)  # type: ignore[arg-type]
    fetch("x", tries=2)  # type: ignore[call-arg]


transport: httpx.BaseTransport = rs.RetryTransport(httpx.HTTPTransport(), rs.Retry())
async_transport: httpx.AsyncBaseTransport = rs.RetryTransport(httpx.AsyncHTTPTransport())
policy: rs.Retry = rs.Retry().replace(attempts=2)


@rs.RateLimit("5/second")
def limited(x: int) -> str:
    return str(x)


@rs.RateLimit("5/second", mode="raise")
async def alimited(x: int) -> float:
    return x / 2


async def use_limited() -> None:
    assert_type(limited(1), str)
    assert_type(await alimited(1), float)


limit_transport: httpx.BaseTransport = rs.RateLimitTransport(
    httpx.HTTPTransport(), rs.RateLimit("10/second;500/minute")
)


@rs.CircuitBreaker(fail_max=3, reset_timeout=10.0)
async def charge(amount: int) -> bool:
    return amount > 0


@rs.CircuitBreaker()
def lookup(name: str) -> list[str]:
    return [name]


async def use_breaker() -> None:
    assert_type(await charge(1), bool)
    assert_type(lookup("x"), list[str])


breaker_transport: httpx.AsyncBaseTransport = rs.CircuitBreakerTransport(
    httpx.AsyncHTTPTransport(), rs.CircuitBreaker(failure_statuses={500, 503})
)

stack = rs.Stack(retry=rs.Retry(on=ValueError), breaker=rs.CircuitBreaker())
assert_type(rs.wrap(httpx.Client(), stack), httpx.Client)
assert_type(rs.wrap(httpx.AsyncClient(), stack), httpx.AsyncClient)
assert_type(stack.client(), httpx.Client)
assert_type(stack.async_client(http2=False), httpx.AsyncClient)
assert_type(stack.transport(), httpx.BaseTransport)
assert_type(stack.async_transport(), httpx.AsyncBaseTransport)


@stack
async def stacked(n: int) -> str:
    return str(n)


async def use_stack() -> None:
    assert_type(await stacked(1), str)
