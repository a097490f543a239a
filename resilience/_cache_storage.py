"""Where the HTTP cache keeps its entries: in memory (LRU) or in files that outlive the process.

A storage knows nothing of HTTP or of URLs. The cache transport hands it a key (the SHA-256 hex
digest of what identifies a request) and a :class:`CachedResponse` (status, headers, the Vary
secondary key and the times needed to judge freshness); the storage keeps, under that key, up to
:data:`MAX_VARIANTS` variants, each a meta and a body, and gives each variant an id.

Guarantees shared by every storage:

- a body is streamed in through a writer (:meth:`CacheStorage.begin`) and becomes visible only
  when the writer commits, whole and at once; a body that grows past ``max_body_bytes`` is
  dropped as it is written (nothing is kept) and the commit stores nothing;
- a commit replaces the variant under the same key whose ``vary`` equals its own (a new 200
  replaces the stored one); variants with other ``vary`` values stay, up to
  :data:`MAX_VARIANTS` per key, the oldest dropped first;
- two writers racing for one key both succeed and the later commit wins; a reader never sees
  a partial body, nor a body that belongs to other headers; a reader iterating a body that a
  commit replaces keeps reading the old body to its end;
- :meth:`~CacheStorage.lookup` lists variants newest first (the most recently committed or
  updated first);
- the async methods (``alookup``, ``aopen_body``, ``abegin``...) never block the event loop:
  by default they run the sync ones in a worker thread; no lock is held across an await.

:class:`FileCacheStorage` layout, under its directory::

    <key[:2]>/<key>/<id>.body     the body, exactly as received
    <key[:2]>/<key>/<id>.meta     JSON: the CachedResponse, the key, the id, a commit stamp
    <key[:2]>/<key>/.<id>.*.tmp   a body or meta being written (renamed into place when done)

A body lands before its meta and is removed after it, so a crash never leaves a visible half
entry; a body without a meta is ignored, and deleted once it is a minute old.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeGuard

import anyio.to_thread

from ._forksafe import after_fork_in_child
from ._log import EventLogger
from ._validate import check_number

__all__ = [
    "CHUNK_SIZE",
    "MAX_VARIANTS",
    "AsyncCacheWriter",
    "CacheStorage",
    "CacheWriter",
    "CachedResponse",
    "FileCacheStorage",
    "MemoryCacheStorage",
]

CHUNK_SIZE = 64 * 1024
"""The largest chunk :meth:`CacheStorage.open_body` yields."""

MAX_VARIANTS = 8
"""At most this many variants (different ``vary`` values) are kept under one key."""

_MAX_SIZE = 2**62  # a bound for the size options, so huge numbers fail with a clear message
_MAX_META_BYTES = 1 << 20  # a bigger .meta file is garbage, not read
_ASYNC_FLUSH_BYTES = 256 * 1024  # async writers hand bodies to the worker thread in this size
_ASYNC_READ_CHUNKS = 4  # async readers fetch this many chunks per trip to the worker thread
_ORPHAN_GRACE = 60.0  # seconds before a body without meta is deleted
_TEMP_GRACE = 3600.0  # seconds without a write before a temp file is taken for abandoned
_RESCAN_INTERVAL = 300.0  # seconds between scans of the directory (other processes write too)
_LOW_WATER = 0.9  # file eviction frees down to this share of max_bytes

_KEY = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[0-9a-f]{16}")
_PREFIX = re.compile(r"[0-9a-f]{2}")
_META_NAME = re.compile(r"([0-9a-f]{16})\.meta")
_BODY_NAME = re.compile(r"([0-9a-f]{16})\.body")
_TEMP_NAME = re.compile(r"\.[0-9a-f]{16}\..*\.tmp")

_events = EventLogger("resilience.cache")


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """What is stored besides the body: enough to rebuild the response and judge freshness.

    Attributes:
        status: the response's status code.
        headers: the response headers, as stored.
        vary: the secondary key: the request's values of the fields the response varies on
            (``()`` when it has no ``Vary``, ``None`` for ``Vary: *``).
        request_time: epoch seconds when the request was sent.
        response_time: epoch seconds when the response headers were received.
        method: the request method.
        size: the body's length in bytes (set by the storage at commit).
        id: the storage's id of this variant (set by the storage at commit).
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    vary: tuple[tuple[str, str], ...] | None
    request_time: float
    response_time: float
    method: str = "GET"
    size: int = 0
    id: str = ""


class CacheWriter(Protocol):
    """Streams one body into a storage; nothing is visible until :meth:`commit`."""

    @property
    def discarded(self) -> bool:
        """True once the body passed the storage's limit: it will not be stored."""
        ...

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; a no-op once discarded, aborted or committed."""
        ...

    def commit(self) -> CachedResponse | None:
        """Store the entry atomically: its meta (with id and size), or None if not stored."""
        ...

    def abort(self) -> None:
        """Store nothing and free what was written; idempotent."""
        ...


class AsyncCacheWriter(Protocol):
    """:class:`CacheWriter` for async code."""

    @property
    def discarded(self) -> bool:
        """True once the body passed the storage's limit: it will not be stored."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; a no-op once discarded, aborted or committed."""
        ...

    async def commit(self) -> CachedResponse | None:
        """Store the entry atomically: its meta (with id and size), or None if not stored."""
        ...

    async def abort(self) -> None:
        """Store nothing and free what was written; idempotent."""
        ...


