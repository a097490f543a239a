"""``CacheTransport``: a private RFC 9111 cache in front of any sync or async httpx transport.

The rules are the pure functions of ``_cache_rules``; the entries live in the policy's
:class:`~resilience.CacheStorage`. This module does the I/O: look an entry up, decide, send a
conditional request when needed, stream a new response into the storage while the caller reads
it, and serve stale copies when the origin fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from operator import itemgetter
from typing import Any

import httpx
import sniffio

from .._cache import CREDENTIALS_FIELD, Cache
from .._cache_rules import (
    CacheControl,
    Headers,
    StoredFacts,
    Use,
    Verdict,
    age_header,
    conditional_headers,
    freshen,
    freshness_lifetime,
    header,
    invalidates,
    invalidation_targets,
    judge,
    parse_cache_control,
    stale_on_error,
    stale_while_revalidate,
    storable,
    storable_headers,
    stored_facts,
    validators_match,
    vary_key,
    vary_matches,
)
from .._cache_storage import CachedResponse, CacheStorage
from .._forksafe import after_fork_in_child
from .._log import EventLogger, redact_url
from ._httpx import OPTIONS, aclose_quietly, close_quietly, header_names, options

__all__ = ["CACHE_STATUS", "CacheTransport"]

CACHE_STATUS = "resilience.cache"
"""``response.extensions[CACHE_STATUS]``: how the response was served: ``"hit"`` (fresh from
the cache), ``"miss"`` (from the origin), ``"revalidated"`` (from the cache after a 304) or
``"stale"`` (from the cache, stale: allowed by ``max-stale``, ``stale-while-revalidate`` or
because the origin failed)."""

_events = EventLogger("resilience.cache")

# A request carrying its own validators or a range is the caller's business: it bypasses the
# cache (we would otherwise have to merge validators and serve partial content).
_CALLER_CONDITIONAL = ("if-none-match", "if-modified-since", "if-match", "if-unmodified-since")
_BYPASS_HEADERS = frozenset({*_CALLER_CONDITIONAL, "range", "if-range"})
_BYPASS_BYTES = frozenset(name.encode() for name in _BYPASS_HEADERS)

_NO_DIRECTIVES = CacheControl()

# Request headers that change what a lookup does (beyond the URL); the credential headers
# are the policy's own. A request with none of them, the common case, skips decoding its
# headers until a rule needs them.
_LOOKUP_HEADERS = frozenset(name.encode() for name in (*_BYPASS_HEADERS, "cache-control", "pragma"))
# Response headers without which a response is never worth storing (see _worth_storing).
_WORTH_STORING_HEADERS = frozenset({b"cache-control", b"expires", b"etag", b"last-modified"})
# An item of httpx 0.28's ``Headers._list`` -> its name in lower case, as bytes (no decoding).
_LOWERED = itemgetter(1)

# RFC 5861 section 4: the statuses that count as an error for stale-if-error.
_ERROR_STATUSES = frozenset({500, 502, 503, 504})


class _Key:
    """What a lookup needs of a request: its keys, and its headers decoded on first use."""

    __slots__ = ("_headers", "_raw", "credentials", "directives", "method", "primary")

    def __init__(
        self,
        method: str,
        primary: str,
        credentials: str,
        headers: list[tuple[str, str]] | None,
        directives: CacheControl,
        raw: httpx.Headers | None = None,
    ) -> None:
        self.method = method
        self.primary = primary
        self.credentials = credentials
        self.directives = directives  # the request's Cache-Control
        self._headers = headers
        self._raw = raw

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The request's headers, names in lower case (decoded once, when a rule needs them)."""
        headers = self._headers
        if headers is None:
            assert self._raw is not None
            headers = self._headers = self._raw.multi_items()
        return headers


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to do with a lookup's result."""

    use: str  # "serve", "stale", "swr", "revalidate", "miss", "gateway_timeout"
    entry: CachedResponse | None = None
    verdict: Verdict | None = None


def _secondary(entry_vary: tuple[tuple[str, str], ...] | None) -> tuple[str, Any]:
    """Split a stored secondary key into (credentials hash, the Vary part)."""
    if entry_vary and entry_vary[0][0] == CREDENTIALS_FIELD:
        return entry_vary[0][1], entry_vary[1:]
    return "", entry_vary


