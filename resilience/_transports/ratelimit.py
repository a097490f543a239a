"""``RateLimitTransport``: a rate limit in front of any sync or async httpx transport."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from .._log import EventLogger
from .._ratelimit import RateLimit, acquire, acquire_async
from .._retry_after import parse_rate_limit_pause, parse_retry_after
from ._httpx import OPTIONS, RateLimitExceeded, override, policy_key, time_left

__all__ = ["RateLimitTransport"]

_events = EventLogger("resilience.ratelimit")


class RateLimitTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Sends each request only when :class:`~resilience.RateLimit` allows it.

    - In ``"wait"`` mode a request waits for a slot (first come, first served), at most
      ``max_wait`` and never past the logical request's deadline; otherwise, and in
      ``"raise"`` mode, :class:`~resilience.RateLimitExceeded` (also an
      ``httpx.TransportError``) is raised and nothing is sent.
    - A 429 with ``Retry-After``, or ``RateLimit-Remaining: 0`` / ``X-RateLimit-Remaining: 0``
      with a reset, pauses the key until then (at most ``max_wait``), so concurrent requests
      wait instead of hammering the server. The response itself is returned as is.
    - ``extensions={"resilience": {"rate_limit": policy}}`` replaces the policy for one
      request (``policy.replace(key="tenant-7")`` keeps the counts); ``None`` skips the limit.

    Args:
        transport: the transport that sends the requests (closed when this one is closed).
        rate_limit: the policy.
    """

    def __init__(
        self, transport: httpx.BaseTransport | httpx.AsyncBaseTransport, rate_limit: RateLimit
    ) -> None:
        if not isinstance(transport, (httpx.BaseTransport, httpx.AsyncBaseTransport)):
            raise TypeError(
                f"RateLimitTransport needs an httpx transport to wrap, got {transport!r}"
            )
        if not isinstance(rate_limit, RateLimit):
            raise TypeError(
                f"RateLimitTransport.rate_limit must be a RateLimit, got {rate_limit!r}"
            )
        self.transport = transport
        self.rate_limit = rate_limit

    def __repr__(self) -> str:
        return f"RateLimitTransport({self.transport!r}, {self.rate_limit!r})"

    def _policy(self, request: httpx.Request) -> RateLimit | None:
        return override(request, "rate_limit", self.rate_limit, RateLimit)

    @staticmethod
    def _key(request: httpx.Request, policy: RateLimit) -> str:
        return policy_key(request, policy.key)

    @staticmethod
    def _max_wait(request: httpx.Request, policy: RateLimit) -> float:
        left = time_left(request, policy.clock.monotonic())
        return policy.max_wait if left is None else max(0.0, min(policy.max_wait, left))

    @staticmethod
    def _refused(request: httpx.Request) -> Callable[[str, float, str], BaseException]:
        def build(message: str, retry_after: float, key: str) -> BaseException:
            return RateLimitExceeded(message, retry_after=retry_after, key=key, request=request)

        return build

    @staticmethod
    def _observe(policy: RateLimit, key: str, response: httpx.Response) -> None:
        """Pause the key when the server says its quota is spent (bounded by max_wait)."""
        status = response.status_code
        headers = response.headers
        if (
            status != 429
            and "ratelimit-remaining" not in headers
            and "x-ratelimit-remaining" not in headers
        ):
            return
        clock = policy.clock
        seconds = None
        if status == 429:
            seconds = parse_retry_after(headers, clock.time())
        if seconds is None:
            seconds = parse_rate_limit_pause(headers, clock.time())
        if seconds is None or seconds <= 0:
            return
        seconds = min(seconds, policy.max_wait)
        policy.state.pause(key, seconds, clock.monotonic())
        _events.info("rate_limit.paused", key=key, seconds=round(seconds, 3), status=status)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"RateLimitTransport wraps an async transport ({transport!r}): "
                "use it with httpx.AsyncClient"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.rate_limit if OPTIONS not in request.extensions else self._policy(request)
        if policy is None:
            return transport.handle_request(request)
        key = self._key(request, policy)
        acquire(policy, key, self._max_wait(request, policy), self._refused(request))
        response = transport.handle_request(request)
        self._observe(policy, key, response)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"RateLimitTransport wraps a sync transport ({transport!r}): "
                "use it with httpx.Client"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.rate_limit if OPTIONS not in request.extensions else self._policy(request)
        if policy is None:
            return await transport.handle_async_request(request)
        key = self._key(request, policy)
        await acquire_async(policy, key, self._max_wait(request, policy), self._refused(request))
        response = await transport.handle_async_request(request)
        self._observe(policy, key, response)
        return response

    def close(self) -> None:
        if isinstance(self.transport, httpx.BaseTransport):
            self.transport.close()

    async def aclose(self) -> None:
        if isinstance(self.transport, httpx.AsyncBaseTransport):
            await self.transport.aclose()