# -- validation -------------------------------------------------------------------------------


def _short(value: object) -> str:
    """``repr(value)``, cut short: hostile values must not make hostile messages."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# Keys checked lately: a lookup runs on every request, and a set lookup costs a tenth of the
# regular expression. Bounded: cleared when full, as keys are cheap to check again.
_CHECKED_KEYS: set[str] = set()
_CHECKED_MAX = 4096


def _check_key(key: object) -> None:
    if type(key) is str and key in _CHECKED_KEYS:
        return
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise ValueError(
            f"cache key must be a SHA-256 hex digest (64 lowercase hex digits), got {_short(key)}"
        )
    if type(key) is str:  # a subclass could hash or compare unlike the str it stands for
        if len(_CHECKED_KEYS) >= _CHECKED_MAX:
            _CHECKED_KEYS.clear()
        _CHECKED_KEYS.add(key)


def _check_id(entry_id: object) -> None:
    if not isinstance(entry_id, str) or _ID.fullmatch(entry_id) is None:
        raise ValueError(
            f"cache entry id must be 16 lowercase hex digits (as the storage gave it), "
            f"got {_short(entry_id)}"
        )


def _check_meta(meta: object) -> None:
    if not isinstance(meta, CachedResponse):
        raise TypeError(f"cache entry meta must be a CachedResponse, got {_short(meta)}")


def _check_size(owner: str, field: str, value: object) -> None:
    """A positive int option; huge ints are refused with a message, not an OverflowError."""
    if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_SIZE:
        raise ValueError(f"{owner}.{field} must be <= {_MAX_SIZE}, got {_short(value)}")
    check_number(owner, field, value, minimum=1, maximum=_MAX_SIZE, integer=True)


def _as_bytes(chunk: object) -> bytes:
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"a body chunk must be bytes, got {_short(chunk)}")


# -- writers ----------------------------------------------------------------------------------

_OPEN, _DISCARDED, _ABORTED, _FAILED, _COMMITTED = range(5)


class _Writer:
    """The state every writer shares: open, then discarded, aborted, failed or committed."""

    __slots__ = ("_id", "_key", "_meta", "_size", "_state", "limit")

    def __init__(self, key: str, meta: CachedResponse, limit: int) -> None:
        self.limit = limit
        self._key = key
        self._meta = meta
        self._id = secrets.token_hex(8)  # the variant's id, known before it is committed
        self._size = 0
        self._state = _OPEN

    @property
    def discarded(self) -> bool:
        """True once the body passed the storage's limit: it will not be stored."""
        return self._state == _DISCARDED

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; a no-op once discarded, aborted or committed.

        Never raises for the storage's own failures (a full disk): the entry is then simply
        not stored, so the response being read through the cache is not affected.
        """
        data = _as_bytes(chunk)
        if self._state != _OPEN or not data:
            return
        self._size += len(data)
        if self._size > self.limit:
            self._state = _DISCARDED
            self._release()
            return
        try:
            self._append(data)
        except OSError as exc:
            self._state = _FAILED
            self._release()
            _events.warning("cache.storage_error", operation="write", error=repr(exc))

    def commit(self) -> CachedResponse | None:
        """Store the entry atomically; its meta (with ``id`` and ``size``), or None if not stored.

        Raises:
            OSError: the storage failed (what was written is cleaned up first).
        """
        if self._state != _OPEN:
            return None
        self._state = _COMMITTED
        try:
            return self._store()
        except BaseException:
            self._release()
            raise

    def abort(self) -> None:
        """Store nothing and free what was written; idempotent."""
        if self._state == _OPEN:
            self._state = _ABORTED
            self._release()

    def _append(self, data: bytes) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _store(self) -> CachedResponse | None:
        raise NotImplementedError


class _AsyncWriter:
    """A :class:`CacheWriter` driven from async code, inline or through a worker thread.

    Through a thread, chunks are gathered up to 256 KiB before each trip, and ``limit`` is
    enforced here too, so a body that will be discarded is never buffered.
    """

    __slots__ = ("_buffer", "_buffered", "_discarded", "_done", "_limit", "_threaded", "_writer")

    def __init__(self, writer: CacheWriter, *, threaded: bool, limit: int) -> None:
        self._writer = writer
        self._threaded = threaded
        self._limit = limit
        self._buffer: list[bytes] = []
        self._buffered = 0  # bytes in the buffer
        self._discarded = False
        self._done = False  # committed, aborted or discarded: writes are no-ops

    @property
    def discarded(self) -> bool:
        """True once the body passed the storage's limit: it will not be stored."""
        return self._discarded or self._writer.discarded

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; a no-op once discarded, aborted or committed."""
        if not self._threaded:
            self._writer.write(chunk)
            return
        data = _as_bytes(chunk)
        if self._done or not data:
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= _ASYNC_FLUSH_BYTES or self._buffered > self._limit:
            await self._flush()
            if self._writer.discarded:
                self._discarded = self._done = True

    async def _flush(self) -> None:
        chunks, self._buffer, self._buffered = self._buffer, [], 0
        if chunks:
            await anyio.to_thread.run_sync(_write_all, self._writer, chunks)

    async def commit(self) -> CachedResponse | None:
        """Store the entry atomically: its meta (with id and size), or None if not stored."""
        if not self._threaded:
            return self._writer.commit()
        if self._done:
            return None
        self._done = True
        await self._flush()
        return await anyio.to_thread.run_sync(self._writer.commit)

    async def abort(self) -> None:
        """Store nothing and free what was written; idempotent."""
        self._buffer, self._buffered = [], 0
        if not self._threaded:
            self._writer.abort()
        elif not self._done:
            self._done = True
            await anyio.to_thread.run_sync(self._writer.abort)


def _write_all(writer: CacheWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)


# -- async readers ----------------------------------------------------------------------------


class _ThreadedChunks:
    """An async iterator over a sync body iterator whose reads run in a worker thread."""

    __slots__ = ("_chunks", "_ready")

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks: Iterator[bytes] | None = chunks
        self._ready: deque[bytes] = deque()

    def __aiter__(self) -> _ThreadedChunks:
        return self

    async def __anext__(self) -> bytes:
        if not self._ready:
            chunks = self._chunks
            if chunks is None:
                raise StopAsyncIteration
            batch = await anyio.to_thread.run_sync(_take, chunks)
            if not batch:
                self._close()
                raise StopAsyncIteration
            self._ready.extend(batch)
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Stop reading and release the body (a file descriptor, for files)."""
        self._close()

    def _close(self) -> None:
        chunks, self._chunks = self._chunks, None
        self._ready.clear()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _take(chunks: Iterator[bytes]) -> list[bytes]:
    return list(itertools.islice(chunks, _ASYNC_READ_CHUNKS))


