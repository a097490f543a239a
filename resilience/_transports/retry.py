"""``RetryTransport``: the retry policy around any sync or async httpx transport."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import anyio
import httpx

from .._log import EventLogger, redact_url
from .._retry import Decision, Retry, RetryCall, Verdict
from ._deadlines import arm
from ._httpx import (
    DEADLINE,
    OPTIONS,
    DeadlineExceeded,
    aclose_quietly,
    aread_bounded,
    cap_timeouts,
    classify,
    close_quietly,
    options,
    override,
    policy_key,
    read_bounded,
    replayable,
    timeout_kind,
)

__all__ = ["RetryTransport"]

_events = EventLogger("resilience.retry")
_NOTHING_CAPPED: frozenset[str] = frozenset()
# Under asyncio on 3.11+ (Task.uncancel), one timer per event loop cuts attempts off at their
# deadlines (_deadlines.arm: a set insertion per attempt, where asyncio.timeout costs a timer
# handle and about 5 µs); an anyio cancel scope serves trio and Python 3.10.
_watched = hasattr(asyncio.Task, "uncancel")


class RetryTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Retries requests that failed in a way :class:`~resilience.Retry` says is worth retrying.

    One class serves both clients: it wraps a sync transport for ``httpx.Client`` or an async
    one for ``httpx.AsyncClient``. It sits below redirects and auth, so each redirect hop is
    retried on its own, while the deadline covers the whole logical request, every hop
    included.

    - When retries run out on a status, the last response is returned (``raise_for_status()``
      decides); on an exception, the last one is re-raised.
    - A response that will be retried is read (up to 64 KiB) and closed, so its connection is
      released; with ``read_body=True`` the body of a response is read inside the attempt, so a
      body cut short is retried like any other failure.
    - A request whose body is a one-shot stream (a generator, a file) is not resent once it may
      have been sent: read it into memory first (``request.read()``) to make it retryable.
    - ``extensions={"resilience": {"retry": policy}}`` replaces the policy for one request;
      ``{"retry": None}`` disables retrying; ``{"read_body": False}`` turns ``read_body`` off.

    Args:
        transport: the transport that sends each attempt (closed when this one is closed).
        retry: the policy; ``Retry()`` when omitted.

    Example:
        >>> import httpx, resilience as rs
        >>> client = httpx.Client(transport=rs.RetryTransport(httpx.HTTPTransport(), rs.Retry()))
        >>> client.close()
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport,
        retry: Retry | None = None,
    ) -> None:
        if not isinstance(transport, (httpx.BaseTransport, httpx.AsyncBaseTransport)):
            raise TypeError(f"RetryTransport needs an httpx transport to wrap, got {transport!r}")
        if retry is None:
            retry = Retry()
        elif not isinstance(retry, Retry):
            raise TypeError(f"RetryTransport.retry must be a Retry, got {retry!r}")
        self.transport = transport
        self.retry = retry

    def __repr__(self) -> str:
        return f"RetryTransport({self.transport!r}, {self.retry!r})"

    # -- what both loops share -----------------------------------------------------------------

    def _policy(self, request: httpx.Request) -> Retry | None:
        return override(request, "retry", self.retry, Retry)

    @staticmethod
    def _key(request: httpx.Request, policy: Retry) -> str:
        return policy_key(request, policy.key)

    def _begin(
        self, request: httpx.Request, policy: Retry
    ) -> tuple[float | None, bool, frozenset[str]]:
        """Record the request in the budget, set its deadline, cap the first attempt.

        Returns (deadline, read_body, capped): ``capped`` is :meth:`_cap`'s answer for the first
        attempt, from the same reading of the clock.
        """
        extensions = request.extensions
        deadline: float | None = extensions.get(DEADLINE)
        now: float | None = None
        if policy.budget is not None or policy.deadline is not None:
            now = policy.clock.monotonic()
            if policy.budget is not None:
                policy.budget.storage.deposit(policy_key(request, policy.key), now)
            if policy.deadline is not None and (
                deadline is None or now + policy.deadline < deadline
            ):
                deadline = extensions[DEADLINE] = now + policy.deadline
        read_body = policy.read_body and (
            OPTIONS not in extensions or bool(options(request).get("read_body", True))
        )
        return deadline, read_body, self._cap(request, policy, deadline, now)

    @staticmethod
    def _cap(
        request: httpx.Request, policy: Retry, deadline: float | None, now: float | None = None
    ) -> frozenset[str]:
        """Cap the attempt's timeouts to the time left; refuse to start past the deadline."""
        if deadline is None:
            return _NOTHING_CAPPED
        remaining = deadline - (policy.clock.monotonic() if now is None else now)
        if remaining <= 0:
            raise DeadlineExceeded(
                f"{request.method} {redact_url(str(request.url))}: the deadline passed "
                "before the request could be sent",
                request=request,
                deadline=policy.deadline,
            )
        return cap_timeouts(request, remaining)

    def _failure(
        self, request: httpx.Request, policy: Retry, exc: Exception, capped: frozenset[str]
    ) -> Verdict:
        kind = timeout_kind(exc)
        if kind is not None and kind in capped:
            raise DeadlineExceeded(
                f"{request.method} {redact_url(str(request.url))}: cut off by the deadline",
                request=request,
                deadline=policy.deadline,
            ) from exc
        return policy.classify_failure(
            request.method,
            classify(exc),
            type(exc).__name__,
            keyed=policy.idempotency_header in request.headers,
            replayable=replayable(request),
        )

    def _decide(
        self,
        request: httpx.Request,
        policy: Retry,
        call: RetryCall | None,
        deadline: float | None,
        verdict: Verdict,
    ) -> tuple[RetryCall, Decision]:
        if call is None:
            call = RetryCall(policy, self._key(request, policy), deadline)
        decision = call.decide(verdict, policy.clock.monotonic())
        if decision.retry:
            _events.info(
                "retry.scheduled",
                method=request.method,
                url=redact_url(str(request.url)),
                attempt=call.attempts - 1,
                delay=round(decision.delay, 4),
                reason=decision.reason,
            )
        return call, decision

    def _after_failure(
        self,
        request: httpx.Request,
        policy: Retry,
        call: RetryCall | None,
        deadline: float | None,
        exc: Exception,
        capped: frozenset[str],
    ) -> tuple[RetryCall, Decision]:
        """Retry or stop after an attempt raised ``exc`` (raises when the deadline cut it)."""
        return self._decide(
            request, policy, call, deadline, self._failure(request, policy, exc, capped)
        )

    def _after_response(
        self,
        request: httpx.Request,
        policy: Retry,
        call: RetryCall | None,
        deadline: float | None,
        response: httpx.Response,
    ) -> tuple[RetryCall, Decision]:
        """Retry or stop after a response with a retryable status or ``x-should-retry``."""
        verdict = policy.classify_response(
            request.method,
            response.status_code,
            response.headers,
            keyed=policy.idempotency_header in request.headers,
            replayable=replayable(request),
            now=policy.clock.time(),
        )
        return self._decide(request, policy, call, deadline, verdict)

    # -- sync ------------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"RetryTransport wraps an async transport ({transport!r}): "
                "use it with httpx.AsyncClient"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.retry if OPTIONS not in request.extensions else self._policy(request)
        if policy is None:
            return transport.handle_request(request)
        deadline, read_body, capped = self._begin(request, policy)
        call: RetryCall | None = None
        while True:
            if call is not None:  # a retry: cap its timeouts to the time left now
                capped = self._cap(request, policy, deadline)
            try:
                response = transport.handle_request(request)
                if read_body:
                    try:
                        read_bounded(response, policy.read_body_limit)
                    except BaseException:
                        response.close()
                        raise
            except Exception as exc:
                call, failed = self._after_failure(request, policy, call, deadline, exc, capped)
                if not failed.retry:
                    raise
                policy.clock.sleep(failed.delay)
                continue
            status = response.status_code
            if status not in policy.statuses and (
                status < 400 or "x-should-retry" not in response.headers
            ):
                return response  # the common case, inline: a response not worth a decision
            call, decision = self._after_response(request, policy, call, deadline, response)
            if not decision.retry:
                return response
            close_quietly(response)
            policy.clock.sleep(decision.delay)

    def close(self) -> None:
        transport = self.transport
        if isinstance(transport, httpx.BaseTransport):
            transport.close()

    # -- async -----------------------------------------------------------------------------------

    @staticmethod
    async def _attempt(
        transport: httpx.AsyncBaseTransport, request: httpx.Request, read_limit: int | None
    ) -> httpx.Response:
        response = await transport.handle_async_request(request)
        if read_limit is not None:
            try:
                await aread_bounded(response, read_limit)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                raise
        return response

    @staticmethod
    def _cut_off(request: httpx.Request, policy: Retry) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{request.method} {redact_url(str(request.url))}: cut off by the deadline",
            request=request,
            deadline=policy.deadline,
        )

    async def _within(
        self,
        attempt: Awaitable[httpx.Response],
        remaining: float,
        request: httpx.Request,
        policy: Retry,
    ) -> httpx.Response:
        """Await ``attempt`` in an anyio scope cut off ``remaining`` seconds from now."""
        with anyio.move_on_after(remaining):
            return await attempt
        raise self._cut_off(request, policy)  # leaving the block without returning: cut off

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"RetryTransport wraps a sync transport ({transport!r}): use it with httpx.Client"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.retry if OPTIONS not in request.extensions else self._policy(request)
        if policy is None:
            return await transport.handle_async_request(request)
        deadline, read_body, capped = self._begin(request, policy)
        read_limit = policy.read_body_limit if read_body else None
        # httpx's own timeouts are capped to the deadline already; cutting the attempt off as
        # well covers transports that ignore them, and headers trickling in slower than the
        # read timeout. asyncio tasks use the loop's deadline watch, the rest an anyio scope.
        task = None
        if _watched and deadline is not None:
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no running asyncio loop: trio
                pass
        call: RetryCall | None = None
        while True:
            if call is not None:  # a retry: cap its timeouts to the time left now
                capped = self._cap(request, policy, deadline)
            attempt = (
                transport.handle_async_request(request)
                if read_limit is None  # the common case: no extra coroutine
                else self._attempt(transport, request, read_limit)
            )
            try:
                if deadline is None:
                    response = await attempt
                elif task is not None:  # inline: this runs on every request
                    guard = arm(task, deadline - policy.clock.monotonic())
                    try:
                        response = await attempt
                    except asyncio.CancelledError:
                        if not guard.claim():
                            raise  # a cancellation from outside: it wins
                        raise self._cut_off(request, policy) from None
                    finally:
                        guard.disarm()
                else:
                    remaining = deadline - policy.clock.monotonic()
                    response = await self._within(attempt, remaining, request, policy)
            except Exception as exc:
                call, failed = self._after_failure(request, policy, call, deadline, exc, capped)
                if not failed.retry:
                    raise
                await policy.clock.asleep(failed.delay)
                continue
            status = response.status_code
            if status not in policy.statuses and (
                status < 400 or "x-should-retry" not in response.headers
            ):
                return response  # the common case, inline: a response not worth a decision
            call, decision = self._after_response(request, policy, call, deadline, response)
            if not decision.retry:
                return response
            await aclose_quietly(response)
            await policy.clock.asleep(decision.delay)

    async def aclose(self) -> None:
        transport = self.transport
        if isinstance(transport, httpx.AsyncBaseTransport):
            await transport.aclose()
