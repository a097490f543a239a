"""``Cache``: the policy of the private HTTP cache (RFC 9111, RFC 5861's stale-* extensions).

The policy is a value: what may be stored, how long heuristics may keep a response fresh, how
stale a copy may be served when the origin fails, and where entries live (a
:class:`~resilience.CacheStorage`, shared by every transport built from the policy). The rules
themselves are in ``_cache_rules`` (pure functions of headers and times); the transport in
``_transports/cache.py`` applies them.

Keys (API.md 10.4): a storage key is the SHA-256 of the method and the URL (and, for a cached
POST, of the body), never a raw URL. The credentials a request carries (``Authorization``,
``Cookie``, API-key headers) are hashed into the entry's secondary key, next to the ``Vary``
fields, so one user's response is never served to another, while an unsafe request to a URI
still invalidates every user's copy of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ._clock import SYSTEM_CLOCK, Clock
from ._repr import policy_repr
from ._validate import check_instance, check_methods, check_number

__all__ = ["CREDENTIAL_HEADERS", "Cache"]

CREDENTIAL_HEADERS: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
    }
)
"""Request headers whose values are hashed into the cache key (compared case-insensitively)."""

CACHEABLE_METHODS = frozenset({"GET", "HEAD", "POST"})

CREDENTIALS_FIELD = ":credentials"
"""The pseudo-field of the secondary key holding the credentials' hash (no header has a colon)."""


def _storage_default() -> Any:
    from ._cache_storage import MemoryCacheStorage

    return MemoryCacheStorage()


@dataclass(frozen=True, slots=True)
class Cache:
    """A private HTTP cache: RFC 9111 semantics, plus stale-if-error and stale-while-revalidate.

    Args:
        storage: where entries live (default: a fresh :class:`~resilience.MemoryCacheStorage`
            with 10,000 entries and 256 MiB at most). Every transport built from this policy
            shares it; ``replace()`` keeps it.
        methods: the methods whose responses are stored: ``GET`` and ``HEAD`` by default.
            Adding ``"POST"`` caches POST responses under a key that includes a hash of the
            body (only bodies already in memory; a streamed body is never cached).
        shared: apply the rules of a shared cache (``s-maxage``, ``private`` not stored,
            ``Authorization`` per RFC 9111 section 3.5). ``False``: a private cache, which is
            what a client is.
        stale_if_error: seconds of staleness the policy accepts when the origin fails (a 5xx,
            a connect error, a timeout, an open circuit), on top of what the response's own
            ``stale-if-error`` allows. ``0``: only the response or the request decide.
        stale_while_revalidate: act on ``stale-while-revalidate``: serve the stale copy at
            once and refresh it in the background, once per key. ``False``: revalidate first.
        heuristic_fraction: the share of the time since ``Last-Modified`` a response without
            explicit freshness stays fresh (RFC 9111 section 4.2.2 suggests 10%).
        heuristic_cap: the most seconds a heuristic can grant (one day by default; hishel and
            some browsers use a week, we prefer the more cautious bound).
        credential_headers: request headers hashed into the key, so users never share entries.
        refresh_workers: threads refreshing entries in the background for sync clients.
        clock: where the wall-clock time is read (tests use a fake one).

    Raises:
        ValueError, TypeError: a bad value, naming the field.
    """

    __repr__ = policy_repr

    storage: Any = field(default_factory=_storage_default)
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    shared: bool = False
    stale_if_error: float = 0.0
    stale_while_revalidate: bool = True
    heuristic_fraction: float = 0.1
    heuristic_cap: float = 86_400.0
    credential_headers: frozenset[str] = CREDENTIAL_HEADERS
    refresh_workers: int = 4
    clock: Clock = SYSTEM_CLOCK
    credential_bytes: frozenset[bytes] = field(init=False, repr=False, compare=False)
    """``credential_headers`` encoded, as the transport compares raw header names."""

    def __post_init__(self) -> None:
        from ._cache_storage import CacheStorage

        check_instance("Cache", "storage", self.storage, CacheStorage)
        upper = check_methods("Cache", "methods", self.methods)
        if not upper or not upper <= CACHEABLE_METHODS:
            raise ValueError(
                f"Cache.methods must be a non-empty subset of {sorted(CACHEABLE_METHODS)}, "
                f"got {self.methods!r}"
            )
        object.__setattr__(self, "methods", upper)
        check_instance("Cache", "shared", self.shared, bool)
        check_instance("Cache", "stale_while_revalidate", self.stale_while_revalidate, bool)
        check_number("Cache", "stale_if_error", self.stale_if_error, minimum=0.0)
        check_number("Cache", "heuristic_fraction", self.heuristic_fraction, minimum=0.0)
        if self.heuristic_fraction > 1:
            raise ValueError(
                f"Cache.heuristic_fraction must be between 0 and 1, got {self.heuristic_fraction!r}"
            )
        check_number("Cache", "heuristic_cap", self.heuristic_cap, minimum=0.0)
        headers: object = self.credential_headers
        if not isinstance(headers, (set, frozenset, list, tuple)) or not all(
            isinstance(h, str) for h in headers
        ):
            raise TypeError(
                f"Cache.credential_headers must be a set of header names, got {headers!r}"
            )
        lowered = frozenset(h.lower() for h in headers)
        object.__setattr__(self, "credential_headers", lowered)
        object.__setattr__(
            self, "credential_bytes", frozenset(h.encode("latin-1", "replace") for h in lowered)
        )
        check_number("Cache", "refresh_workers", self.refresh_workers, minimum=1, integer=True)
        check_instance("Cache", "clock", self.clock, Clock)

    def replace(self, **changes: Any) -> Cache:
        """A copy with ``changes`` applied (and validated); the storage is kept unless given."""
        return dataclasses.replace(self, **changes)

    def primary_key(self, method: str, url: str, body: bytes | None = None) -> str:
        """The storage key: a SHA-256 of the method, the URL and (for POST) the body."""
        digest = hashlib.sha256(b"resilience-cache-v1\0")
        digest.update(method.encode("ascii", "replace"))
        digest.update(b"\0")
        digest.update(url.encode("utf-8", "surrogateescape"))
        if body is not None:
            digest.update(b"\0")
            digest.update(hashlib.sha256(body).digest())
        return digest.hexdigest()

    def credentials(self, headers: list[tuple[str, str]]) -> str:
        """A SHA-256 of the credentials among ``headers`` (``""`` when there are none).

        ``headers``: names in lower case, as ``httpx.Headers.multi_items()`` gives them.
        """
        secret = self.credential_headers
        found = [(name, value) for name, value in headers if name in secret]
        if not found:
            return ""
        found.sort()
        digest = hashlib.sha256(b"resilience-credentials-v1")
        for name, value in found:
            digest.update(b"\0" + name.encode("latin-1", "replace") + b"\0")
            digest.update(value.encode("latin-1", "replace"))
        return digest.hexdigest()
