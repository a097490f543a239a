"""The cache storages: memory (LRU) and files, through their sync and async APIs."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import anyio.to_thread
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience._cache_storage import (
    _CHECKED_KEYS,
    _CHECKED_MAX,
    CHUNK_SIZE,
    MAX_VARIANTS,
    AsyncCacheWriter,
    CachedResponse,
    CacheStorage,
    CacheWriter,
    FileCacheStorage,
    MemoryCacheStorage,
    _check_key,
    _decode,
    _encode,
)

Factory = Callable[..., CacheStorage]


def key_of(text: str) -> str:
    """A storage key as the transport makes them: a SHA-256 hex digest."""
    return hashlib.sha256(text.encode()).hexdigest()


KEY = key_of("GET https://api.test/users")
OTHER = key_of("GET https://api.test/orders")
ID = "0123456789abcdef"


def meta(
    *,
    vary: tuple[tuple[str, str], ...] | None = (),
    headers: tuple[tuple[str, str], ...] = (("content-type", "text/plain"),),
    status: int = 200,
    at: float = 1_000.0,
) -> CachedResponse:
    """A response's meta, as the transport builds it (no id, no size)."""
    return CachedResponse(
        status=status, headers=headers, vary=vary, request_time=at, response_time=at + 0.5
    )


def store(
    storage: CacheStorage, key: str, chunks: Iterable[bytes], entry: CachedResponse | None = None
) -> CachedResponse:
    """Write and commit one variant; its stored meta."""
    writer = storage.begin(key, entry or meta())
    for chunk in chunks:
        writer.write(chunk)
    stored = writer.commit()
    assert stored is not None
    return stored


def read(storage: CacheStorage, key: str, entry_id: str) -> bytes | None:
    """A variant's whole body, or None if it is gone."""
    chunks = storage.open_body(key, entry_id)
    return None if chunks is None else b"".join(chunks)


def is_discarded(writer: CacheWriter | AsyncCacheWriter) -> bool:
    """The writer's ``discarded`` flag, read afresh (for the type checker)."""
    return writer.discarded


