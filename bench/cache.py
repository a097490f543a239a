"""Benchmark: the cache layer. A hit against a loopback round trip, and ours against hishel's.

Run ``python bench/cache.py`` (about a minute) or ``python bench/cache.py --quick`` (seconds);
``--json PATH`` also writes every sample. It reuses ``bench/run.py``'s interleaving, tables and
loopback server. Only 127.0.0.1 is ever contacted. Sections:

1. a cache hit against a loopback round trip: sequential ``httpx.Client.get`` to the server
   subprocess, bare, against the same client with ``CacheTransport`` answering from the cache
   (the only miss happens in the warm-up); then the same at the transport level
   (``handle_request`` and a read, no client), which is what the cache itself saves;
2. in-process hits, ``httpx.Client.get`` over ``MockTransport`` answering with
   ``Cache-Control: max-age=3600``: bare (every request reaches the mock) against resilience's
   ``CacheTransport`` (memory storage) and hishel 2's ``CacheTransport`` (SQLite in memory, the
   closest it has to a memory store), in its default mode and in its RFC 9111 mode;
3. in-process misses: the same variants, every request to a new URL, so each one is looked up,
   fetched and stored;
4. in-process hits with ``httpx.AsyncClient``: bare against resilience (hishel's async storage
   needs the ``anysqlite`` extra, so it is left out).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import hishel
import hishel.httpx
import httpx
import run as bench  # bench/run.py, beside this script

import resilience

BARE = "httpx"
OURS = "resilience"
HISHEL = "hishel"
HISHEL_RFC = "hishel-rfc"
VARIANTS = (BARE, OURS, HISHEL, HISHEL_RFC)
LOOPBACK = "httpx loopback"
HIT = "resilience hit"

FRESH = {"cache-control": "max-age=3600"}


@dataclasses.dataclass(frozen=True)
class Config:
    rounds: int
    repeats: int
    calls: int  # per in-process batch
    requests: int  # per loopback batch
    quick: bool


FULL = Config(rounds=5, repeats=3, calls=2000, requests=2000, quick=False)
QUICK = Config(rounds=2, repeats=1, calls=300, requests=200, quick=True)


def fresh(request: httpx.Request) -> httpx.Response:
    """The mock origin: a small cacheable response."""
    return httpx.Response(200, headers=FRESH, content=b"ok")


class MakeCacheable(httpx.BaseTransport):
    """Adds ``max-age`` to the loopback server's plain ``200 ok`` so it can be cached."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.headers.update(FRESH)
        return response

    def close(self) -> None:
        self.inner.close()


def hishel_storage() -> Any:
    return hishel.SqliteStorage(connection=sqlite3.connect(":memory:", check_same_thread=False))


def transport(variant: str, inner: httpx.BaseTransport) -> httpx.BaseTransport:
    if variant == OURS:
        return resilience.CacheTransport(inner, resilience.Cache())
    if variant == HISHEL:
        return hishel.httpx.CacheTransport(inner, storage=hishel_storage())
    if variant == HISHEL_RFC:
        return hishel.httpx.CacheTransport(inner, storage=hishel_storage(), rfc=True)
    return inner


def timed(calls: int, send: Callable[[int], object]) -> float:
    with bench.quiet_gc():
        start = time.perf_counter_ns()
        for index in range(calls):
            send(index)
        elapsed = time.perf_counter_ns() - start
    return elapsed / calls / 1000


def check(response: httpx.Response, variant: str, expect_hit: bool | None) -> None:
    if response.status_code != 200 or response.content != b"ok":
        raise RuntimeError(f"{variant}: unexpected response {response!r}")
    if expect_hit is None:
        return
    caching = response.extensions.get("caching") or {}
    hit = response.extensions.get("resilience.cache") == "hit" or bool(caching.get("from_cache"))
    if hit != expect_hit:
        raise RuntimeError(f"{variant}: expected hit={expect_hit}, got {response.extensions}")


