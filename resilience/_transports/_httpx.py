"""What every httpx transport of ours shares: errors, options, deadlines and response hygiene."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import httpx

from .. import _exceptions
from .._keys import KeyFunc, per_host
from .._retry import Failure

__all__ = [
    "DEADLINE",
    "OPTIONS",
    "CircuitOpenError",
    "DeadlineExceeded",
    "RateLimitExceeded",
    "aclose_quietly",
    "aread_bounded",
    "cap_timeouts",
    "classify",
    "close_quietly",
    "header_names",
    "options",
    "read_bounded",
    "replayable",
    "time_left",
    "timeout_kind",
]

OPTIONS = "resilience"
"""``request.extensions[OPTIONS]``: the caller's overrides (a mapping we never mutate)."""
DEADLINE = "resilience.deadline"
"""``request.extensions[DEADLINE]``: the logical request's deadline, absolute monotonic seconds."""
_ORIGINAL_TIMEOUT = "resilience.timeout"

_DRAIN_LIMIT = 64 * 1024


class DeadlineExceeded(_exceptions.DeadlineExceeded, httpx.TimeoutException):
    """:class:`resilience.DeadlineExceeded` from a transport: also an ``httpx.TimeoutException``."""

    def __init__(
        self, message: str, *, request: httpx.Request | None = None, deadline: float | None = None
    ) -> None:
        _exceptions.DeadlineExceeded.__init__(self, message, deadline=deadline)
        if request is not None:
            self.request = request


class RateLimitExceeded(_exceptions.RateLimitExceeded, httpx.TransportError):
    """:class:`resilience.RateLimitExceeded` from a transport: also an ``httpx.TransportError``."""

    def __init__(
        self, message: str, *, retry_after: float, key: str, request: httpx.Request | None = None
    ) -> None:
        _exceptions.RateLimitExceeded.__init__(self, message, retry_after=retry_after, key=key)
        if request is not None:
            self.request = request


class CircuitOpenError(_exceptions.CircuitOpenError, httpx.TransportError):
    """:class:`resilience.CircuitOpenError` from a transport: also an ``httpx.TransportError``."""

    def __init__(
        self, message: str, *, retry_after: float, key: str, request: httpx.Request | None = None
    ) -> None:
        _exceptions.CircuitOpenError.__init__(self, message, retry_after=retry_after, key=key)
        if request is not None:
            self.request = request


def options(request: httpx.Request) -> Mapping[str, Any]:
    """The per-request overrides in ``extensions["resilience"]`` (empty when there are none)."""
    value = request.extensions.get(OPTIONS)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f'extensions["{OPTIONS}"] must be a dict of overrides, got {value!r}')
    return value


_P = TypeVar("_P")


def override(request: httpx.Request, name: str, default: _P, kind: type[_P]) -> _P | None:
    """The policy for this request: ``extensions["resilience"][name]`` if given, else ``default``.

    ``None`` there turns the layer off for the request; anything but a ``kind`` is refused.
    """
    if OPTIONS not in request.extensions:
        return default
    overrides = options(request)
    if name not in overrides:
        return default
    policy = overrides[name]
    if policy is None or isinstance(policy, kind):
        return policy
    raise TypeError(
        f'extensions["{OPTIONS}"]["{name}"] must be a {kind.__name__} or None, got {policy!r}'
    )


_ORIGINS: dict[tuple[str, str, int | None], str] = {}
_ORIGINS_MAX = 4096


def policy_key(request: httpx.Request, key: KeyFunc | str | None) -> str:
    """The state key of ``request`` under a policy's ``key`` (default: :func:`per_host`)."""
    if key is None:
        # per_host's answer, remembered per (scheme, host, port) as httpx 0.28 parsed them
        parsed = request.url._uri_reference
        origin = (parsed.scheme, parsed.host, parsed.port)
        found = _ORIGINS.get(origin)
        if found is None:
            found = per_host(request)
            if len(_ORIGINS) >= _ORIGINS_MAX:
                _ORIGINS.clear()  # cheap and bounded; recomputed on demand
            _ORIGINS[origin] = found
        return found
    return key if isinstance(key, str) else key(request)


