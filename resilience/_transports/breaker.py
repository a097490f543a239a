"""``CircuitBreakerTransport``: a circuit breaker around any sync or async httpx transport."""

from __future__ import annotations

import httpx

from .. import _exceptions
from .._breaker import CircuitBreaker, Outcome
from ._httpx import OPTIONS, CircuitOpenError, override, policy_key

__all__ = ["CircuitBreakerTransport"]

_SUCCESS = Outcome.SUCCESS
# Errors that say nothing about the server's health: our own request was malformed.
_NOT_THE_SERVERS_FAULT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


class CircuitBreakerTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Fails fast while a host is failing, per :class:`~resilience.CircuitBreaker`.

    - Failures: connect errors, timeouts, read/write and protocol errors, and responses whose
      status is in ``failure_statuses`` (500, 502, 503, 504 by default). Those responses are
      still returned to the caller, as they are: the breaker records, it does not convert.
    - Successes: every other response, 4xx included. Neutral: 429 (throttling is not
      failure), resilience's own errors, and cancellation.
    - Open: :class:`~resilience.CircuitOpenError` (also an ``httpx.TransportError``) at
      once, without touching the network, with ``.retry_after`` and ``.key``.
    - ``extensions={"resilience": {"breaker": policy}}`` replaces the policy for one
      request; ``None`` bypasses the breaker.

    Args:
        transport: the transport that sends the requests (closed when this one is closed).
        breaker: the policy.
    """

    def __init__(
        self, transport: httpx.BaseTransport | httpx.AsyncBaseTransport, breaker: CircuitBreaker
    ) -> None:
        if not isinstance(transport, (httpx.BaseTransport, httpx.AsyncBaseTransport)):
            raise TypeError(
                f"CircuitBreakerTransport needs an httpx transport to wrap, got {transport!r}"
            )
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(
                f"CircuitBreakerTransport.breaker must be a CircuitBreaker, got {breaker!r}"
            )
        self.transport = transport
        self.breaker = breaker

    def __repr__(self) -> str:
        return f"CircuitBreakerTransport({self.transport!r}, {self.breaker!r})"

    def _policy(self, request: httpx.Request) -> CircuitBreaker | None:
        return override(request, "breaker", self.breaker, CircuitBreaker)

    @staticmethod
    def _refused(exc: _exceptions.CircuitOpenError, request: httpx.Request) -> CircuitOpenError:
        """``policy.admit``'s refusal as our httpx-flavoured :class:`CircuitOpenError`."""
        return CircuitOpenError(str(exc), retry_after=exc.retry_after, key=exc.key, request=request)

    @staticmethod
    def _response_outcome(policy: CircuitBreaker, response: httpx.Response) -> Outcome:
        if policy.is_failure is not None:
            verdict = policy.is_failure(response)
            if verdict is not None:
                return Outcome.FAILURE if verdict else Outcome.SUCCESS
        status = response.status_code
        if status in policy.failure_statuses:
            return Outcome.FAILURE
        return Outcome.NEUTRAL if status == 429 else Outcome.SUCCESS

    @staticmethod
    def _error_outcome(policy: CircuitBreaker, exc: BaseException) -> Outcome:
        if isinstance(exc, _exceptions.ResilienceError) or not isinstance(exc, Exception):
            return Outcome.NEUTRAL  # ours (checked first), cancellation, KeyboardInterrupt
        if policy.is_failure is not None:
            verdict = policy.is_failure(exc)
            if verdict is not None:
                return Outcome.FAILURE if verdict else Outcome.SUCCESS
        if isinstance(exc, httpx.TransportError) and not isinstance(exc, _NOT_THE_SERVERS_FAULT):
            return Outcome.FAILURE
        return Outcome.NEUTRAL

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"CircuitBreakerTransport wraps an async transport ({transport!r}): "
                "use it with httpx.AsyncClient"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.breaker if OPTIONS not in request.extensions else self._policy(request)
        if policy is None:
            return transport.handle_request(request)
        key = policy_key(request, policy.key)
        try:
            ticket = policy.admit(key)
        except _exceptions.CircuitOpenError as exc:
            raise self._refused(exc, request) from None
        outcome = Outcome.NEUTRAL
        try:
            response = transport.handle_request(request)
            status = response.status_code
            if (
                policy.is_failure is None
                and status != 429
                and status not in policy.failure_statuses
            ):
                outcome = _SUCCESS  # the common case of _response_outcome, inline
            else:
                outcome = self._response_outcome(policy, response)
            return response
        except BaseException as exc:
            outcome = self._error_outcome(policy, exc)
            raise
        finally:
            policy.record(key, ticket, outcome)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"CircuitBreakerTransport wraps a sync transport ({transport!r}): "
                "use it with httpx.Client"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.breaker if OPTIONS not in request.extensions else self._policy(request)
        if policy is None:
            return await transport.handle_async_request(request)
        key = policy_key(request, policy.key)
        try:
            ticket = policy.admit(key)
        except _exceptions.CircuitOpenError as exc:
            raise self._refused(exc, request) from None
        outcome = Outcome.NEUTRAL
        try:
            response = await transport.handle_async_request(request)
            status = response.status_code
            if (
                policy.is_failure is None
                and status != 429
                and status not in policy.failure_statuses
            ):
                outcome = _SUCCESS  # the common case of _response_outcome, inline
            else:
                outcome = self._response_outcome(policy, response)
            return response
        except BaseException as exc:
            outcome = self._error_outcome(policy, exc)
            raise
        finally:
            policy.record(key, ticket, outcome)

    def close(self) -> None:
        if isinstance(self.transport, httpx.BaseTransport):
            self.transport.close()

    async def aclose(self) -> None:
        if isinstance(self.transport, httpx.AsyncBaseTransport):
            await self.transport.aclose()