def bench_inprocess(cfg: Config, misses: bool) -> bench.Section:
    kind = "misses (a new URL every request)" if misses else "hits"
    section = bench.Section(
        "cache_inprocess_misses" if misses else "cache_inprocess_hits",
        f"in-process cache {kind}: httpx.Client.get over MockTransport (max-age=3600)",
        "us",
        batch=cfg.calls,
        warmup=cfg.calls,
        repeats=cfg.repeats,
        variants=VARIANTS,
        versus=(OURS, HISHEL),
    )
    clients = {
        v: httpx.Client(transport=transport(v, httpx.MockTransport(fresh))) for v in VARIANTS
    }
    counter = itertools.count()

    def runner(variant: str) -> bench.SyncRunner:
        client = clients[variant]
        get = client.get
        check(get(bench.MOCK_URL), variant, None)
        if not misses:
            check(get(bench.MOCK_URL), variant, None if variant == BARE else True)
            return lambda calls: timed(calls, lambda _: get(bench.MOCK_URL))

        def miss(_: int) -> None:
            get(f"{bench.MOCK_URL}?n={next(counter)}").read()

        return lambda calls: timed(calls, miss)

    try:
        return bench.interleave(section, cfg.rounds, {v: runner(v) for v in VARIANTS})
    finally:
        for client in clients.values():
            client.close()


def bench_async_hits(cfg: Config) -> bench.Section:
    section = bench.Section(
        "cache_inprocess_hits_async",
        "in-process cache hits: httpx.AsyncClient.get over MockTransport (sequential awaits)",
        "us",
        batch=cfg.calls,
        warmup=cfg.calls,
        repeats=cfg.repeats,
        variants=(BARE, OURS),
        versus=None,
    )

    async def main() -> bench.Section:
        clients = {
            BARE: httpx.AsyncClient(transport=httpx.MockTransport(fresh)),
            OURS: httpx.AsyncClient(
                transport=resilience.CacheTransport(httpx.MockTransport(fresh), resilience.Cache())
            ),
        }

        async def runner(variant: str) -> bench.AsyncRunner:
            get = clients[variant].get
            await get(bench.MOCK_URL)

            async def run(calls: int) -> float:
                with bench.quiet_gc():
                    start = time.perf_counter_ns()
                    for _ in range(calls):
                        await get(bench.MOCK_URL)
                    elapsed = time.perf_counter_ns() - start
                return elapsed / calls / 1000

            return run

        try:
            runners = {v: await runner(v) for v in section.variants}
            return await bench.ainterleave(section, cfg.rounds, runners)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(main())