class _InlineChunks:
    """An async iterator over chunks already in memory."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> _InlineChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop reading."""
        self._chunks = iter(())


# -- the interface ----------------------------------------------------------------------------


class CacheStorage(abc.ABC):
    """Where cache entries live: variants (a meta and a body) under hex keys.

    Subclasses implement the sync methods; the async ones run them in a worker thread unless
    overridden. Every method validates its key (a SHA-256 hex digest) and entry id.
    """

    max_body_bytes: int
    """Bodies longer than this are not stored."""

    @abc.abstractmethod
    def lookup(self, key: str) -> list[CachedResponse]:
        """Every variant stored under ``key``, newest first (marks them used)."""

    @abc.abstractmethod
    def open_body(self, key: str, entry_id: str) -> Iterator[bytes] | None:
        """The body of a variant in chunks of at most :data:`CHUNK_SIZE`; None if it is gone.

        The iterator has ``close()``; call it when stopping early.
        """

    @abc.abstractmethod
    def begin(self, key: str, meta: CachedResponse) -> CacheWriter:
        """A writer that stores a new variant under ``key`` when committed."""

    @abc.abstractmethod
    def update(self, key: str, entry_id: str, meta: CachedResponse) -> bool:
        """Replace a variant's meta, keeping its body (after a 304); False if it is gone.

        ``meta.id`` and ``meta.size`` are ignored: the variant keeps its own.
        """

    @abc.abstractmethod
    def remove(self, key: str) -> None:
        """Delete every variant under ``key``."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Delete every entry."""

    def close(self) -> None:  # noqa: B027 - a storage with nothing to release needs no override
        """Release what the storage holds open; the entries stay."""

    async def alookup(self, key: str) -> list[CachedResponse]:
        """:meth:`lookup` for async code."""
        return await anyio.to_thread.run_sync(self.lookup, key)

    async def aopen_body(self, key: str, entry_id: str) -> AsyncIterator[bytes] | None:
        """:meth:`open_body` for async code; the iterator has ``aclose()``."""
        chunks = await anyio.to_thread.run_sync(self.open_body, key, entry_id)
        return None if chunks is None else _ThreadedChunks(chunks)

    async def abegin(self, key: str, meta: CachedResponse) -> AsyncCacheWriter:
        """:meth:`begin` for async code: a writer with async ``write``/``commit``/``abort``."""
        writer = await anyio.to_thread.run_sync(self.begin, key, meta)
        return _AsyncWriter(writer, threaded=True, limit=self.max_body_bytes)

    async def aupdate(self, key: str, entry_id: str, meta: CachedResponse) -> bool:
        """:meth:`update` for async code."""
        return await anyio.to_thread.run_sync(self.update, key, entry_id, meta)

    async def aremove(self, key: str) -> None:
        """:meth:`remove` for async code."""
        await anyio.to_thread.run_sync(self.remove, key)

    async def aclear(self) -> None:
        """:meth:`clear` for async code."""
        await anyio.to_thread.run_sync(self.clear)

    async def aclose(self) -> None:
        """:meth:`close` for async code."""
        await anyio.to_thread.run_sync(self.close)


# -- memory -----------------------------------------------------------------------------------


