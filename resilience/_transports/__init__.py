"""The httpx adapter: one small transport per layer.

This package is the only place that imports httpx; the policies beside it know nothing of any
HTTP library, so a second client library can get its own adapter without touching them.
"""

from __future__ import annotations

from ._httpx import CircuitOpenError, DeadlineExceeded, RateLimitExceeded
from .breaker import CircuitBreakerTransport
from .cache import CACHE_STATUS, CacheTransport
from .log import LogTransport
from .ratelimit import RateLimitTransport
from .retry import RetryTransport
from .stack import Stack, wrap

__all__ = [
    "CACHE_STATUS",
    "CacheTransport",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "DeadlineExceeded",
    "LogTransport",
    "RateLimitExceeded",
    "RateLimitTransport",
    "RetryTransport",
    "Stack",
    "wrap",
]