def header_names(headers: httpx.Headers) -> list[bytes]:
    """The names in ``headers``, lower case, as bytes: no decoding (httpx 0.28 keeps them so)."""
    return [lowered for _, lowered, _ in headers._list]


def time_left(request: httpx.Request, now: float) -> float | None:
    """Seconds until the logical request's deadline (None when it has none)."""
    deadline = request.extensions.get(DEADLINE)
    return None if deadline is None else deadline - now


def replayable(request: httpx.Request) -> bool:
    """Whether the request body can be sent again (bytes yes; generators and files no)."""
    return isinstance(request.stream, httpx.ByteStream)


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def classify(exc: Exception) -> Failure:
    """How far a request that raised ``exc`` got. Our own errors are checked first."""
    if isinstance(exc, _exceptions.ResilienceError):
        return Failure.FATAL
    if isinstance(exc, _NOT_SENT):
        return Failure.NOT_SENT
    if isinstance(exc, _MAYBE_SENT):
        return Failure.MAYBE_SENT
    return Failure.FATAL


def timeout_kind(exc: Exception) -> str | None:
    """Which of httpx's four timeouts ``exc`` is, or None."""
    if isinstance(exc, httpx.ReadTimeout):
        return "read"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect"
    if isinstance(exc, httpx.WriteTimeout):
        return "write"
    if isinstance(exc, httpx.PoolTimeout):
        return "pool"
    return None


_KINDS = ("connect", "read", "write", "pool")
_NOTHING: frozenset[str] = frozenset()


def cap_timeouts(request: httpx.Request, remaining: float) -> frozenset[str]:
    """Cap each of the request's timeouts to ``remaining`` seconds; return the kinds capped.

    The caller's own timeouts are kept aside in the extensions, so every attempt and every
    redirect hop is capped from them, never from an earlier cap.
    """
    extensions = request.extensions
    original = extensions.get(_ORIGINAL_TIMEOUT)
    if original is None:
        timeout = extensions.get("timeout")
        if timeout is not None:
            for kind in _KINDS:
                value = timeout.get(kind)
                if value is None or value > remaining:
                    break
            else:  # the common case: the deadline is far; nothing to change, nothing copied
                return _NOTHING
        original = extensions[_ORIGINAL_TIMEOUT] = dict(extensions.get("timeout") or {})
    capped = dict(original)
    kinds = set()
    for kind in _KINDS:
        value = original.get(kind)
        if value is None or value > remaining:
            capped[kind] = remaining
            kinds.add(kind)
    extensions["timeout"] = capped
    return frozenset(kinds)


def _drainable(response: httpx.Response, limit: int) -> bool:
    length = response.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= limit


def read_bounded(response: httpx.Response, limit: int) -> bool:
    """Read the body if its length is known, at most ``limit``, and it is not an event stream."""
    if not _drainable(response, limit):
        return False
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return False
    response.read()
    return True


async def aread_bounded(response: httpx.Response, limit: int) -> bool:
    """Async :func:`read_bounded`."""
    if not _drainable(response, limit):
        return False
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return False
    await response.aread()
    return True


def close_quietly(response: httpx.Response) -> None:
    """Release a response we will not return: drain a small body so the connection is reused."""
    try:
        if _drainable(response, _DRAIN_LIMIT):
            response.read()
    except Exception:
        pass
    finally:
        response.close()


async def aclose_quietly(response: httpx.Response) -> None:
    """Async :func:`close_quietly`."""
    try:
        if _drainable(response, _DRAIN_LIMIT):
            await response.aread()
    except Exception:
        pass
    finally:
        await response.aclose()