class _MemoryEntry:
    __slots__ = ("chunks", "meta")

    def __init__(self, meta: CachedResponse, chunks: tuple[bytes, ...]) -> None:
        self.meta = meta
        self.chunks = chunks


def _memory_chunks(chunks: tuple[bytes, ...]) -> Iterator[bytes]:
    for chunk in chunks:
        if len(chunk) <= CHUNK_SIZE:
            yield chunk
        else:
            for start in range(0, len(chunk), CHUNK_SIZE):
                yield chunk[start : start + CHUNK_SIZE]


class _MemoryWriter(_Writer):
    """Gathers a body as a list of chunks (small writes coalesced up to 64 KiB)."""

    __slots__ = ("_chunks", "_pending", "_storage")

    def __init__(
        self, storage: MemoryCacheStorage, key: str, meta: CachedResponse, limit: int
    ) -> None:
        super().__init__(key, meta, limit)
        self._storage = storage
        self._chunks: list[bytes] = []
        self._pending = bytearray()

    def _append(self, data: bytes) -> None:
        pending = self._pending
        if not pending and len(data) >= CHUNK_SIZE:
            self._chunks.append(data)  # already bytes: kept without a copy
            return
        pending += data
        if len(pending) >= CHUNK_SIZE:
            self._chunks.append(bytes(pending))
            pending.clear()

    def _release(self) -> None:
        self._chunks = []
        self._pending = bytearray()

    def _store(self) -> CachedResponse | None:
        if self._pending:
            self._chunks.append(bytes(self._pending))
        chunks = tuple(self._chunks)
        self._release()
        meta = dataclasses.replace(self._meta, id=self._id, size=self._size)
        self._storage._install(self._key, _MemoryEntry(meta, chunks))
        return meta


class MemoryCacheStorage(CacheStorage):
    """Entries in this process's memory, shared by every thread and task; least recently used
    variants are evicted first.

    Args:
        max_entries: the most variants kept.
        max_bytes: the most body bytes kept, all variants together; a single body larger than
            this is never stored.
        max_body_bytes: bodies longer than this are not stored.

    Raises:
        TypeError: an option is not an int.
        ValueError: an option is not positive.

    >>> storage = MemoryCacheStorage(max_entries=100)
    >>> len(storage), storage.total_bytes
    (0, 0)
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 2**20,
        max_body_bytes: int = 16 * 2**20,
    ) -> None:
        _check_size("MemoryCacheStorage", "max_entries", max_entries)
        _check_size("MemoryCacheStorage", "max_bytes", max_bytes)
        _check_size("MemoryCacheStorage", "max_body_bytes", max_body_bytes)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_body_bytes = max_body_bytes
        # every variant, least recently used first
        self._lru: OrderedDict[tuple[str, str], _MemoryEntry] = OrderedDict()
        # key -> its variants' ids, newest first
        self._keys: dict[str, list[str]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        after_fork_in_child(self, MemoryCacheStorage._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def total_bytes(self) -> int:
        """Body bytes held, all variants together."""
        return self._bytes

    def __repr__(self) -> str:
        return (
            f"MemoryCacheStorage(max_entries={self.max_entries}, max_bytes={self.max_bytes}, "
            f"max_body_bytes={self.max_body_bytes})"
        )

    def lookup(self, key: str) -> list[CachedResponse]:
        """Every variant stored under ``key``, newest first (marks them used)."""
        # A miss, the common case, needs no lock: one dict read is atomic, and an entry stored
        # by another thread meanwhile is as missed as one stored a moment later.
        if self._keys.get(key):
            with self._lock:
                ids = self._keys.get(key)
                if ids:  # stored keys were checked when stored
                    lru = self._lru
                    found = []
                    for entry_id in ids:
                        lru.move_to_end((key, entry_id))
                        found.append(lru[key, entry_id].meta)
                    return found
        if type(key) is not str or key not in _CHECKED_KEYS:  # _check_key's memo, inline
            _check_key(key)
        return []

    def open_body(self, key: str, entry_id: str) -> Iterator[bytes] | None:
        """The body of a variant in chunks of at most 64 KiB; None if it is gone."""
        _check_key(key)
        _check_id(entry_id)
        with self._lock:
            entry = self._lru.get((key, entry_id))
            if entry is None:
                return None
            self._lru.move_to_end((key, entry_id))
            chunks = entry.chunks
        return _memory_chunks(chunks)

    def begin(self, key: str, meta: CachedResponse) -> CacheWriter:
        """A writer that stores a new variant under ``key`` when committed."""
        _check_key(key)
        _check_meta(meta)
        return _MemoryWriter(self, key, meta, min(self.max_body_bytes, self.max_bytes))

    def update(self, key: str, entry_id: str, meta: CachedResponse) -> bool:
        """Replace a variant's meta, keeping its body; False if it is gone."""
        _check_key(key)
        _check_id(entry_id)
        _check_meta(meta)
        with self._lock:
            entry = self._lru.get((key, entry_id))
            if entry is None:
                return False
            entry.meta = dataclasses.replace(meta, id=entry_id, size=entry.meta.size)
            self._drop_same_vary(key, entry.meta.vary, keep=entry_id)
            ids = self._keys[key]
            ids.remove(entry_id)
            ids.insert(0, entry_id)
            self._lru.move_to_end((key, entry_id))
            return True

    def remove(self, key: str) -> None:
        """Delete every variant under ``key``."""
        _check_key(key)
        with self._lock:
            for entry_id in self._keys.pop(key, ()):
                entry = self._lru.pop((key, entry_id))
                self._bytes -= entry.meta.size

    def clear(self) -> None:
        """Delete every entry."""
        with self._lock:
            self._lru.clear()
            self._keys.clear()
            self._bytes = 0

    def close(self) -> None:
        """Nothing to release: the entries stay, and the storage stays usable."""

    def _install(self, key: str, entry: _MemoryEntry) -> None:
        """Add a committed variant, replacing its vary twin, then evict down to the limits."""
        entry_id = entry.meta.id
        with self._lock:
            self._drop_same_vary(key, entry.meta.vary)
            ids = self._keys.setdefault(key, [])
            ids.insert(0, entry_id)
            self._lru[key, entry_id] = entry
            self._bytes += entry.meta.size
            while len(ids) > MAX_VARIANTS:
                self._drop(key, ids[-1])
            lru = self._lru
            while len(lru) > self.max_entries or self._bytes > self.max_bytes:
                old_key, old_id = next(iter(lru))
                self._drop(old_key, old_id)

    def _drop_same_vary(
        self, key: str, vary: tuple[tuple[str, str], ...] | None, keep: str = ""
    ) -> None:
        """Forget ``key``'s variants with this ``vary``, but ``keep`` (the lock is held)."""
        lru = self._lru
        for other in [i for i in self._keys.get(key, ()) if lru[key, i].meta.vary == vary]:
            if other != keep:
                self._drop(key, other)

    def _drop(self, key: str, entry_id: str) -> None:
        """Forget one variant (the lock is held)."""
        entry = self._lru.pop((key, entry_id))
        self._bytes -= entry.meta.size
        ids = self._keys[key]
        ids.remove(entry_id)
        if not ids:
            del self._keys[key]

    # The memory storage never blocks: its async methods run inline, with no thread hop.

    async def alookup(self, key: str) -> list[CachedResponse]:
        """:meth:`lookup`, inline."""
        return self.lookup(key)

    async def aopen_body(self, key: str, entry_id: str) -> AsyncIterator[bytes] | None:
        """:meth:`open_body`, inline."""
        chunks = self.open_body(key, entry_id)
        return None if chunks is None else _InlineChunks(chunks)

    async def abegin(self, key: str, meta: CachedResponse) -> AsyncCacheWriter:
        """:meth:`begin`, inline."""
        return _AsyncWriter(self.begin(key, meta), threaded=False, limit=self.max_body_bytes)

    async def aupdate(self, key: str, entry_id: str, meta: CachedResponse) -> bool:
        """:meth:`update`, inline."""
        return self.update(key, entry_id, meta)

    async def aremove(self, key: str) -> None:
        """:meth:`remove`, inline."""
        self.remove(key)

    async def aclear(self) -> None:
        """:meth:`clear`, inline."""
        self.clear()

    async def aclose(self) -> None:
        """:meth:`close`, inline."""
        self.close()


