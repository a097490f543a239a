"""``Stack``: the layers in the recommended order, as transports, clients or a decorator.

Outermost first: log (request) → cache → retry → breaker → rate limit → log (attempt) →
network. Why this order:

- The **request log** is outermost, so it sees the logical request as the caller does: total
  time, how many attempts, how it was served.
- The **cache** comes next: a hit costs no retry budget, no breaker slot and no rate-limit
  token, and a stale copy can answer when everything below fails (stale-if-error).
- **Retry** sits above the breaker and the limiter, so every attempt is admitted by the
  breaker and pays a token. An open breaker stops the retries at once
  (``CircuitOpenError`` is not retried).
- The **breaker** sits above the limiter, so an open circuit fails fast without consuming a
  token.
- The **rate limit** is next to the network, where requests are actually sent; a 429's
  Retry-After pauses its key for every caller.
- The **attempt log** is innermost: one event per request that really went out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import httpx

from .._breaker import CircuitBreaker
from .._cache import Cache
from .._logging import Log
from .._ratelimit import RateLimit
from .._retry import Backoff, Retry, RetryBudget
from .._validate import check_instance
from .breaker import CircuitBreakerTransport
from .cache import CacheTransport
from .log import LogTransport
from .ratelimit import RateLimitTransport
from .retry import RetryTransport

__all__ = ["Stack", "wrap"]

T = TypeVar("T", httpx.BaseTransport, httpx.AsyncBaseTransport)
F = TypeVar("F", bound=Callable[..., Any])

_STACK_OF = "_resilience_stack"  # set on the outermost layer: the Stack that built it
_INNER_OF = "_resilience_inner"  # ... and the transport it wraps


@dataclass(frozen=True, slots=True)
class Stack:
    """Any subset of the layers, put in the recommended order.

    Args:
        cache: a :class:`~resilience.Cache`, or None.
        retry: a :class:`~resilience.Retry`, or None.
        breaker: a :class:`~resilience.CircuitBreaker`, or None.
        rate_limit: a :class:`~resilience.RateLimit`, or None.
        log: a :class:`~resilience.Log`, or None. It is placed twice: outermost (one
            ``http.request`` event per logical request) and next to the network (one
            ``http.attempt`` event per attempt).

    Raises:
        TypeError: a layer of the wrong type, naming it.
    """

    cache: Cache | None = None
    retry: Retry | None = None
    breaker: CircuitBreaker | None = None
    rate_limit: RateLimit | None = None
    log: Log | None = None

    def __post_init__(self) -> None:
        for name, kind in (
            ("cache", Cache),
            ("retry", Retry),
            ("breaker", CircuitBreaker),
            ("rate_limit", RateLimit),
            ("log", Log),
        ):
            value = getattr(self, name)
            if value is not None:
                check_instance("Stack", name, value, kind)

    @classmethod
    def default(cls) -> Stack:
        """Production defaults, each from the practice of the best peers (see docs/stack.md).

        - Retry: 4 attempts, full-jitter exponential backoff from 0.5 s capped at 30 s,
          Retry-After honoured up to 120 s, a 60 s deadline per logical request, and a retry
          budget (retries at most 20% of traffic per host, at least 10 per second), as in
          Finagle and the AWS SDKs.
        - Circuit breaker: 5 consecutive failures open it for 30 s, per host.
        - Cache: a private RFC 9111 cache in memory, explicit freshness only (no heuristic
          freshness: an API that does not say how long a response stays fresh is not cached).
        - Log: structlog events through the ``"resilience"`` stdlib loggers, secrets redacted.
        - No rate limit: a limit is a property of the API you call; set one with
          ``replace(rate_limit=RateLimit("10/second"))``.
        """
        return cls(
            cache=Cache(heuristic_fraction=0.0),
            retry=Retry(
                attempts=4,
                backoff=Backoff(base=0.5, multiplier=2.0, cap=30.0, jitter="full"),
                deadline=60.0,
                budget=RetryBudget(ratio=0.2, min_per_second=10),
            ),
            breaker=CircuitBreaker(fail_max=5, reset_timeout=30.0),
            log=Log(),
        )

    def replace(self, **changes: Any) -> Stack:
        """A copy with ``changes`` applied (``None`` removes a layer)."""
        return dataclasses.replace(self, **changes)

    @property
    def layers(self) -> list[tuple[str, object]]:
        """The layers present, outermost first, as (name, policy)."""
        order = [
            ("log (request)", self.log),
            ("cache", self.cache),
            ("retry", self.retry),
            ("breaker", self.breaker),
            ("rate_limit", self.rate_limit),
            ("log (attempt)", self.log),
        ]
        return [(name, policy) for name, policy in order if policy is not None]

    def __str__(self) -> str:
        if not self.layers:
            return "Stack: no layers (requests go straight to the network)"
        lines = ["Stack, outermost first:"]
        lines += [f"  {n}. {name}: {policy!r}" for n, (name, policy) in enumerate(self.layers, 1)]
        lines.append(f"  {len(self.layers) + 1}. network")
        return "\n".join(lines)

    # -- transports -----------------------------------------------------------------------------

    def _build(self, inner: T) -> T:
        transport: Any = inner
        if self.log is not None:
            transport = LogTransport(transport, self.log, scope="attempt")
        if self.rate_limit is not None:
            transport = RateLimitTransport(transport, self.rate_limit)
        if self.breaker is not None:
            transport = CircuitBreakerTransport(transport, self.breaker)
        if self.retry is not None:
            transport = RetryTransport(transport, self.retry)
        if self.cache is not None:
            transport = CacheTransport(transport, self.cache)
        if self.log is not None:
            transport = LogTransport(transport, self.log, scope="request")
        if transport is not inner:
            setattr(transport, _STACK_OF, self)
            setattr(transport, _INNER_OF, inner)
        return transport  # type: ignore[no-any-return]

    def transport(self, inner: httpx.BaseTransport | None = None) -> httpx.BaseTransport:
        """The layers around ``inner`` (default: ``httpx.HTTPTransport()``), for ``httpx.Client``.

        ``inner`` may be any sync transport: HTTP/2, a proxy, custom TLS, ``MockTransport``.
        """
        if inner is None:
            inner = httpx.HTTPTransport()
        check_instance("Stack.transport", "inner", inner, httpx.BaseTransport)
        return self._build(inner)

    def async_transport(
        self, inner: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncBaseTransport:
        """The layers around ``inner`` (default: ``httpx.AsyncHTTPTransport()``)."""
        if inner is None:
            inner = httpx.AsyncHTTPTransport()
        check_instance("Stack.async_transport", "inner", inner, httpx.AsyncBaseTransport)
        return self._build(inner)

    def client(self, **httpx_kwargs: Any) -> httpx.Client:
        """``httpx.Client(**httpx_kwargs)`` with every transport wrapped in this stack.

        Unlike ``httpx.Client(transport=stack.transport())``, this keeps ``verify``, ``cert``,
        ``http2``, ``limits``, ``proxy``, ``mounts`` and ``trust_env`` (environment proxies
        included): httpx builds its transports as usual, then each is wrapped.
        """
        return wrap(httpx.Client(**httpx_kwargs), self)

    def async_client(self, **httpx_kwargs: Any) -> httpx.AsyncClient:
        """:meth:`client` for ``httpx.AsyncClient``."""
        return wrap(httpx.AsyncClient(**httpx_kwargs), self)

    # -- functions ------------------------------------------------------------------------------

    def __call__(self, function: F) -> F:
        """Decorate a sync or async function with the retry, breaker and rate-limit layers.

        The cache and the log do not apply to functions. A ``Retry`` here needs ``on=``.
        """
        if isinstance(function, type) or not callable(function):
            raise TypeError(f"Stack decorates functions, got {function!r}")
        if self.retry is not None and self.retry.on is None:
            raise TypeError(
                "Stack(retry=...) decorating a function needs Retry(on=...): the exceptions to "
                "retry (a transport needs none)"
            )
        decorated: Any = function
        for policy in (self.rate_limit, self.breaker, self.retry):
            if policy is not None:
                decorated = policy(decorated)
        return decorated  # type: ignore[no-any-return]


def _unwrapped(transport: Any) -> Any:
    """The transport under a stack built by :meth:`Stack._build` (itself if none)."""
    return getattr(transport, _INNER_OF, transport)


@overload
def wrap(client: httpx.Client, stack: Stack) -> httpx.Client: ...
@overload
def wrap(client: httpx.AsyncClient, stack: Stack) -> httpx.AsyncClient: ...
def wrap(
    client: httpx.Client | httpx.AsyncClient, stack: Stack
) -> httpx.Client | httpx.AsyncClient:
    """Wrap an existing client's transport and every mount in ``stack``, in place.

    The client keeps its base URL, auth, headers, cookies, timeouts, event hooks and its
    transports' settings (TLS, HTTP/2, pool limits, proxies): only the transports change.
    Wrapping a wrapped client again replaces its stack instead of adding a second one.

    Returns:
        the same client.
    """
    check_instance("wrap", "stack", stack, Stack)
    check_instance("wrap", "client", client, (httpx.Client, httpx.AsyncClient))

    def build(inner: Any) -> Any:
        return stack._build(_unwrapped(inner))

    # httpx 0.28 keeps the default transport in ``_transport`` and the mounts (proxies
    # included) in ``_mounts``: a mapping of URL patterns to transports, or None for "no proxy".
    client._transport = build(client._transport)
    client._mounts = {
        pattern: None if transport is None else build(transport)
        for pattern, transport in client._mounts.items()
    }
    return client