def _select(entries: list[CachedResponse], key: _Key) -> CachedResponse | None:
    """The newest stored variant that matches the request's credentials and Vary fields."""
    for entry in entries:
        credentials, vary = _secondary(entry.vary)
        if credentials == key.credentials and vary_matches(vary, key.headers):
            return entry
    return None


_MISS = _Plan("miss")
_GATEWAY_TIMEOUT = _Plan("gateway_timeout")


def _plan(policy: Cache, key: _Key, entry: CachedResponse | None, now: float) -> _Plan:
    """Decide from the request's directives and the stored entry's age (RFC 9111 section 4)."""
    request_cc = key.directives
    if entry is None:
        return _GATEWAY_TIMEOUT if request_cc.only_if_cached else _MISS
    verdict = _verdict(policy, key, entry, now)
    if verdict.use is Use.FRESH:
        return _Plan("serve", entry, verdict)
    if verdict.use is Use.STALE_OK:
        return _Plan("stale", entry, verdict)
    if request_cc.only_if_cached:
        return _Plan("gateway_timeout", entry, verdict)
    if (
        policy.stale_while_revalidate
        and not request_cc.no_cache
        and stale_while_revalidate(entry.headers, verdict.staleness, shared=policy.shared)
    ):
        return _Plan("swr", entry, verdict)
    return _Plan("revalidate", entry, verdict)


_FACTS: OrderedDict[tuple[str, float, int], StoredFacts] = OrderedDict()
_FACTS_MAX = 4096
_facts_lock = threading.Lock()


def _facts(policy: Cache, entry: CachedResponse) -> StoredFacts:
    """The stored entry's request-independent facts, parsed once per entry version."""
    memo = (entry.id, entry.response_time, id(policy))
    found = _FACTS.get(memo)
    if found is None:
        found = stored_facts(
            entry.status,
            entry.headers,
            request_time=entry.request_time,
            response_time=entry.response_time,
            shared=policy.shared,
            heuristic_fraction=policy.heuristic_fraction,
            heuristic_cap=policy.heuristic_cap,
        )
        with _facts_lock:
            _FACTS[memo] = found
            if len(_FACTS) > _FACTS_MAX:
                _FACTS.popitem(last=False)
    return found


_WIRE: OrderedDict[tuple[str, float], list[tuple[bytes, bytes]]] = OrderedDict()


_PRIMARY: dict[tuple[str, object], str] = {}


def _primary_key(policy: Cache, method: str, url: httpx.URL) -> str:
    """:meth:`Cache.primary_key` of a bodiless request, remembered for a few thousand URLs.

    Remembered by the URL's parsed parts (httpx 0.28's ``_uri_reference``, a named tuple that
    determines ``str(url)``), so a URL seen before is not even turned into a string.
    """
    memo = (method, url._uri_reference)
    found = _PRIMARY.get(memo)
    if found is None:
        found = policy.primary_key(method, str(url))
        if len(_PRIMARY) >= _FACTS_MAX:
            _PRIMARY.clear()  # cheap and bounded; the hashes are recomputed on demand
        _PRIMARY[memo] = found
    return found