# -- files ------------------------------------------------------------------------------------


class _FileChunks:
    """A body read from an open file: the descriptor keeps the body alive if it is replaced."""

    __slots__ = ("_file",)

    def __init__(self, file: io.FileIO) -> None:
        self._file: io.FileIO | None = file

    def __iter__(self) -> _FileChunks:
        return self

    def __next__(self) -> bytes:
        file = self._file
        if file is None:
            raise StopIteration
        data = file.read(CHUNK_SIZE)
        if not data:
            self.close()
            raise StopIteration
        return data

    def close(self) -> None:
        """Stop reading and close the file."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def __del__(self) -> None:
        self.close()


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unlink(path: str) -> bool:
    """Delete ``path``; whether this call deleted it."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _pairs(value: object) -> tuple[tuple[str, str], ...] | None:
    """``[[name, value], ...]`` from JSON as a tuple of pairs of str, or None if malformed."""
    if not isinstance(value, list):
        return None
    pairs = []
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], str)
        ):
            return None
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_time(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _encode(key: str, meta: CachedResponse, stamp: int) -> bytes:
    """The JSON of a .meta file."""
    document = {
        "v": 1,
        "key": key,
        "id": meta.id,
        "stored": stamp,
        "status": meta.status,
        "method": meta.method,
        "headers": meta.headers,
        "vary": meta.vary,
        "request_time": meta.request_time,
        "response_time": meta.response_time,
        "size": meta.size,
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def _decode(raw: bytes, key: str, entry_id: str) -> tuple[CachedResponse, int] | None:
    """The meta and commit stamp of a .meta file; None for anything but a well-formed one."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    get = document.get
    if get("v") != 1 or get("key") != key or get("id") != entry_id:
        return None
    status, method, stored, size = get("status"), get("method"), get("stored"), get("size")
    request_time, response_time = get("request_time"), get("response_time")
    headers = _pairs(get("headers"))
    raw_vary = get("vary")
    vary = None if raw_vary is None else _pairs(raw_vary)
    if (
        not _is_int(status)
        or not isinstance(method, str)
        or not _is_int(stored)
        or not _is_int(size)
        or not _is_time(request_time)
        or not _is_time(response_time)
        or headers is None
        or (raw_vary is not None and vary is None)
        or stored < 0
        or size < 0
        or not 100 <= status <= 999
    ):
        return None
    meta = CachedResponse(
        status=status,
        headers=headers,
        vary=vary,
        request_time=float(request_time),
        response_time=float(response_time),
        method=method,
        size=size,
        id=entry_id,
    )
    return meta, stored


class _FileWriter(_Writer):
    """Streams a body into a temp file next to its final place; commit renames it there."""

    __slots__ = ("_file", "_storage", "_temp")

    def __init__(
        self, storage: FileCacheStorage, key: str, meta: CachedResponse, limit: int
    ) -> None:
        super().__init__(key, meta, limit)
        self._storage = storage
        self._file: io.BufferedWriter | None = None
        self._temp: str | None = None

    def _open(self) -> io.BufferedWriter:
        """The temp file, created on first use (no file for a write that never starts)."""
        if self._file is None:
            fd, self._temp = self._storage._temp(self._key, self._id)
            self._file = open(fd, "wb")  # noqa: SIM115 - closed by commit, abort or __del__
        return self._file

    def _append(self, data: bytes) -> None:
        self._open().write(data)

    def _release(self) -> None:
        file, self._file = self._file, None
        temp, self._temp = self._temp, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def _store(self) -> CachedResponse | None:
        storage = self._storage
        file = self._open()
        self._file = None
        file.close()
        body_temp = self._temp
        assert body_temp is not None
        meta = dataclasses.replace(self._meta, id=self._id, size=self._size)
        meta_temp = storage._write_meta(self._key, meta, storage._stamp())
        folder = storage._folder(self._key)
        body = os.path.join(folder, f"{self._id}.body")
        try:
            # the body lands first and the meta last: a meta never points at a missing body
            os.replace(body_temp, body)
            self._temp = None
            os.replace(meta_temp, os.path.join(folder, f"{self._id}.meta"))
        except BaseException:
            _unlink(meta_temp)
            _unlink(body)
            raise
        storage._committed(self._key, folder, self._id, self._size)
        return meta

    def __del__(self) -> None:
        if getattr(self, "_temp", None) is not None and self._state == _OPEN:
            self.abort()  # dropped unfinished: delete the temp file


class FileCacheStorage(CacheStorage):
    """Entries in files under a directory: they outlive the process and are shared by every
    process that uses the same directory.

    Writes go to temp files renamed into place (atomic), bodies before metas, so readers and
    other processes never see half an entry. When the bodies pass ``max_bytes`` after a commit,
    the least recently used variants (by the time of their last lookup) are deleted down to
    90% of it. Each process counts the bytes from a scan of the directory, made on its first
    commit, whenever its count passes ``max_bytes``, and every five minutes (other processes
    write too); the scan also deletes what crashed writers left behind.

    Args:
        path: the directory; created with its parents (the last one readable by this user
            only: cached responses may be private).
        max_bytes: the most body bytes kept, all variants together; a single body larger than
            this is never stored.
        max_body_bytes: bodies longer than this are not stored.

    Raises:
        TypeError: ``path`` is not a path, or an option is not an int.
        ValueError: ``path`` is empty, or an option is not positive.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 1 * 2**30,
        max_body_bytes: int = 256 * 2**20,
    ) -> None:
        try:
            root: object = os.fspath(path)
        except TypeError:
            root = None
        if not isinstance(root, str):
            raise TypeError(f"FileCacheStorage.path must be a str or a path, got {_short(path)}")
        if not root:
            raise ValueError("FileCacheStorage.path must not be empty, got ''")
        _check_size("FileCacheStorage", "max_bytes", max_bytes)
        _check_size("FileCacheStorage", "max_body_bytes", max_body_bytes)
        self.path = os.path.abspath(root)
        self.max_bytes = max_bytes
        self.max_body_bytes = max_body_bytes
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._last_stamp = 0
        self._total: int | None = None  # body bytes on disk, as this process knows them
        self._scanned_at = 0.0
        self._scanning = False
        after_fork_in_child(self, FileCacheStorage._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()
        self._scanning = False

    def __repr__(self) -> str:
        return (
            f"FileCacheStorage({self.path!r}, max_bytes={self.max_bytes}, "
            f"max_body_bytes={self.max_body_bytes})"
        )

    # -- the interface

    def lookup(self, key: str) -> list[CachedResponse]:
        """Every variant stored under ``key``, newest first (marks them used).

        Corrupt metas, metas whose body is missing or of another size, and variants replaced
        by a newer one with the same ``vary`` are deleted, never returned.
        """
        _check_key(key)
        folder = self._folder(key)
        found = self._variants(key, folder)
        if found:
            stamp = self._stamp()
            for meta, _ in found:
                with contextlib.suppress(OSError):
                    os.utime(os.path.join(folder, f"{meta.id}.meta"), ns=(stamp, stamp))
        return [meta for meta, _ in found]

    def open_body(self, key: str, entry_id: str) -> Iterator[bytes] | None:
        """The body of a variant in chunks of at most 64 KiB; None if it is gone.

        The file is opened now: a commit that replaces the variant later does not change what
        this iterator reads. Close it (``close()``) when stopping early.
        """
        _check_key(key)
        _check_id(entry_id)
        path = os.path.join(self._folder(key), f"{entry_id}.body")
        try:
            file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the iterator
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _FileChunks(file)

    def begin(self, key: str, meta: CachedResponse) -> CacheWriter:
        """A writer that stores a new variant under ``key`` when committed."""
        _check_key(key)
        _check_meta(meta)
        return _FileWriter(self, key, meta, min(self.max_body_bytes, self.max_bytes))

    def update(self, key: str, entry_id: str, meta: CachedResponse) -> bool:
        """Replace a variant's meta, keeping its body; False if it is gone."""
        _check_key(key)
        _check_id(entry_id)
        _check_meta(meta)
        folder = self._folder(key)
        meta_path = os.path.join(folder, f"{entry_id}.meta")
        body_path = os.path.join(folder, f"{entry_id}.body")
        try:
            stored = self._read_meta(meta_path, key, entry_id)
        except FileNotFoundError:
            return False
        if stored is None or not os.path.exists(body_path):
            return False
        fresh = dataclasses.replace(meta, id=entry_id, size=stored[0].size)
        temp = self._write_meta(key, fresh, self._stamp())
        try:
            os.replace(temp, meta_path)
        except BaseException:
            _unlink(temp)
            raise
        if not os.path.exists(body_path):  # removed meanwhile: leave no meta behind
            self._delete(folder, entry_id)
            return False
        self._variants(key, folder)  # its vary may now equal an older variant's: drop that one
        return True

    def remove(self, key: str) -> None:
        """Delete every variant under ``key`` (a writer still streaming may commit later)."""
        _check_key(key)
        self._remove_folder(self._folder(key))

    def clear(self) -> None:
        """Delete every entry (a writer still streaming may commit later)."""
        for prefix in _listdir(self.path):
            if _PREFIX.fullmatch(prefix) is None:
                continue
            prefix_path = os.path.join(self.path, prefix)
            for name in _listdir(prefix_path):
                if _KEY.fullmatch(name) is not None:
                    self._remove_folder(os.path.join(prefix_path, name))

    def close(self) -> None:
        """Nothing is held open between calls: the entries stay, and the storage stays usable."""

    async def abegin(self, key: str, meta: CachedResponse) -> AsyncCacheWriter:
        """:meth:`begin` for async code (it touches no file, so it runs inline)."""
        return _AsyncWriter(self.begin(key, meta), threaded=True, limit=self.max_body_bytes)

    # -- the files

    def _folder(self, key: str) -> str:
        return os.path.join(self.path, key[:2], key)

    def _stamp(self) -> int:
        """Nanoseconds since the epoch, strictly increasing within this process."""
        now = time.time_ns()
        with self._lock:
            stamp = self._last_stamp = max(now, self._last_stamp + 1)
        return stamp

    def _temp(self, key: str, entry_id: str) -> tuple[int, str]:
        """A new temp file (mode 0600) in ``key``'s folder, made if missing: (fd, path)."""
        folder = self._folder(key)
        for _ in range(3):  # a scan may delete the empty folder between the two steps
            try:
                return tempfile.mkstemp(prefix=f".{entry_id}.", suffix=".tmp", dir=folder)
            except FileNotFoundError:
                for directory in (os.path.dirname(folder), folder):
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(directory, 0o700)
        return tempfile.mkstemp(prefix=f".{entry_id}.", suffix=".tmp", dir=folder)

    def _write_meta(self, key: str, meta: CachedResponse, stamp: int) -> str:
        """A temp file holding ``meta``, its mtime set to ``stamp`` (the LRU clock): its path."""
        payload = _encode(key, meta, stamp)
        fd, path = self._temp(key, meta.id)
        try:
            with open(fd, "wb") as file:
                file.write(payload)
            os.utime(path, ns=(stamp, stamp))
        except BaseException:
            _unlink(path)
            raise
        return path

    @staticmethod
    def _read_meta(path: str, key: str, entry_id: str) -> tuple[CachedResponse, int] | None:
        """A .meta file's content; None if it is garbage.

        Raises:
            FileNotFoundError: there is no such file (any more).
        """
        try:
            with open(path, "rb") as file:
                raw = file.read(_MAX_META_BYTES + 1)
        except (IsADirectoryError, NotADirectoryError):
            return None
        if len(raw) > _MAX_META_BYTES:
            return None
        return _decode(raw, key, entry_id)

    def _variants(self, key: str, folder: str) -> list[tuple[CachedResponse, int]]:
        """The valid variants under ``key`` with their stamps, newest first, one per vary.

        Deletes what is corrupt or orphaned, variants replaced by a newer one with the same
        vary, and the oldest beyond MAX_VARIANTS.
        """
        found: list[tuple[CachedResponse, int]] = []
        for name in _listdir(folder):
            match = _META_NAME.fullmatch(name)
            if match is None:
                continue
            entry_id = match.group(1)
            try:
                stored = self._read_meta(os.path.join(folder, name), key, entry_id)
            except FileNotFoundError:
                continue  # deleted meanwhile
            try:
                size = os.stat(os.path.join(folder, f"{entry_id}.body")).st_size
            except FileNotFoundError:
                size = -1
            if stored is None or stored[0].size != size:
                self._delete(folder, entry_id)
            else:
                found.append(stored)
        found.sort(key=lambda item: (item[1], item[0].id), reverse=True)
        kept: list[tuple[CachedResponse, int]] = []
        seen: set[tuple[tuple[str, str], ...] | None] = set()
        for meta, stamp in found:
            if meta.vary in seen or len(kept) >= MAX_VARIANTS:
                self._delete(folder, meta.id)
            else:
                seen.add(meta.vary)
                kept.append((meta, stamp))
        return kept

    def _delete(self, folder: str, entry_id: str) -> None:
        """Delete a variant, its meta first: no meta ever points at a missing body."""
        body = os.path.join(folder, f"{entry_id}.body")
        try:
            size = os.stat(body).st_size
        except OSError:
            size = 0
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, f"{entry_id}.meta"))
        try:
            os.unlink(body)
        except OSError:
            return
        self._account(-size)

    def _remove_folder(self, folder: str) -> None:
        for name in _listdir(folder):
            match = _META_NAME.fullmatch(name) or _BODY_NAME.fullmatch(name)
            if match is not None:
                self._delete(folder, match.group(1))
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty: a writer's temp file keeps it

    # -- size and eviction

    def _account(self, change: int) -> None:
        with self._lock:
            if self._total is not None:
                self._total += change

    def _committed(self, key: str, folder: str, entry_id: str, size: int) -> None:
        """After a commit: drop the variants it replaces, count it, evict if over the limit."""
        self._account(size)
        try:
            self._variants(key, folder)
            with self._lock:
                due = not self._scanning and (
                    self._total is None
                    or self._total > self.max_bytes
                    or time.monotonic() - self._scanned_at > _RESCAN_INTERVAL
                )
                if due:
                    self._scanning = True
            if due:
                try:
                    self._scan_and_evict(protect=(folder, entry_id))
                finally:
                    with self._lock:
                        self._scanning = False
        except OSError as exc:  # the entry is stored; housekeeping runs again on a later commit
            _events.warning("cache.storage_error", operation="evict", error=repr(exc))

    def _scan_and_evict(self, protect: tuple[str, str]) -> None:
        """Count the bytes on disk, clean what is abandoned, and evict LRU variants if over."""
        total, variants = self._scan()
        if total > self.max_bytes:
            target = int(self.max_bytes * _LOW_WATER)
            variants.sort()
            for _, size, folder, entry_id in variants:
                if total <= target:
                    break
                if (folder, entry_id) == protect:
                    continue  # the variant just committed stays
                self._delete(folder, entry_id)
                total -= size
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        with self._lock:
            self._total = total
            self._scanned_at = time.monotonic()

    def _scan(self) -> tuple[int, list[tuple[int, int, str, str]]]:
        """Body bytes on disk and every variant as (last used ns, size, folder, id)."""
        now = time.time()
        total = 0
        variants: list[tuple[int, int, str, str]] = []
        for prefix in _listdir(self.path):
            if _PREFIX.fullmatch(prefix) is None:
                continue
            prefix_path = os.path.join(self.path, prefix)
            for key in _listdir(prefix_path):
                if _KEY.fullmatch(key) is not None and key.startswith(prefix):
                    folder = os.path.join(prefix_path, key)
                    total += self._scan_folder(folder, now, variants)
        return total, variants

    @staticmethod
    def _scan_folder(folder: str, now: float, variants: list[tuple[int, int, str, str]]) -> int:
        """One key's body bytes; adds its variants to ``variants`` and deletes bodies without
        meta older than a minute, metas without body, and temp files unwritten for an hour."""
        names = _listdir(folder)
        metas = {match.group(1) for match in map(_META_NAME.fullmatch, names) if match}
        total = 0
        for name in names:
            path = os.path.join(folder, name)
            try:
                if body := _BODY_NAME.fullmatch(name):
                    status = os.stat(path)
                    entry_id = body.group(1)
                    if entry_id in metas:
                        used = os.stat(os.path.join(folder, f"{entry_id}.meta")).st_mtime_ns
                        variants.append((used, status.st_size, folder, entry_id))
                        total += status.st_size
                    elif now - status.st_mtime > _ORPHAN_GRACE:
                        os.unlink(path)
                    else:
                        total += status.st_size  # most likely a commit in progress
                elif meta := _META_NAME.fullmatch(name):
                    if not os.path.exists(os.path.join(folder, f"{meta.group(1)}.body")):
                        os.unlink(path)
                elif _TEMP_NAME.fullmatch(name) and now - os.stat(path).st_mtime > _TEMP_GRACE:
                    os.unlink(path)
            except FileNotFoundError:
                continue  # deleted meanwhile
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when nothing is left in it
        return total
