"""Benchmark: what each layer of ``Stack.default()`` costs, alone and together, in-process.

Run ``python bench/layers.py`` (about a minute) or ``python bench/layers.py --quick`` (seconds).
Nothing leaves the process: every request is answered by ``httpx.MockTransport``.

This is the tool for ranking hot-path work: the loopback sections of ``bench/run.py`` cannot
tell a few microseconds apart on a shared machine, while paired in-process batches can. Each
variant is a one-layer ``Stack`` holding that layer of ``Stack.default()`` (the log variant has
both of its scopes), plus the whole default stack, the stack without its log layers, and the
retry layer without its deadline. Variants run back to back in every pass, the starting variant
rotating, each batch with the garbage collector off; each variant's overhead is the median over
passes of (its µs per request minus bare httpx's in the same pass).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

import resilience as rs

URL = "http://127.0.0.1/layers"  # never connected to: MockTransport answers it


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def variants() -> dict[str, Callable[[Any], Any]]:
    """Name -> a function wrapping the inner transport the way that variant does."""
    default = rs.Stack.default()
    retry, cache, breaker, log = default.retry, default.cache, default.breaker, default.log
    if retry is None or cache is None or breaker is None or log is None:
        raise RuntimeError(f"Stack.default() lost a layer: {default}")
    return {
        "httpx": lambda inner: inner,
        "Stack.default()": default.transport,
        "no log": default.replace(log=None).transport,
        "cache": rs.Stack(cache=cache).transport,
        "retry": rs.Stack(retry=retry).transport,
        "retry, no deadline": rs.Stack(retry=retry.replace(deadline=None)).transport,
        "breaker": rs.Stack(breaker=breaker).transport,
        "log": rs.Stack(log=log).transport,
    }


def _orders(names: list[str], passes: int) -> list[list[str]]:
    return [names[i % len(names) :] + names[: i % len(names)] for i in range(passes)]


def _timed(run: Callable[[], object], calls: int) -> float:
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        for _ in range(calls):
            run()
        return (time.perf_counter_ns() - started) / calls / 1000
    finally:
        gc.enable()


def measure_sync(passes: int, calls: int) -> dict[str, list[float]]:
    clients = {
        name: httpx.Client(transport=wrap(httpx.MockTransport(ok)), trust_env=False)
        for name, wrap in variants().items()
    }
    try:
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():  # warm-up
            _timed(lambda client=client: client.get(URL), calls)
        for order in _orders(list(clients), passes):
            for name in order:
                client = clients[name]
                samples[name].append(_timed(lambda client=client: client.get(URL), calls))
        return samples
    finally:
        for client in clients.values():
            client.close()


async def _ameasure(passes: int, calls: int) -> dict[str, list[float]]:
    clients = {
        name: httpx.AsyncClient(transport=wrap(httpx.MockTransport(ok)), trust_env=False)
        for name, wrap in variants().items()
    }

    async def batch(client: httpx.AsyncClient, count: int) -> float:
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter_ns()
            for _ in range(count):
                await client.get(URL)
            return (time.perf_counter_ns() - started) / count / 1000
        finally:
            gc.enable()

    try:
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():
            await batch(client, calls)
        for order in _orders(list(clients), passes):
            for name in order:
                samples[name].append(await batch(clients[name], calls))
        return samples
    finally:
        for client in clients.values():
            await client.aclose()


def table(title: str, samples: dict[str, list[float]]) -> str:
    bare = samples["httpx"]
    lines = [title, f"    {'variant':20} {'median µs/req':>14} {'overhead vs bare (paired)':>27}"]
    for name, values in samples.items():
        paired = statistics.median(mine - theirs for mine, theirs in zip(values, bare, strict=True))
        shown = "-" if name == "httpx" else f"{paired:+.2f} µs/req"
        lines.append(f"    {name:20} {statistics.median(values):14.2f} {shown:>27}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/layers.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--passes", type=int, default=None, help="passes (default 15; quick 2)")
    args = parser.parse_args(argv)
    passes = args.passes or (2 if args.quick else 15)
    calls = 200 if args.quick else 2000
    if passes < 1:
        parser.error("--passes must be at least 1")
    print(f"{passes} passes of {calls} calls per variant; CPython {sys.version.split()[0]}")
    print(table("[1] httpx.Client.get over MockTransport", measure_sync(passes, calls)))
    samples = asyncio.run(_ameasure(passes, calls))
    print(table("[2] httpx.AsyncClient.get over MockTransport", samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