def files_under(path: Path) -> list[Path]:
    """Every regular file below ``path``."""
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.fixture(params=["memory", "files"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Builds the storage under test: in memory, then in files under a fresh directory."""

    def build(**options: Any) -> CacheStorage:
        if request.param == "memory":
            return MemoryCacheStorage(**options)
        return FileCacheStorage(tmp_path / "cache", **options)

    return build


@pytest.fixture
def storage(make: Factory) -> CacheStorage:
    """A storage with default options."""
    return make()


# -- round trips --------------------------------------------------------------------------------


def test_round_trip_of_meta_and_body(storage: CacheStorage) -> None:
    """A committed variant comes back with its meta, an id, its size and its body."""
    entry = meta(vary=(("accept", "text/plain"),), headers=(("etag", '"v1"'), ("x-a", "1")))
    stored = store(
        storage, KEY, [b"hello ", b"", b"cached ", cast(bytes, bytearray(b"world"))], entry
    )
    assert len(stored.id) == 16
    assert stored.size == len(b"hello cached world")
    assert stored == CachedResponse(
        status=200,
        headers=(("etag", '"v1"'), ("x-a", "1")),
        vary=(("accept", "text/plain"),),
        request_time=1_000.0,
        response_time=1_000.5,
        method="GET",
        size=18,
        id=stored.id,
    )
    assert storage.lookup(KEY) == [stored]
    assert read(storage, KEY, stored.id) == b"hello cached world"
    assert storage.lookup(OTHER) == []


def test_empty_body(storage: CacheStorage) -> None:
    """A response without a body is stored and read back as empty."""
    stored = store(storage, KEY, [])
    assert stored.size == 0
    assert storage.lookup(KEY) == [stored]
    assert read(storage, KEY, stored.id) == b""


def test_five_megabyte_body_in_bounded_chunks(storage: CacheStorage) -> None:
    """A 5 MB body, written in odd-sized pieces or at once, reads back in chunks <= 64 KiB."""
    body = os.urandom(5 * 10**6)
    pieces = [body[i : i + 100_003] for i in range(0, len(body), 100_003)]
    for chunks in (pieces, [body]):
        stored = store(storage, KEY, chunks)
        opened = storage.open_body(KEY, stored.id)
        assert opened is not None
        read_back = list(opened)
        assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in read_back)
        assert b"".join(read_back) == body
        assert stored.size == len(body)


def test_tiny_writes(storage: CacheStorage) -> None:
    """A body dribbled one byte at a time is stored whole."""
    body = bytes(range(256)) * 300
    stored = store(storage, KEY, [body[i : i + 1] for i in range(len(body))])
    opened = storage.open_body(KEY, stored.id)
    assert opened is not None
    chunks = list(opened)
    assert b"".join(chunks) == body
    assert max(map(len, chunks)) <= CHUNK_SIZE


def test_open_body_of_unknown_variant_is_none(storage: CacheStorage) -> None:
    """A body that is not (or no longer) there opens as None."""
    assert storage.open_body(KEY, ID) is None
    stored = store(storage, KEY, [b"x"])
    storage.remove(KEY)
    assert storage.open_body(KEY, stored.id) is None


# -- variants -----------------------------------------------------------------------------------


def test_lookup_lists_newest_first(storage: CacheStorage) -> None:
    """Variants come newest first; an update makes its variant the newest."""
    first = store(storage, KEY, [b"1"], meta(vary=(("accept", "a"),)))
    second = store(storage, KEY, [b"2"], meta(vary=(("accept", "b"),)))
    third = store(storage, KEY, [b"3"], meta(vary=(("accept", "c"),)))
    assert [m.id for m in storage.lookup(KEY)] == [third.id, second.id, first.id]
    assert storage.update(KEY, first.id, meta(vary=(("accept", "a"),), at=2_000.0))
    assert [m.id for m in storage.lookup(KEY)] == [first.id, third.id, second.id]


def test_same_vary_replaces(storage: CacheStorage) -> None:
    """A commit replaces the variant with the same vary; the old body is gone."""
    old = store(storage, KEY, [b"old body"], meta(headers=(("etag", '"1"'),)))
    new = store(storage, KEY, [b"new"], meta(headers=(("etag", '"2"'),)))
    assert storage.lookup(KEY) == [new]
    assert read(storage, KEY, new.id) == b"new"
    assert read(storage, KEY, old.id) is None


def test_vary_star_replaces_vary_star(storage: CacheStorage) -> None:
    """``vary=None`` (Vary: *) is a vary value like any other: it replaces its own kind."""
    store(storage, KEY, [b"a"], meta(vary=None))
    plain = store(storage, KEY, [b"b"], meta(vary=()))
    star = store(storage, KEY, [b"c"], meta(vary=None))
    assert storage.lookup(KEY) == [star, plain]


def test_different_vary_coexist(storage: CacheStorage) -> None:
    """Variants with different vary values live side by side, each with its body."""
    gzip = store(storage, KEY, [b"gzip body"], meta(vary=(("accept-encoding", "gzip"),)))
    br = store(storage, KEY, [b"br body"], meta(vary=(("accept-encoding", "br"),)))
    assert storage.lookup(KEY) == [br, gzip]
    assert read(storage, KEY, gzip.id) == b"gzip body"
    assert read(storage, KEY, br.id) == b"br body"


def test_at_most_eight_variants(storage: CacheStorage) -> None:
    """Past eight variants under one key, the oldest are dropped."""
    stored = [
        store(storage, KEY, [b"%d" % i], meta(vary=(("accept-language", str(i)),)))
        for i in range(MAX_VARIANTS + 2)
    ]
    found = storage.lookup(KEY)
    assert [m.id for m in found] == [m.id for m in reversed(stored[2:])]
    assert read(storage, KEY, stored[0].id) is None
    assert read(storage, KEY, stored[1].id) is None
    assert read(storage, KEY, stored[-1].id) == b"%d" % (MAX_VARIANTS + 1)


# -- writers ------------------------------------------------------------------------------------


def test_abort_stores_nothing(storage: CacheStorage) -> None:
    """An aborted writer stores nothing; abort is idempotent; commit after abort is None."""
    writer = storage.begin(KEY, meta())
    writer.write(b"partial")
    writer.abort()
    writer.abort()
    writer.write(b"more")
    assert writer.commit() is None
    assert not writer.discarded
    assert storage.lookup(KEY) == []


def test_abort_after_commit_keeps_the_entry(storage: CacheStorage) -> None:
    """Once committed, an abort changes nothing and a second commit stores nothing."""
    writer = storage.begin(KEY, meta())
    writer.write(b"body")
    stored = writer.commit()
    writer.abort()
    assert writer.commit() is None
    assert storage.lookup(KEY) == [stored]


def test_body_over_max_body_bytes_is_discarded(make: Factory) -> None:
    """A body past max_body_bytes is dropped as it is written; commit stores nothing."""
    storage = make(max_body_bytes=1_000)
    writer = storage.begin(KEY, meta())
    writer.write(b"x" * 600)
    assert not is_discarded(writer)
    writer.write(b"x" * 600)
    assert is_discarded(writer)
    writer.write(b"x")
    assert writer.commit() is None
    assert storage.lookup(KEY) == []
    exactly = store(storage, KEY, [b"y" * 1_000])  # the limit itself is allowed
    assert exactly.size == 1_000


def test_body_over_max_bytes_is_never_stored(make: Factory) -> None:
    """A single body larger than the whole storage is discarded, not stored then evicted."""
    storage = make(max_bytes=1_000)
    kept = store(storage, OTHER, [b"k" * 10])
    writer = storage.begin(KEY, meta())
    writer.write(b"x" * 1_001)
    assert writer.discarded
    assert writer.commit() is None
    assert storage.lookup(KEY) == []
    assert storage.lookup(OTHER) == [kept]


def test_discarded_and_aborted_bodies_free_memory() -> None:
    """The memory writer lets go of the chunks it held once discarded or aborted."""
    storage = MemoryCacheStorage(max_body_bytes=1 << 20)
    tracemalloc.start()
    try:
        writer = storage.begin(KEY, meta())
        aborted = storage.begin(OTHER, meta())
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(64):  # 4 MiB through a writer that may keep 1 MiB
            writer.write(bytes(64 * 1024))
        for _ in range(8):
            aborted.write(bytes(64 * 1024))
        aborted.abort()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert writer.discarded
    assert held < 128 * 1024
    assert len(storage) == 0
    assert storage.total_bytes == 0


def test_discarded_and_aborted_bodies_leave_no_files(tmp_path: Path) -> None:
    """The file writer deletes its temp file when discarded, aborted or dropped unfinished."""
    storage = FileCacheStorage(tmp_path, max_body_bytes=100)
    discarded = storage.begin(KEY, meta())
    discarded.write(b"x" * 80)
    assert files_under(tmp_path)  # streaming into a temp file
    discarded.write(b"x" * 80)
    assert discarded.discarded
    aborted = storage.begin(KEY, meta())
    aborted.write(b"y")
    aborted.abort()
    dropped = storage.begin(OTHER, meta())
    dropped.write(b"z")
    del dropped
    gc.collect()
    assert files_under(tmp_path) == []


def test_writer_rejects_non_bytes(storage: CacheStorage) -> None:
    """A chunk that is not bytes is a TypeError, not zeros or garbage in the cache."""
    writer = storage.begin(KEY, meta())
    with pytest.raises(TypeError, match="bytes"):
        writer.write(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        writer.write("text")  # type: ignore[arg-type]
    writer.abort()


# -- update, remove, clear ----------------------------------------------------------------------


def test_update_changes_meta_not_body(storage: CacheStorage) -> None:
    """An update after a 304 replaces headers and times; the id, size and body stay."""
    stored = store(storage, KEY, [b"the body"], meta(headers=(("etag", '"1"'),)))
    fresh = CachedResponse(
        status=200,
        headers=(("etag", '"1"'), ("cache-control", "max-age=60")),
        vary=(),
        request_time=5_000.0,
        response_time=5_000.2,
        size=999,  # ignored: the body did not change
        id="ffffffffffffffff",  # ignored: the variant keeps its id
    )
    assert storage.update(KEY, stored.id, fresh) is True
    [found] = storage.lookup(KEY)
    assert found.id == stored.id
    assert found.size == len(b"the body")
    assert found.headers == fresh.headers
    assert (found.request_time, found.response_time) == (5_000.0, 5_000.2)
    assert read(storage, KEY, stored.id) == b"the body"


def test_update_of_a_gone_variant_is_false(storage: CacheStorage) -> None:
    """An update of a variant that was replaced or never existed reports False."""
    assert storage.update(KEY, ID, meta()) is False
    old = store(storage, KEY, [b"1"])
    store(storage, KEY, [b"2"])
    assert storage.update(KEY, old.id, meta()) is False
    assert len(storage.lookup(KEY)) == 1


def test_remove_and_clear(storage: CacheStorage) -> None:
    """remove() drops every variant under one key; clear() drops everything."""
    store(storage, KEY, [b"a"], meta(vary=(("accept", "a"),)))
    store(storage, KEY, [b"b"], meta(vary=(("accept", "b"),)))
    other = store(storage, OTHER, [b"c"])
    storage.remove(KEY)
    storage.remove(KEY)
    assert storage.lookup(KEY) == []
    assert storage.lookup(OTHER) == [other]
    storage.clear()
    assert storage.lookup(OTHER) == []
    assert read(storage, OTHER, other.id) is None
    storage.close()
    assert store(storage, KEY, [b"again"]).size == 5  # still usable after close()


# -- eviction -----------------------------------------------------------------------------------


def test_memory_evicts_least_recently_used_by_count() -> None:
    """Past max_entries, the variant used least recently goes first."""
    storage = MemoryCacheStorage(max_entries=3)
    keys = [key_of(str(i)) for i in range(4)]
    for key in keys[:3]:
        store(storage, key, [b"x"])
    storage.lookup(keys[0])  # used: now the most recent
    store(storage, keys[3], [b"x"])
    assert len(storage) == 3
    assert storage.lookup(keys[1]) == []
    assert all(storage.lookup(key) for key in (keys[0], keys[2], keys[3]))


def test_memory_evicts_least_recently_used_by_bytes() -> None:
    """Past max_bytes, least recently used variants go until the bodies fit."""
    storage = MemoryCacheStorage(max_bytes=100)
    first = store(storage, KEY, [b"a" * 40])
    store(storage, OTHER, [b"b" * 40])
    assert read(storage, KEY, first.id) == b"a" * 40  # reading marks it used
    third = key_of("third")
    store(storage, third, [b"c" * 40])
    assert storage.total_bytes == 80
    assert storage.lookup(OTHER) == []
    assert storage.lookup(KEY)
    assert storage.lookup(third)


def test_files_evict_least_recently_used_by_bytes(tmp_path: Path) -> None:
    """Past max_bytes, the least recently looked-up variants are deleted, down to 90%."""
    storage = FileCacheStorage(tmp_path, max_bytes=100_000)
    keys = [key_of(str(i)) for i in range(4)]
    for key in keys[:3]:
        store(storage, key, [b"x" * 30_000])
    assert storage.lookup(keys[0])  # used: now the most recent
    store(storage, keys[3], [b"y" * 30_000])
    assert storage.lookup(keys[1]) == []
    assert all(storage.lookup(key) for key in (keys[0], keys[2], keys[3]))
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.body")) == 90_000
    # another process (here, an instance) with a smaller limit evicts on its first commit
    small = FileCacheStorage(tmp_path, max_bytes=40_000)
    store(small, keys[1], [b"z" * 10_000])
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.body")) <= 36_000
    assert small.lookup(keys[1])


# -- concurrency --------------------------------------------------------------------------------


def body_for(headers: tuple[tuple[str, str], ...]) -> bytes:
    """A body derived from the headers, so a mismatched pair is detectable."""
    tag = dict(headers)["x-tag"]
    return hashlib.sha256(tag.encode()).hexdigest().encode() * (1 + int(tag.split("-")[1]) % 40)


def test_racing_writers_never_mismatch_meta_and_body(storage: CacheStorage) -> None:
    """Two threads committing one key 200 times each, read meanwhile: every meta read has the
    body written with it, and the last commit wins."""
    failures: list[str] = []
    checked = 0
    done = threading.Event()

    def write(name: str) -> None:
        for i in range(200):
            headers = (("x-tag", f"{name}-{i}"),)
            store(storage, KEY, [body_for(headers)], meta(headers=headers))

    def check() -> int:
        seen = 0
        for found in storage.lookup(KEY):
            body = read(storage, KEY, found.id)
            if body is None:
                continue  # replaced between lookup and open: allowed
            if body != body_for(found.headers) or len(body) != found.size:
                failures.append(f"{found.headers} came with {body[:20]!r}")
            seen += 1
        return seen

    def watch() -> None:
        nonlocal checked
        while not done.is_set():
            checked += check()

    writers = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    reader = threading.Thread(target=watch)
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert check() == 1  # exactly one variant is left: same vary, the later commit won
    assert failures == []
    assert checked > 0


def test_reader_keeps_the_old_body_across_a_replace(storage: CacheStorage) -> None:
    """A reader halfway through a body reads the old one to its end while a commit replaces it."""
    old_body = b"a" * (3 * CHUNK_SIZE) + b"tail"
    old = store(storage, KEY, [old_body])
    opened = storage.open_body(KEY, old.id)
    assert opened is not None
    first = next(opened)
    new = store(storage, KEY, [b"b" * 100])
    rest = b"".join(opened)
    assert first + rest == old_body
    assert storage.lookup(KEY) == [new]
    assert read(storage, KEY, new.id) == b"b" * 100


def test_early_close_of_a_body(storage: CacheStorage) -> None:
    """A body iterator closed before its end releases what it held and yields nothing more."""
    stored = store(storage, KEY, [b"c" * (2 * CHUNK_SIZE)])
    opened = storage.open_body(KEY, stored.id)
    assert opened is not None
    assert next(opened) == b"c" * CHUNK_SIZE
    opened.close()  # type: ignore[attr-defined]
    assert list(opened) == []


# -- files --------------------------------------------------------------------------------------


def test_files_persist_across_instances(tmp_path: Path) -> None:
    """A new instance on the same directory sees, updates and removes the entries."""
    first = FileCacheStorage(str(tmp_path / "a" / "b"))
    stored = store(first, KEY, [b"persisted"], meta(vary=(("accept", "json"),)))
    second = FileCacheStorage(tmp_path / "a" / "b")
    assert second.lookup(KEY) == [stored]
    assert read(second, KEY, stored.id) == b"persisted"
    assert second.update(KEY, stored.id, meta(vary=(("accept", "json"),), at=9.0))
    assert first.lookup(KEY)[0].request_time == 9.0
    second.remove(KEY)
    assert first.lookup(KEY) == []


WRITER_PROCESS = """
import hashlib, sys
from resilience import CachedResponse, FileCacheStorage
storage = FileCacheStorage(sys.argv[1])
for i in range(150):
    tag = f"{sys.argv[2]}-{i}"
    body = hashlib.sha256(tag.encode()).hexdigest().encode() * (1 + i % 40)
    meta = CachedResponse(200, (("x-tag", tag),), (), 1.0, 2.0)
    writer = storage.begin(sys.argv[3], meta)
    writer.write(body)
    assert writer.commit() is not None
"""


def test_racing_processes_never_mismatch_meta_and_body(tmp_path: Path) -> None:
    """Two processes committing one key while a third reads: every meta comes with its own
    body, and one variant is left at the end."""
    storage = FileCacheStorage(tmp_path)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER_PROCESS, str(tmp_path), name, KEY])
        for name in ("p", "q")
    ]
    checked = 0
    while any(process.poll() is None for process in writers):
        for found in storage.lookup(KEY):
            body = read(storage, KEY, found.id)
            if body is not None:
                assert body == body_for(found.headers)
                checked += 1
    assert [process.wait() for process in writers] == [0, 0]
    [last] = storage.lookup(KEY)
    assert read(storage, KEY, last.id) == body_for(last.headers)
    assert len(list(tmp_path.rglob("*.body"))) == 1
    assert checked > 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_files_are_private(tmp_path: Path) -> None:
    """The cache directory and its files are readable by their owner only."""
    storage = FileCacheStorage(tmp_path / "cache")
    store(storage, KEY, [b"secret"])
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    for path in files_under(tmp_path / "cache"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def meta_file(root: Path, key: str, entry_id: str) -> Path:
    """Where a variant's meta lives."""
    return root / key[:2] / key / f"{entry_id}.meta"


def valid_document(root: Path) -> tuple[dict[str, Any], str]:
    """A well-formed meta document, from a real commit, and its variant's id."""
    stored = store(FileCacheStorage(root), KEY, [b"body"])
    return json.loads(meta_file(root, KEY, stored.id).read_bytes()), stored.id


GARBAGE: list[Callable[[dict[str, Any]], bytes]] = [
    lambda doc: b"",
    lambda doc: b"{",
    lambda doc: b"\xff\xfe\x00garbage",
    lambda doc: b"[]",
    lambda doc: b"[" * 100_000,
    lambda doc: b"9" * 5_000,
    lambda doc: b" " * (1 << 20) + json.dumps(doc).encode(),  # too big to be a meta
    lambda doc: json.dumps({**doc, "v": 2}).encode(),
    lambda doc: json.dumps({**doc, "key": OTHER}).encode(),
    lambda doc: json.dumps({**doc, "id": ID}).encode(),
    lambda doc: json.dumps({**doc, "status": "200"}).encode(),
    lambda doc: json.dumps({**doc, "status": True}).encode(),
    lambda doc: json.dumps({**doc, "status": 10**100}).encode(),
    lambda doc: json.dumps({**doc, "headers": [[1, 2]]}).encode(),
    lambda doc: json.dumps({**doc, "headers": [["a", "b", "c"]]}).encode(),
    lambda doc: json.dumps({**doc, "vary": "accept"}).encode(),
    lambda doc: json.dumps({**doc, "request_time": float("nan")}).encode(),
    lambda doc: json.dumps({**doc, "response_time": None}).encode(),
    lambda doc: json.dumps({**doc, "size": 5}).encode(),  # the body has 4 bytes
    lambda doc: json.dumps({**doc, "size": -1}).encode(),
    lambda doc: json.dumps({k: v for k, v in doc.items() if k != "method"}).encode(),
]


@pytest.mark.parametrize("corrupt", GARBAGE)
def test_files_ignore_corrupt_meta(
    tmp_path: Path, corrupt: Callable[[dict[str, Any]], bytes]
) -> None:
    """A corrupt meta is treated as missing (and deleted); nothing is raised."""
    document, entry_id = valid_document(tmp_path)
    path = meta_file(tmp_path, KEY, entry_id)
    path.write_bytes(corrupt(document))
    storage = FileCacheStorage(tmp_path)
    assert storage.lookup(KEY) == []
    assert not path.exists()
    assert storage.update(KEY, entry_id, meta()) is False
    assert store(storage, KEY, [b"fresh"]).size == 5  # the key works again


def test_files_ignore_a_meta_without_body(tmp_path: Path) -> None:
    """A meta whose body is missing is not returned, and is deleted."""
    storage = FileCacheStorage(tmp_path)
    stored = store(storage, KEY, [b"body"])
    body = meta_file(tmp_path, KEY, stored.id).with_suffix(".body")
    body.unlink()
    assert storage.lookup(KEY) == []
    assert files_under(tmp_path) == []


def test_files_ignore_orphans_and_clean_them(tmp_path: Path) -> None:
    """A body without meta is never returned; once old, it and abandoned temp files are
    deleted by the next scan, while young ones (a commit in progress) are left alone."""
    folder = tmp_path / KEY[:2] / KEY
    folder.mkdir(parents=True)
    old_orphan = folder / f"{ID}.body"
    old_orphan.write_bytes(b"orphan")
    young_orphan = folder / "fedcba9876543210.body"
    young_orphan.write_bytes(b"young")
    old_temp = folder / f".{ID}.abc123.tmp"
    old_temp.write_bytes(b"half written")
    hour_ago = time.time() - 7200
    os.utime(old_orphan, (hour_ago, hour_ago))
    os.utime(old_temp, (hour_ago, hour_ago))
    (folder / "notes.txt").write_text("not ours: left alone")
    storage = FileCacheStorage(tmp_path)
    assert storage.lookup(KEY) == []
    assert storage.open_body(KEY, "fedcba9876543210") is not None  # only by its id, as any body
    store(storage, OTHER, [b"x"])  # the first commit scans the directory
    assert not old_orphan.exists()
    assert not old_temp.exists()
    assert young_orphan.exists()
    assert (folder / "notes.txt").exists()


FORK_CHILD = """
import os, signal, sys, tempfile
from resilience import FileCacheStorage, MemoryCacheStorage
key = "ab" * 32
for storage in (MemoryCacheStorage(), FileCacheStorage(tempfile.mkdtemp())):
    storage._lock.acquire()  # as if another thread held it at fork() time
    pid = os.fork()
    if pid == 0:
        signal.alarm(5)  # a deadlock fails the test instead of hanging it
        storage.lookup(key)
        writer = storage.begin(key, __import__("resilience").CachedResponse(200, (), (), 1, 2))
        writer.write(b"child")
        os._exit(0 if writer.commit() is not None and storage.lookup(key) else 1)
    _, status = os.waitpid(pid, 0)
    storage._lock.release()
    assert os.waitstatus_to_exitcode(status) == 0, status
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_locks_are_fresh_after_fork() -> None:
    """A child forked while the parent held a storage's lock still uses the storage."""
    subprocess.run([sys.executable, "-c", FORK_CHILD], check=True, timeout=30)


def test_file_options_and_repr(tmp_path: Path) -> None:
    """The storage keeps its options and an absolute path, and shows them."""
    storage = FileCacheStorage(tmp_path / "c", max_bytes=5_000, max_body_bytes=1_000)
    assert storage.path == str(tmp_path / "c")
    assert (storage.max_bytes, storage.max_body_bytes) == (5_000, 1_000)
    assert "max_bytes=5000" in repr(storage)
    assert "max_entries=7" in repr(MemoryCacheStorage(max_entries=7))


# -- async --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_round_trip(storage: CacheStorage) -> None:
    """The async API stores, finds, reads, updates and removes like the sync one."""
    writer = await storage.abegin(KEY, meta())
    for chunk in (b"hello ", b"async ", b"world"):
        await writer.write(chunk)
    stored = await writer.commit()
    assert stored is not None
    assert not writer.discarded
    assert await storage.alookup(KEY) == [stored]
    chunks = await storage.aopen_body(KEY, stored.id)
    assert chunks is not None
    assert b"".join([chunk async for chunk in chunks]) == b"hello async world"
    assert await storage.aupdate(KEY, stored.id, meta(headers=(("etag", '"2"'),)))
    [found] = await storage.alookup(KEY)
    assert found.headers == (("etag", '"2"'),)
    assert await storage.aopen_body(KEY, ID) is None
    assert await storage.aupdate(KEY, ID, meta()) is False
    await storage.aremove(KEY)
    assert await storage.alookup(KEY) == []
    store(storage, OTHER, [b"x"])
    await storage.aclear()
    assert await storage.alookup(OTHER) == []
    await storage.aclose()


@pytest.mark.anyio
async def test_async_large_body_abort_and_early_close(storage: CacheStorage) -> None:
    """A 1.5 MB body crosses the async path in order; aborts store nothing; a body closed
    early is released."""
    body = os.urandom(1_500_000)
    writer = await storage.abegin(KEY, meta())
    for start in range(0, len(body), 50_000):
        await writer.write(body[start : start + 50_000])
    stored = await writer.commit()
    assert stored is not None
    assert await writer.commit() is None
    chunks = await storage.aopen_body(KEY, stored.id)
    assert chunks is not None
    pieces = [chunk async for chunk in chunks]
    assert b"".join(pieces) == body
    assert max(map(len, pieces)) <= CHUNK_SIZE
    aborted = await storage.abegin(OTHER, meta())
    await aborted.write(b"partial")
    await aborted.abort()
    await aborted.abort()
    assert await aborted.commit() is None
    assert await storage.alookup(OTHER) == []
    early = await storage.aopen_body(KEY, stored.id)
    assert early is not None
    assert len(await early.__anext__()) == CHUNK_SIZE
    await early.aclose()  # type: ignore[attr-defined]
    assert [chunk async for chunk in early] == []


@pytest.mark.anyio
async def test_async_discard(make: Factory) -> None:
    """An async writer past max_body_bytes discards at once and stores nothing."""
    storage = make(max_body_bytes=100_000)
    writer = await storage.abegin(KEY, meta())
    await writer.write(b"x" * 60_000)
    assert not is_discarded(writer)
    await writer.write(b"x" * 60_000)
    assert is_discarded(writer)
    await writer.write(b"x")
    assert await writer.commit() is None
    assert await storage.alookup(KEY) == []


@pytest.mark.anyio
async def test_memory_async_runs_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory storage's async methods never hop to a worker thread."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a thread was used")

    monkeypatch.setattr(anyio.to_thread, "run_sync", refuse)
    storage = MemoryCacheStorage()
    writer = await storage.abegin(KEY, meta())
    await writer.write(b"inline")
    stored = await writer.commit()
    assert stored is not None
    assert await storage.alookup(KEY) == [stored]
    chunks = await storage.aopen_body(KEY, stored.id)
    assert chunks is not None
    assert [chunk async for chunk in chunks] == [b"inline"]
    assert await storage.aupdate(KEY, stored.id, meta())
    await storage.aremove(KEY)
    await storage.aclear()
    await storage.aclose()


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options", "error", "words"),
    [
        ("memory", {"max_entries": 0}, ValueError, "MemoryCacheStorage.max_entries.*got 0"),
        ("memory", {"max_entries": True}, TypeError, "max_entries.*True"),
        ("memory", {"max_entries": "10"}, TypeError, "max_entries.*'10'"),
        ("memory", {"max_bytes": 1.5}, TypeError, "max_bytes.*1.5"),
        ("memory", {"max_bytes": 10**400}, ValueError, "max_bytes.*1329 bits"),
        ("memory", {"max_body_bytes": -1}, ValueError, "max_body_bytes.*-1"),
        ("files", {"max_bytes": 0}, ValueError, "FileCacheStorage.max_bytes.*got 0"),
        ("files", {"max_body_bytes": None}, TypeError, "max_body_bytes.*None"),
        ("files", {"path": 123}, TypeError, "FileCacheStorage.path.*123"),
        ("files", {"path": b"/tmp/x"}, TypeError, "FileCacheStorage.path"),
        ("files", {"path": ""}, ValueError, "FileCacheStorage.path.*''"),
    ],
)
def test_bad_configuration_names_the_field(
    tmp_path: Path, kind: str, options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """Bad options fail at construction, naming the field and the value."""
    build: Callable[[], object] = (
        (lambda: MemoryCacheStorage(**options))
        if kind == "memory"
        else (lambda: FileCacheStorage(**{"path": tmp_path, **options}))
    )
    with pytest.raises(error, match=words):
        build()


@pytest.mark.parametrize("bad", ["abc", KEY.upper(), "g" * 64, KEY[:-1], KEY + "\n", 123, None])
def test_bad_keys_are_refused(storage: CacheStorage, bad: Any) -> None:
    """Every method refuses a key that is not a SHA-256 hex digest, naming it."""
    calls: list[Callable[[], object]] = [
        lambda: storage.lookup(bad),
        lambda: storage.open_body(bad, ID),
        lambda: storage.begin(bad, meta()),
        lambda: storage.update(bad, ID, meta()),
        lambda: storage.remove(bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="cache key") as info:
            call()
        assert repr(bad)[:20] in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    key=st.one_of(
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        st.text(alphabet="0123456789abcdefABCDEFg\n", min_size=62, max_size=66),
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda k: k + "\n"),
    )
)
def test_key_check_memo_agrees_with_the_rule(key: str) -> None:
    """A key checked before is accepted from the memo; the memo never admits a bad key."""
    valid = len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    for _ in range(2):  # the second time from the memo, when the first one passed
        if valid:
            _check_key(key)
        else:
            with pytest.raises(ValueError, match="cache key"):
                _check_key(key)
    assert (key in _CHECKED_KEYS) == valid
    assert len(_CHECKED_KEYS) <= _CHECKED_MAX


@pytest.mark.parametrize("bad", ["../../etc/passwd", "0" * 15, ID.upper(), ID + "/", 7])
def test_bad_entry_ids_are_refused(storage: CacheStorage, bad: Any) -> None:
    """Entry ids given back must be ids the storage makes: no path tricks."""
    with pytest.raises(ValueError, match="entry id"):
        storage.open_body(KEY, bad)
    with pytest.raises(ValueError, match="entry id"):
        storage.update(KEY, bad, meta())


def test_begin_refuses_a_meta_of_another_type(storage: CacheStorage) -> None:
    """The meta must be a CachedResponse."""
    with pytest.raises(TypeError, match="CachedResponse"):
        storage.begin(KEY, {"status": 200})  # type: ignore[arg-type]


def test_exported() -> None:
    """The storages are part of the public surface."""
    assert rs.MemoryCacheStorage is MemoryCacheStorage
    assert rs.FileCacheStorage is FileCacheStorage
    assert rs.CacheStorage is CacheStorage
    assert rs.CachedResponse is CachedResponse
    assert issubclass(MemoryCacheStorage, rs.CacheStorage)


# -- the meta format (property-based) -----------------------------------------------------------

pairs = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=30)), max_size=5).map(tuple)
metas = st.builds(
    CachedResponse,
    status=st.integers(100, 599),
    headers=pairs,
    vary=st.none() | pairs,
    request_time=st.floats(0, 1e10),
    response_time=st.floats(0, 1e10),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    size=st.integers(0, 2**40),
    id=st.just(ID),
)