def bench_hit_vs_loopback(cfg: Config, url: str, level: str) -> bench.Section:
    """``level="client"``: ``Client.get``; ``"transport"``: ``handle_request`` and a read."""
    how = (
        "httpx.Client.get"
        if level == "client"
        else "transport.handle_request(request) + read, no client"
    )
    section = bench.Section(
        f"cache_hit_vs_loopback_{level}",
        f"a cache hit against a loopback round trip: {how}, sequential",
        "rps",
        batch=cfg.requests,
        warmup=max(cfg.requests // 4, 50),
        repeats=cfg.repeats,
        variants=(LOOPBACK, HIT),
        baseline=LOOPBACK,
        versus=None,
    )
    pool = httpx.Limits(keepalive_expiry=bench.KEEPALIVE_EXPIRY)
    transports: dict[str, httpx.BaseTransport] = {
        LOOPBACK: httpx.HTTPTransport(limits=pool),
        HIT: resilience.CacheTransport(
            MakeCacheable(httpx.HTTPTransport(limits=pool)), resilience.Cache()
        ),
    }
    clients = {v: httpx.Client(transport=t) for v, t in transports.items()}

    def runner(variant: str) -> bench.SyncRunner:
        get = clients[variant].get
        check(get(url), variant, None)
        if variant == HIT:
            check(get(url), variant, True)
        if level == "client":
            send: Callable[[], object] = lambda: get(url)  # noqa: E731
        else:
            handle = transports[variant].handle_request
            request = httpx.Request("GET", url)

            def send() -> object:
                response = handle(request)
                response.read()
                response.close()
                return response

        def run(count: int) -> float:
            with bench.quiet_gc():
                start = time.perf_counter()
                for _ in range(count):
                    send()
                elapsed = time.perf_counter() - start
            return count / elapsed

        return run

    try:
        return bench.interleave(section, cfg.rounds, {v: runner(v) for v in section.variants})
    finally:
        for client in clients.values():
            client.close()


def summarize(sections: dict[str, bench.Section]) -> tuple[str, dict[str, Any]]:
    loop = sections["cache_hit_vs_loopback_transport"]
    loop_client = sections["cache_hit_vs_loopback_client"]
    hits, misses = sections["cache_inprocess_hits"], sections["cache_inprocess_misses"]
    hits_async = sections["cache_inprocess_hits_async"]
    speedup = loop.median(HIT) / loop.median(LOOPBACK)
    speedup_client = loop_client.median(HIT) / loop_client.median(LOOPBACK)

    def versus(section: bench.Section, peer: str) -> str:
        ours, theirs = section.median(OURS), section.median(peer)
        return f"{peer} {theirs:.1f} {bench.US} (ours {theirs / ours:.2f}x faster)"

    text = (
        f"SUMMARY: a cache hit is {speedup:.1f}x faster than a loopback round trip at the "
        f"transport ({loop.median(HIT):.0f} vs {loop.median(LOOPBACK):.0f} req/s; target >= 10x); "
        f"{speedup_client:.1f}x through Client.get, whose own work is the same for both\n"
        f"SUMMARY: in-process hit per Client.get: {OURS} {hits.median(OURS):.1f} {bench.US}, "
        f"{versus(hits, HISHEL)}, {versus(hits, HISHEL_RFC)}; bare {hits.median(BARE):.1f}\n"
        f"SUMMARY: in-process miss+store per Client.get: {OURS} {misses.median(OURS):.1f} "
        f"{bench.US}, {versus(misses, HISHEL)}, {versus(misses, HISHEL_RFC)}; bare "
        f"{misses.median(BARE):.1f}\n"
        f"SUMMARY: async in-process hit: {OURS} {hits_async.median(OURS):.1f} {bench.US} vs bare "
        f"{hits_async.median(BARE):.1f} {bench.US}"
    )
    data = {
        "hit_speedup_vs_loopback": speedup,
        "hit_speedup_vs_loopback_through_client": speedup_client,
        "hit_us": {v: hits.median(v) for v in VARIANTS},
        "miss_us": {v: misses.median(v) for v in VARIANTS},
        "async_hit_us": {v: hits_async.median(v) for v in hits_async.variants},
    }
    return text, data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/cache.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    began = time.perf_counter()
    versions = {name: version(name) for name in ("httpx", "resilience", "hishel")}
    print(
        "resilience cache benchmark "
        f"({'quick' if cfg.quick else 'full'}, {cfg.rounds} rounds): "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        flush=True,
    )
    sections: dict[str, bench.Section] = {}
    number = itertools.count(1)

    def report(section: bench.Section) -> None:
        sections[section.key] = section
        print(bench.format_section(next(number), section, cfg.rounds), flush=True)
        print(flush=True)

    with tempfile.TemporaryFile() as server_log:
        server = bench.Server(server_log)
        try:
            report(bench_hit_vs_loopback(cfg, server.url, "client"))
            report(bench_hit_vs_loopback(cfg, server.url, "transport"))
        finally:
            server.stop()
    report(bench_inprocess(cfg, misses=False))
    report(bench_inprocess(cfg, misses=True))
    report(bench_async_hits(cfg))
    text, data = summarize(sections)
    print(text)
    elapsed = time.perf_counter() - began
    print(f"(took {elapsed:.1f} s)")
    if args.json:
        document = {
            "versions": versions,
            "config": dataclasses.asdict(cfg),
            "sections": {key: section.to_json() for key, section in sections.items()},
            "summary": data,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