def _wire_headers(entry: CachedResponse) -> list[tuple[bytes, bytes]]:
    """The entry's headers but ``Age``, encoded once per entry version (hits reuse them)."""
    memo = (entry.id, entry.response_time)
    found = _WIRE.get(memo)
    if found is None:
        found = [
            (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
            for name, value in entry.headers
            if name.lower() != "age"
        ]
        with _facts_lock:
            _WIRE[memo] = found
            if len(_WIRE) > _FACTS_MAX:
                _WIRE.popitem(last=False)
    return found


def _verdict(policy: Cache, key: _Key, entry: CachedResponse, now: float) -> Verdict:
    return judge(
        _facts(policy, entry),
        key.headers,
        response_time=entry.response_time,
        now=now,
        shared=policy.shared,
        request_cc=key.directives,
    )


def _gateway_timeout(request: httpx.Request) -> httpx.Response:
    """RFC 9111 section 5.2.1.7: ``only-if-cached`` and nothing usable is stored."""
    return httpx.Response(
        504,
        headers={"content-type": "text/plain"},
        content=b"only-if-cached: no stored response",
        request=request,
        extensions={CACHE_STATUS: "miss"},
    )


def _may_serve_stale_on(policy: Cache, key: _Key, entry: CachedResponse, now: float) -> bool:
    staleness = _verdict(policy, key, entry, now).staleness
    return stale_on_error(
        entry.headers,
        key.headers,
        staleness,
        allowance=policy.stale_if_error,
        shared=policy.shared,
    )


def _stale_worthy(exc: BaseException) -> bool:
    """Errors that say the origin is unreachable or failing (not our own bugs, not cancellation)."""
    return isinstance(exc, httpx.TransportError)


def _worth_storing(policy: Cache, status: int, headers: Headers, now: float) -> bool:
    """Whether a storable response could ever be used again.

    A response with no freshness, no validator (so no revalidation can ever answer 304) and no
    permission to be served stale would only be looked up, judged stale and replaced: not
    storing it keeps the common case, an API response without caching headers, cheap.
    """
    cc = parse_cache_control(headers)
    if cc.stale_if_error or cc.stale_while_revalidate or policy.stale_if_error:
        return True
    if header(headers, "etag") is not None or header(headers, "last-modified") is not None:
        return True
    lifetime, _ = freshness_lifetime(
        status,
        headers,
        cc,
        shared=policy.shared,
        heuristic_fraction=policy.heuristic_fraction,
        heuristic_cap=policy.heuristic_cap,
        received=now,
    )
    return lifetime > 0


def _freshened_meta(
    entry: CachedResponse, response: httpx.Response, request_time: float, now: float
) -> CachedResponse | None:
    """``entry`` updated from a 304 (RFC 9111 section 4.3.4), or None when it does not apply."""
    new_headers = _dated(response.headers.multi_items(), now)
    if not validators_match(entry.headers, new_headers):
        return None
    return dataclasses.replace(
        entry,
        headers=tuple(freshen(entry.headers, new_headers)),
        request_time=request_time,
        response_time=now,
    )


def _dated(headers: list[tuple[str, str]], now: float) -> list[tuple[str, str]]:
    """``headers`` with a ``Date`` added when the origin sent none (RFC 9110 section 6.6.1)."""
    if not any(name.lower() == "date" for name, _ in headers):
        headers.append(("date", formatdate(now, usegmt=True)))
    return headers


def _already_read(response: httpx.Response) -> bool:
    """True when the body is in memory already (httpx reads bodies given as bytes at once)."""
    try:
        response.content  # noqa: B018
    except httpx.ResponseNotRead:
        return False
    return True


def _conditional(request: httpx.Request, entry: CachedResponse) -> httpx.Request:
    headers = [(n, v) for n, v in request.headers.multi_items() if n not in _CALLER_CONDITIONAL]
    headers.extend(conditional_headers(entry.headers))
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        stream=request.stream,
        extensions=request.extensions,
    )


def _detached(request: httpx.Request) -> httpx.Request:
    """A copy of ``request`` for a background refresh (its own extensions: no shared deadline)."""
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers.multi_items(),
        stream=request.stream,
        extensions=dict(request.extensions),
    )


class _StoredStream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class _AsyncStoredStream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _TeeStream(httpx.SyncByteStream):
    """The origin's body, written into the storage while the caller reads it.

    The entry is committed only when the body was read to its end; a read that stops early or
    fails stores nothing.
    """

    def __init__(self, stream: httpx.SyncByteStream, writer: Any) -> None:
        self._stream = stream
        self._writer = writer
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        complete = False
        try:
            for chunk in self._stream:
                self._writer.write(chunk)
                yield chunk
            complete = True
        finally:
            if not self._done:
                self._done = True
                try:
                    self._writer.commit() if complete else self._writer.abort()
                except Exception as exc:  # a storage failure never fails the caller's read
                    _events.warning("cache.storage_error", operation="commit", error=repr(exc))

    def close(self) -> None:
        try:
            if not self._done:
                self._done = True
                self._writer.abort()
        finally:
            self._stream.close()


class _AsyncTeeStream(httpx.AsyncByteStream):
    """:class:`_TeeStream` for async responses."""

    def __init__(self, stream: httpx.AsyncByteStream, writer: Any) -> None:
        self._stream = stream
        self._writer = writer
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        complete = False
        try:
            async for chunk in self._stream:
                await self._writer.write(chunk)
                yield chunk
            complete = True
        finally:
            if not self._done:
                self._done = True
                try:
                    await (self._writer.commit() if complete else self._writer.abort())
                except Exception as exc:
                    _events.warning("cache.storage_error", operation="commit", error=repr(exc))

    async def aclose(self) -> None:
        try:
            if not self._done:
                self._done = True
                await self._writer.abort()
        finally:
            await self._stream.aclose()


class CacheTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A private HTTP cache (RFC 9111) that also serves stale copies when the origin fails.

    - Fresh entries are served without touching the inner transport; every response served
      from the cache carries an ``Age`` header and ``extensions["resilience.cache"]``
      (``"hit"``, ``"revalidated"``, ``"stale"``; ``"miss"`` for a response from the origin).
    - Stale entries are revalidated with ``If-None-Match`` / ``If-Modified-Since``; a 304
      freshens the stored headers and serves the stored body.
    - When revalidation fails (a 500, 502, 503 or 504, a transport error such as a connect
      error, a timeout or :class:`~resilience.CircuitOpenError`) and ``stale-if-error`` (the
      response's, the request's or the policy's) allows it, the stale copy is served.
    - ``stale-while-revalidate`` serves the stale copy at once and refreshes it in the
      background, once per entry (a worker thread for sync clients, a task under asyncio; under
      other event loops the refresh happens before the response, as a plain revalidation).
    - New responses are stored while the caller reads them (never buffered whole first); a read
      that stops early or fails stores nothing; bodies larger than the storage's
      ``max_body_bytes`` are passed through and not stored.
    - A successful unsafe request (POST, PUT, PATCH, DELETE...) invalidates the stored GET and
      HEAD responses of its URL and of same-origin ``Location`` / ``Content-Location``.
    - Requests carrying their own validators (``If-None-Match``...) or a ``Range`` bypass the
      cache. ``extensions={"resilience": {"cache": False}}`` bypasses it for one request; a
      :class:`~resilience.Cache` there replaces the policy.
    - Storage failures never fail a request: they are logged (``cache.storage_error``) and the
      request goes to the origin.

    Args:
        transport: the transport that sends the requests (closed when this one is closed).
        cache: the policy.
    """

    def __init__(
        self, transport: httpx.BaseTransport | httpx.AsyncBaseTransport, cache: Cache
    ) -> None:
        if not isinstance(transport, (httpx.BaseTransport, httpx.AsyncBaseTransport)):
            raise TypeError(f"CacheTransport needs an httpx transport to wrap, got {transport!r}")
        if not isinstance(cache, Cache):
            raise TypeError(f"CacheTransport.cache must be a Cache, got {cache!r}")
        self.transport = transport
        self.cache = cache
        # the request headers that take a lookup off the common path, for the policy given here
        self._off_path = (cache, _LOOKUP_HEADERS | cache.credential_bytes)
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        after_fork_in_child(self, CacheTransport._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._refreshing = set()
        self._executor = None
        self._tasks = set()

    def __repr__(self) -> str:
        return f"CacheTransport({self.transport!r}, {self.cache!r})"

    # -- shared decisions -------------------------------------------------------------------------

    def _policy(self, request: httpx.Request) -> Cache | None:
        if OPTIONS not in request.extensions:
            return self.cache
        overrides = options(request)
        if "cache" not in overrides:
            return self.cache
        policy = overrides["cache"]
        if policy is True:
            return self.cache
        if policy is None or policy is False:
            return None
        if isinstance(policy, Cache):
            return policy
        raise TypeError(
            'extensions["resilience"]["cache"] must be a Cache, True, False or None, '
            f"got {policy!r}"
        )

    def _key(self, request: httpx.Request, policy: Cache) -> _Key | None:
        """The lookup key, or None when this request is not served from the cache."""
        method = request.method
        if method not in policy.methods:
            return None
        raw = request.headers
        known, off_path = self._off_path
        if policy is not known:  # a per-request policy (or self.cache was replaced)
            off_path = _LOOKUP_HEADERS | policy.credential_bytes
        if method != "POST" and off_path.isdisjoint(map(_LOWERED, raw._list)):
            # the common case: nothing but the URL decides; headers decoded only if needed
            url = request.url
            primary = _PRIMARY.get((method, url._uri_reference))  # _primary_key's memo, inline
            if primary is None:
                primary = _primary_key(policy, method, url)
            return _Key(method, primary, "", None, _NO_DIRECTIVES, raw)
        names = header_names(raw)
        special = not _LOOKUP_HEADERS.isdisjoint(names)
        if special and not _BYPASS_BYTES.isdisjoint(names):
            return None
        if method == "POST":
            try:
                body = request.content
            except httpx.RequestNotRead:
                return None  # a streamed body: never cached
            primary = policy.primary_key(method, str(request.url), body)
        else:
            primary = _primary_key(policy, method, request.url)
        if not special and policy.credential_bytes.isdisjoint(names):
            return _Key(method, primary, "", None, _NO_DIRECTIVES, raw)  # a plain POST
        headers = raw.multi_items()
        directives = parse_cache_control(headers) if b"cache-control" in names else _NO_DIRECTIVES
        return _Key(method, primary, policy.credentials(headers), headers, directives)

    @staticmethod
    def _meta(
        policy: Cache,
        key: _Key,
        response: httpx.Response,
        request_time: float,
        now: float | None = None,
    ) -> CachedResponse | None:
        """The entry to store for ``response``, or None when RFC 9111 forbids storing it."""
        if now is None:
            now = policy.clock.time()
        response_headers = response.headers.multi_items()
        reason = storable(
            key.method,
            response.status_code,
            key.headers,
            response_headers,
            methods=policy.methods,
            shared=policy.shared,
        )
        if reason is not None or not _worth_storing(
            policy, response.status_code, response_headers, now
        ):
            return None
        vary = vary_key(response_headers, key.headers)
        if vary is None:
            return None  # Vary: * never matches: storing it would only waste space
        if key.credentials:
            vary = ((CREDENTIALS_FIELD, key.credentials), *vary)
        headers = _dated(storable_headers(response_headers), now)
        return CachedResponse(
            status=response.status_code,
            headers=tuple(headers),
            vary=vary,
            request_time=request_time,
            response_time=now,
            method=key.method,
        )

    def _miss(
        self, response: httpx.Response, policy: Cache, key: _Key, request_time: float
    ) -> CachedResponse | None:
        """Mark ``response`` as from the origin; the entry to store for it, if any."""
        response.extensions = {**response.extensions, CACHE_STATUS: "miss"}
        if not policy.stale_if_error and _WORTH_STORING_HEADERS.isdisjoint(
            map(_LOWERED, response.headers._list)
        ):
            return None  # what _worth_storing would say, without decoding a header
        return self._meta(policy, key, response, request_time)

    @staticmethod
    def _served(
        request: httpx.Request,
        entry: CachedResponse,
        stream: httpx.SyncByteStream | httpx.AsyncByteStream,
        now: float,
        plan: _Plan | None,
        status: str | None,
    ) -> httpx.Response:
        """The stored response; ``status`` defaults to what ``plan`` decided (hit or stale)."""
        if status is None:
            status = "hit" if plan is not None and plan.use == "serve" else "stale"
        if plan is not None and plan.verdict is not None:
            age = plan.verdict.age
        else:
            age = max(0.0, now - entry.response_time)
        headers = [*_wire_headers(entry), (b"age", age_header(age).encode())]
        return httpx.Response(
            entry.status,
            headers=headers,
            stream=stream,
            request=request,
            extensions={CACHE_STATUS: status},
        )

    def _refresh_key(self, key: _Key) -> str:
        return f"{key.primary}:{key.credentials}"

    def _claim_refresh(self, key: _Key) -> bool:
        """True for the first caller asking to refresh ``key`` while none is running."""
        name = self._refresh_key(key)
        with self._lock:
            if name in self._refreshing:
                return False
            self._refreshing.add(name)
            return True

    def _release_refresh(self, key: _Key) -> None:
        with self._lock:
            self._refreshing.discard(self._refresh_key(key))

    @staticmethod
    def _storage_error(operation: str, exc: Exception) -> None:
        _events.warning("cache.storage_error", operation=operation, error=repr(exc))

    @staticmethod
    def _stale_served(request: httpx.Request, reason: str) -> None:
        _events.info(
            "cache.stale_served",
            method=request.method,
            url=redact_url(str(request.url)),
            reason=reason,
        )

    # -- sync -----------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"CacheTransport wraps an async transport ({transport!r}): use it with "
                "httpx.AsyncClient"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.cache if OPTIONS not in request.extensions else self._policy(request)
        key = None if policy is None else self._key(request, policy)
        if policy is None or key is None:
            response = transport.handle_request(request)
            if policy is not None:
                self._invalidate(policy, request, response)
            return response
        storage: CacheStorage = policy.storage
        now = policy.clock.time()
        try:
            entries = storage.lookup(key.primary)
        except Exception as exc:
            self._storage_error("lookup", exc)
            entries = []
        if not entries and not key.directives.only_if_cached:
            # the common miss, without planning: the lookup's time stands for the request time
            response = transport.handle_request(request)
            meta = self._miss(response, policy, key, now)
            return response if meta is None else self._store_meta(response, policy, key, meta)
        entry = _select(entries, key)
        plan = _plan(policy, key, entry, now)
        if plan.use == "gateway_timeout":
            return _gateway_timeout(request)
        if plan.entry is not None and plan.use in ("serve", "stale", "swr"):
            served = self._serve(request, policy, key, plan.entry, now, plan)
            if served is not None:
                if plan.use == "swr":
                    self._refresh_in_background(request, policy, key, plan.entry)
                return served
            entry = None  # the body vanished: fetch
        if entry is not None:
            return self._revalidate(transport, request, policy, key, entry)
        # a miss: the lookup's time stands for the request time (it was microseconds ago)
        return self._store(transport.handle_request(request), policy, key, now)

    def _serve(
        self,
        request: httpx.Request,
        policy: Cache,
        key: _Key,
        entry: CachedResponse,
        now: float,
        plan: _Plan | None = None,
        status: str | None = None,
    ) -> httpx.Response | None:
        try:
            chunks = policy.storage.open_body(key.primary, entry.id)
        except Exception as exc:
            self._storage_error("open_body", exc)
            return None
        if chunks is None:
            return None
        return self._served(request, entry, _StoredStream(chunks), now, plan, status)

    def _fetch(
        self, transport: httpx.BaseTransport, request: httpx.Request, policy: Cache, key: _Key
    ) -> httpx.Response:
        request_time = policy.clock.time()
        response = transport.handle_request(request)
        return self._store(response, policy, key, request_time)

    def _store(
        self, response: httpx.Response, policy: Cache, key: _Key, request_time: float
    ) -> httpx.Response:
        meta = self._miss(response, policy, key, request_time)
        if meta is None:
            return response
        return self._store_meta(response, policy, key, meta)

    def _store_meta(
        self, response: httpx.Response, policy: Cache, key: _Key, meta: CachedResponse
    ) -> httpx.Response:
        try:
            writer = policy.storage.begin(key.primary, meta)
            if _already_read(response):  # e.g. from httpx.MockTransport: store it whole now
                writer.write(response.content)
                writer.commit()
                return response
        except Exception as exc:
            self._storage_error("store", exc)
            return response
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        response.stream = _TeeStream(stream, writer)
        return response

    def _revalidate(
        self,
        transport: httpx.BaseTransport,
        request: httpx.Request,
        policy: Cache,
        key: _Key,
        entry: CachedResponse,
    ) -> httpx.Response:
        request_time = policy.clock.time()
        try:
            response = transport.handle_request(_conditional(request, entry))
        except Exception as exc:
            if _stale_worthy(exc) and _may_serve_stale_on(policy, key, entry, request_time):
                served = self._serve(request, policy, key, entry, request_time, status="stale")
                if served is not None:
                    self._stale_served(request, type(exc).__name__)
                    return served
            raise
        now = policy.clock.time()
        if response.status_code == 304:
            close_quietly(response)
            refreshed = self._freshened(policy, key, entry, response, request_time, now)
            if refreshed is not None:
                served = self._serve(request, policy, key, refreshed, now, status="revalidated")
                if served is not None:
                    return served
            return self._fetch(transport, request, policy, key)
        if response.status_code in _ERROR_STATUSES and _may_serve_stale_on(policy, key, entry, now):
            served = self._serve(request, policy, key, entry, now, status="stale")
            if served is not None:
                close_quietly(response)
                self._stale_served(request, f"status {response.status_code}")
                return served
        return self._store(response, policy, key, request_time)

    def _freshened(
        self,
        policy: Cache,
        key: _Key,
        entry: CachedResponse,
        response: httpx.Response,
        request_time: float,
        now: float,
    ) -> CachedResponse | None:
        """The entry updated from a 304 (RFC 9111 section 4.3.4), or None to fetch anew."""
        meta = _freshened_meta(entry, response, request_time, now)
        if meta is None:
            return None
        try:
            if not policy.storage.update(key.primary, entry.id, meta):
                return None
        except Exception as exc:
            self._storage_error("update", exc)
            return None
        return meta

    def _invalidate(self, policy: Cache, request: httpx.Request, response: httpx.Response) -> None:
        for primary in self._invalidated(policy, request, response):
            try:
                policy.storage.remove(primary)
            except Exception as exc:
                self._storage_error("remove", exc)

    @staticmethod
    def _invalidated(policy: Cache, request: httpx.Request, response: httpx.Response) -> list[str]:
        """RFC 9111 section 4.4: the keys a successful unsafe request makes stale."""
        if not invalidates(request.method, response.status_code):
            return []
        targets = invalidation_targets(str(request.url), response.headers.multi_items())
        return [
            policy.primary_key(method, url)
            for url in targets
            for method in ("GET", "HEAD")
            if method in policy.methods
        ]

    def _refresh_in_background(
        self, request: httpx.Request, policy: Cache, key: _Key, entry: CachedResponse
    ) -> None:
        if not self._claim_refresh(key):
            return
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=policy.refresh_workers, thread_name_prefix="resilience-cache"
                )
            executor = self._executor
        detached = _detached(request)
        try:
            executor.submit(self._refresh_sync, detached, policy, key, entry)
        except RuntimeError:  # shut down meanwhile
            self._release_refresh(key)

    def _refresh_sync(
        self, request: httpx.Request, policy: Cache, key: _Key, entry: CachedResponse
    ) -> None:
        transport = self.transport
        assert isinstance(transport, httpx.BaseTransport)
        try:
            response = self._revalidate(transport, request, policy, key, entry)
            try:
                for _ in response.iter_raw():
                    pass  # the tee stores the body as it is read
            finally:
                response.close()
        except Exception as exc:
            _events.warning(
                "cache.refresh_failed", url=redact_url(str(request.url)), error=repr(exc)
            )
        finally:
            self._release_refresh(key)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        transport = self.transport
        if isinstance(transport, httpx.BaseTransport):
            transport.close()

    # -- async ------------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"CacheTransport wraps a sync transport ({transport!r}): use it with httpx.Client"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        policy = self.cache if OPTIONS not in request.extensions else self._policy(request)
        key = None if policy is None else self._key(request, policy)
        if policy is None or key is None:
            response = await transport.handle_async_request(request)
            if policy is not None:
                await self._ainvalidate(policy, request, response)
            return response
        storage: CacheStorage = policy.storage
        now = policy.clock.time()
        try:
            entries = await storage.alookup(key.primary)
        except Exception as exc:
            self._storage_error("lookup", exc)
            entries = []
        if entries or key.directives.only_if_cached:
            entry = _select(entries, key)
            plan = _plan(policy, key, entry, now)
        else:
            entry, plan = None, _MISS  # the common miss, without planning
        if plan.use == "gateway_timeout":
            return _gateway_timeout(request)
        if plan.entry is not None and plan.use in ("serve", "stale", "swr"):
            if plan.use == "swr" and not self._can_spawn():
                return await self._arevalidate(transport, request, policy, key, plan.entry)
            served = await self._aserve(request, policy, key, plan.entry, now, plan)
            if served is not None:
                if plan.use == "swr":
                    self._spawn_refresh(request, policy, key, plan.entry)
                return served
            entry = None
        if entry is not None:
            return await self._arevalidate(transport, request, policy, key, entry)
        # a miss: as in handle_request, without a coroutine when there is nothing to store
        response = await transport.handle_async_request(request)
        meta = self._miss(response, policy, key, now)
        if meta is None:
            return response
        return await self._astore_meta(response, policy, key, meta)

    async def _aserve(
        self,
        request: httpx.Request,
        policy: Cache,
        key: _Key,
        entry: CachedResponse,
        now: float,
        plan: _Plan | None = None,
        status: str | None = None,
    ) -> httpx.Response | None:
        try:
            chunks = await policy.storage.aopen_body(key.primary, entry.id)
        except Exception as exc:
            self._storage_error("open_body", exc)
            return None
        if chunks is None:
            return None
        return self._served(request, entry, _AsyncStoredStream(chunks), now, plan, status)

    async def _afetch(
        self,
        transport: httpx.AsyncBaseTransport,
        request: httpx.Request,
        policy: Cache,
        key: _Key,
    ) -> httpx.Response:
        request_time = policy.clock.time()
        response = await transport.handle_async_request(request)
        return await self._astore(response, policy, key, request_time)

    async def _astore(
        self, response: httpx.Response, policy: Cache, key: _Key, request_time: float
    ) -> httpx.Response:
        meta = self._miss(response, policy, key, request_time)
        if meta is None:
            return response
        return await self._astore_meta(response, policy, key, meta)

    async def _astore_meta(
        self, response: httpx.Response, policy: Cache, key: _Key, meta: CachedResponse
    ) -> httpx.Response:
        try:
            writer = await policy.storage.abegin(key.primary, meta)
            if _already_read(response):
                await writer.write(response.content)
                await writer.commit()
                return response
        except Exception as exc:
            self._storage_error("store", exc)
            return response
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _AsyncTeeStream(stream, writer)
        return response

    async def _arevalidate(
        self,
        transport: httpx.AsyncBaseTransport,
        request: httpx.Request,
        policy: Cache,
        key: _Key,
        entry: CachedResponse,
    ) -> httpx.Response:
        request_time = policy.clock.time()
        try:
            response = await transport.handle_async_request(_conditional(request, entry))
        except Exception as exc:
            if _stale_worthy(exc) and _may_serve_stale_on(policy, key, entry, request_time):
                served = await self._aserve(
                    request, policy, key, entry, request_time, status="stale"
                )
                if served is not None:
                    self._stale_served(request, type(exc).__name__)
                    return served
            raise
        now = policy.clock.time()
        if response.status_code == 304:
            await aclose_quietly(response)
            refreshed = await self._afreshened(policy, key, entry, response, request_time, now)
            if refreshed is not None:
                served = await self._aserve(
                    request, policy, key, refreshed, now, status="revalidated"
                )
                if served is not None:
                    return served
            return await self._afetch(transport, request, policy, key)
        if response.status_code in _ERROR_STATUSES and _may_serve_stale_on(policy, key, entry, now):
            served = await self._aserve(request, policy, key, entry, now, status="stale")
            if served is not None:
                await aclose_quietly(response)
                self._stale_served(request, f"status {response.status_code}")
                return served
        return await self._astore(response, policy, key, request_time)

    async def _afreshened(
        self,
        policy: Cache,
        key: _Key,
        entry: CachedResponse,
        response: httpx.Response,
        request_time: float,
        now: float,
    ) -> CachedResponse | None:
        meta = _freshened_meta(entry, response, request_time, now)
        if meta is None:
            return None
        try:
            if not await policy.storage.aupdate(key.primary, entry.id, meta):
                return None
        except Exception as exc:
            self._storage_error("update", exc)
            return None
        return meta

    async def _ainvalidate(
        self, policy: Cache, request: httpx.Request, response: httpx.Response
    ) -> None:
        for primary in self._invalidated(policy, request, response):
            try:
                await policy.storage.aremove(primary)
            except Exception as exc:
                self._storage_error("remove", exc)

    @staticmethod
    def _can_spawn() -> bool:
        """Background refreshes need asyncio (a task); elsewhere we revalidate in the foreground."""
        try:
            return sniffio.current_async_library() == "asyncio"
        except sniffio.AsyncLibraryNotFoundError:
            return False

    def _spawn_refresh(
        self, request: httpx.Request, policy: Cache, key: _Key, entry: CachedResponse
    ) -> None:
        if not self._claim_refresh(key):
            return
        task = asyncio.get_running_loop().create_task(
            self._arefresh(_detached(request), policy, key, entry)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _arefresh(
        self, request: httpx.Request, policy: Cache, key: _Key, entry: CachedResponse
    ) -> None:
        transport = self.transport
        assert isinstance(transport, httpx.AsyncBaseTransport)
        try:
            response = await self._arevalidate(transport, request, policy, key, entry)
            try:
                async for _ in response.aiter_raw():
                    pass
            finally:
                await response.aclose()
        except Exception as exc:
            _events.warning(
                "cache.refresh_failed", url=redact_url(str(request.url)), error=repr(exc)
            )
        finally:
            self._release_refresh(key)

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        transport = self.transport
        if isinstance(transport, httpx.AsyncBaseTransport):
            await transport.aclose()