@settings(max_examples=200, deadline=None)
@given(metas, st.integers(0, 2**63))
def test_meta_round_trips(entry: CachedResponse, stamp: int) -> None:
    """Any meta written to a .meta file reads back equal, with its stamp."""
    assert _decode(_encode(KEY, entry, stamp), KEY, ID) == (entry, stamp)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        name: st.just(value) | json_values
        for name, value in {
            "v": 1,
            "key": KEY,
            "id": ID,
            "stored": 5,
            "status": 200,
            "method": "GET",
            "headers": [["a", "b"]],
            "vary": None,
            "request_time": 1.0,
            "response_time": 2.0,
            "size": 3,
        }.items()
    },
)


@settings(max_examples=300, deadline=None)
@given(documents | json_values)
def test_hostile_meta_never_raises(document: Any) -> None:
    """Any JSON in a .meta file either reads as a well-typed meta or as missing, never raises."""
    result = _decode(json.dumps(document).encode(), KEY, ID)
    if result is not None:
        entry, stamp = result
        assert type(entry.status) is int
        assert type(entry.method) is str
        assert all(type(name) is str and type(value) is str for name, value in entry.headers)
        assert entry.size >= 0
        assert stamp >= 0
        assert entry.id == ID


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_bytes_never_raise(raw: bytes) -> None:
    """Arbitrary bytes in a .meta file read as missing."""
    assert _decode(raw, KEY, ID) is None
