"""resilience: composable retry, rate limiting, circuit breaking, caching and logging for httpx.

>>> import httpx, resilience as rs
>>> retry = rs.Retry(attempts=3, backoff=rs.Backoff(base=0.1, cap=2.0))
>>> client = httpx.Client(transport=rs.RetryTransport(httpx.HTTPTransport(), retry))
>>> client.close()
"""

import inspect as _inspect

from ._breaker import FAILURE_STATUSES, BreakerStorage, CircuitBreaker, MemoryBreakerStorage
from ._cache import CREDENTIAL_HEADERS, Cache
from ._cache_storage import CachedResponse, CacheStorage, FileCacheStorage, MemoryCacheStorage
from ._clock import SYSTEM_CLOCK, Clock, SystemClock
from ._exceptions import (
    CircuitOpenError,
    DeadlineExceeded,
    RateLimitExceeded,
    ResilienceError,
    RetryError,
)
from ._keys import KeyFunc, global_key, per_endpoint, per_host
from ._logging import DEFAULT_REDACTIONS, Log, Redactions
from ._ratelimit import RateLimit, RateLimitStorage
from ._retry import (
    IDEMPOTENT,
    RETRY_STATUSES,
    Backoff,
    MemoryBudgetStorage,
    Retry,
    RetryBudget,
)
from ._transports import (
    CacheTransport,
    CircuitBreakerTransport,
    LogTransport,
    RateLimitTransport,
    RetryTransport,
    Stack,
    wrap,
)

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_REDACTIONS",
    "FAILURE_STATUSES",
    "IDEMPOTENT",
    "RETRY_STATUSES",
    "SYSTEM_CLOCK",
    "Backoff",
    "BreakerStorage",
    "Cache",
    "CacheStorage",
    "CacheTransport",
    "CachedResponse",
    "CircuitBreaker",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "Clock",
    "DeadlineExceeded",
    "FileCacheStorage",
    "KeyFunc",
    "Log",
    "LogTransport",
    "MemoryBreakerStorage",
    "MemoryBudgetStorage",
    "MemoryCacheStorage",
    "RateLimit",
    "RateLimitExceeded",
    "RateLimitStorage",
    "RateLimitTransport",
    "Redactions",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "RetryError",
    "RetryTransport",
    "Stack",
    "SystemClock",
    "global_key",
    "per_endpoint",
    "per_host",
    "wrap",
]

# Show exported classes and functions as resilience.X in reprs, tracebacks and docs.
for _name in __all__:
    _obj = globals()[_name]
    if (isinstance(_obj, type) or _inspect.isfunction(_obj)) and str(
        getattr(_obj, "__module__", "")
    ).startswith("resilience."):
        _obj.__module__ = "resilience"
del _name, _obj


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        return version("resilience")
    raise AttributeError(f"module 'resilience' has no attribute {name!r}")
