"""Benchmark: the cost of resilience's retry, rate-limit and breaker layers next to bare httpx.

Run ``python bench/run.py`` (about 3 minutes), ``python bench/run.py --quick`` (a smoke run of
well under a minute) or ``python bench/run.py --rounds 9 --json results.json``. See
bench/README.md.

Sections 1 to 6 measure three variants (bare httpx, httpx + resilience's RetryTransport with
``Retry()``, httpx + httpx-retries' RetryTransport with its ``Retry()``):

1. in-process, ``httpx.Client.get`` over ``httpx.MockTransport``: microseconds per request;
2. the same with ``httpx.AsyncClient`` and sequential awaits;
3. the transport layer alone: ``transport.handle_request(request)`` on a pre-built request;
4. the same for ``await transport.handle_async_request(request)``;
5. loopback HTTP/1.1 to a server in a subprocess, sequential ``httpx.Client.get``: req/s;
6. loopback with ``httpx.AsyncClient``, ``concurrency`` requests in flight: req/s.

Sections 7 to 12 measure the rate-limit and breaker layers (``RateLimitTransport``,
``CircuitBreakerTransport``, ``acquire``):

7. the transport layers, sync: bare, RateLimitTransport alone (moving and fixed window, a limit
   that never binds), CircuitBreakerTransport alone (closed), RetryTransport alone,
   RetryTransport over RateLimitTransport, and all three in the documented order (retry over
   breaker over rate limit);
8. the same, async;
9. loopback, sequential: bare httpx vs retry over rate limit vs all three;
10. loopback, ``concurrency`` in flight: the same three;
11. accuracy on the real clock: ``"20/second"`` with many callers, achieved rate and the most
    acquisitions seen in any one-second window (``acquire_async`` with tasks, ``acquire`` with
    threads, no HTTP);
12. ``acquire_async`` against aiolimiter and pyrate-limiter: microseconds per acquisition when
    the limit never binds, next to each one's accuracy at ``"20/second"``.

Variants are interleaved within every round (the starting variant rotates from one pass to the
next), a warm-up batch of each runs first, and the median over the samples is reported. In the
loopback sections the variants take turns within each pass (request by request when sequential,
by chunks of 20 requests when concurrent), so slow drift of the machine cancels out of the
per-pass ratios. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from types import FrameType
from typing import IO, Any, Literal, TypeAlias, TypeVar

import httpx
import httpx_retries
import ratelimit as rl  # bench/ratelimit.py, beside this script

import resilience
from resilience._ratelimit import Strategy, acquire, acquire_async

BARE = "httpx"
OURS = "resilience"
PEER = "httpx-retries"
VARIANTS: tuple[str, ...] = (BARE, OURS, PEER)

# the rate-limit sections (7-10)
LIMIT = "ratelimit"  # RateLimitTransport, moving window (the default), never binding
LIMIT_FIXED = "ratelimit-fixed"  # the same with the fixed window
RETRY = "retry"  # RetryTransport(inner, Retry()): the "resilience" variant of sections 1-6
BREAKER = "breaker"  # CircuitBreakerTransport(inner, CircuitBreaker()), always closed
STACK = "retry+ratelimit"  # RetryTransport(RateLimitTransport(inner, limit), Retry())
# the three layers in the documented order: RetryTransport(CircuitBreakerTransport(
# RateLimitTransport(inner, limit), CircuitBreaker()), Retry())
ALL3 = "retry+breaker+ratelimit"
LAYER_VARIANTS: tuple[str, ...] = (BARE, LIMIT, LIMIT_FIXED, BREAKER, RETRY, STACK, ALL3)

# the whole stack (sections 13-16): rs.Stack.default() (log, cache, retry with a budget,
# breaker), its log filtered out by the stdlib level (nothing configured: WARNING), and the same
# stack without the log layers
DEFAULT = "Stack.default()"
DEFAULT_NOLOG = "Stack.default() no log"
DEFAULT_VARIANTS: tuple[str, ...] = (BARE, DEFAULT, DEFAULT_NOLOG)
STACK_VARIANTS: tuple[str, ...] = (BARE, STACK, ALL3)

# the limiter sections (11, 12)
LIM_OURS = "resilience"  # acquire_async, moving window
LIM_OURS_FIXED = "resilience-fixed"  # acquire_async, fixed window
LIM_AIO = rl.AioLimiterPeer.name
LIM_PYRATE = rl.PyratePeer.name
LIMITERS: tuple[str, ...] = (LIM_OURS, LIM_OURS_FIXED, LIM_AIO, LIM_PYRATE)

# hits already in the moving window when its cost is measured (the note under section 12)
OCCUPANCY: tuple[int, ...] = (0, 25_000, 50_000, 100_000)

Transport = TypeVar("Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)

Unit: TypeAlias = Literal["us", "rps"]
_T = TypeVar("_T")
SyncRunner: TypeAlias = Callable[[int], float]  # batch size -> µs per call, or req/s
AsyncRunner: TypeAlias = Callable[[int], Awaitable[float]]

MOCK_URL = "http://127.0.0.1/bench"  # never connected to: MockTransport answers it
# Loopback pools keep idle connections this long (httpx's default is 5 s). While one variant is
# measured the others' pools sit idle for several seconds; with the default, their connections
# would expire and every batch would start by opening a new pool of connections, which is
# several times slower in httpx's async pool and measures connection setup instead of requests.
KEEPALIVE_EXPIRY = 120.0


def _printable(text: str, fallback: str) -> str:
    """``text`` if stdout can encode it, else ``fallback``."""
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return fallback
    return text


US = _printable("\u00b5s", "us")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    """How much work each sample does, and how many samples are taken."""

    rounds: int
    repeats: int  # interleaved passes per round, in-process sections
    loopback_repeats: tuple[int, int]  # passes per round in the (sync, async) loopback sections
    client_calls: int  # per in-process client batch (sections 1, 2)
    layer_calls: int  # per in-process transport-layer batch (sections 3, 4, 7, 8)
    sync_requests: int  # per sequential loopback batch (sections 5, 9)
    async_requests: int  # per concurrent loopback batch (sections 6, 10)
    concurrency: int  # requests in flight in sections 6, 10, 16 (and the pool size): README
    limiter_calls: int  # acquisitions per batch (section 12)
    accuracy_seconds: float  # length of each accuracy run (sections 11, 12)
    accuracy_tasks: int  # concurrent async callers in an accuracy run
    accuracy_threads: int  # threads in the sync accuracy run
    occupancy_calls: int  # timed acquisitions at each fill level of the moving window
    quick: bool


FULL = Config(
    rounds=5,
    repeats=3,
    # Loopback: many short passes rather than a few long ones. The variants of one pass run
    # within a second or two of each other, so the per-pass ratios hardly see the machine's
    # drift; the verdict is the median of those ratios (README, "Method").
    loopback_repeats=(15, 5),
    client_calls=2000,
    layer_calls=10000,
    sync_requests=400,
    async_requests=400,
    concurrency=10,
    limiter_calls=10000,
    accuracy_seconds=5.0,
    accuracy_tasks=50,
    accuracy_threads=8,
    occupancy_calls=2000,
    quick=False,
)
QUICK = Config(
    rounds=2,
    repeats=1,
    loopback_repeats=(1, 1),
    client_calls=300,
    layer_calls=3000,
    sync_requests=200,
    async_requests=300,
    concurrency=10,
    limiter_calls=3000,
    accuracy_seconds=2.0,
    accuracy_tasks=50,
    accuracy_threads=8,
    occupancy_calls=1000,
    quick=True,
)


# --------------------------------------------------------------------------- results


@dataclass
class Section:
    """The samples of one measurement, one list per variant, and what to make of them.

    ``samples[v][i]`` were taken in the same pass for every variant, so they can be paired.
    """

    key: str
    title: str
    unit: Unit
    batch: int  # calls or requests per sample
    warmup: int  # calls or requests in each variant's warm-up batch
    repeats: int = 1  # passes per round
    samples: dict[str, list[float]] = field(default_factory=dict)
    variants: tuple[str, ...] = VARIANTS
    baseline: str = BARE  # what the cost column divides by
    versus: tuple[str, str] | None = (OURS, PEER)  # the pair compared on the last line
    items: str | None = None  # what a batch counts, when not "calls" or "requests"
    turns: str = ""  # how the variants take turns within a pass ("" for back-to-back batches)

    @property
    def item(self) -> str:
        if self.items is not None:
            return self.items
        return "calls" if self.unit == "us" else "requests"

    def median(self, variant: str) -> float:
        return statistics.median(self.samples[variant])

    def costs(self, variant: str) -> list[float]:
        """Each sample as microseconds per request (wall time per request for req/s)."""
        values = self.samples[variant]
        return values if self.unit == "us" else [1e6 / value for value in values]

    def us_per_request(self, variant: str) -> float:
        """The median as microseconds per request."""
        value = self.median(variant)
        return value if self.unit == "us" else 1e6 / value

    def ratio(self, variant: str) -> float:
        """Cost relative to the baseline, median against median: above 1.00 is slower."""
        return self.us_per_request(variant) / self.us_per_request(self.baseline)

    def paired_ratios(self, variant: str) -> list[float]:
        """Each pass's cost relative to the baseline's in the same pass."""
        pairs = zip(self.costs(variant), self.costs(self.baseline), strict=True)
        return [cost / bare for cost, bare in pairs]

    def paired_ratio(self, variant: str) -> float:
        """The median of the per-pass ratios to the baseline (robust to slow drift)."""
        return statistics.median(self.paired_ratios(variant))

    def paired_spread(self, variant: str) -> tuple[float, float]:
        """The middle half of the per-pass ratios (first and third quartiles)."""
        ratios = self.paired_ratios(variant)
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        first, _, third = statistics.quantiles(ratios, n=4)
        return first, third

    def overhead_us(self, variant: str) -> float:
        """Extra microseconds per request over the baseline (median against median)."""
        return self.us_per_request(variant) - self.us_per_request(self.baseline)

    def wins(self, variant: str, other: str) -> int:
        """In how many passes ``variant`` cost less than ``other`` (samples are paired)."""
        pairs = zip(self.costs(variant), self.costs(other), strict=True)
        return sum(mine < theirs for mine, theirs in pairs)

    @property
    def passes(self) -> int:
        return len(self.samples[self.baseline])

    def to_json(self) -> dict[str, Any]:
        vs = "bare" if self.baseline == BARE else self.baseline.replace("-", "_")
        variants = self.variants
        data: dict[str, Any] = {
            "title": self.title,
            "unit": "us_per_request" if self.unit == "us" else "requests_per_second",
            "batch": self.batch,
            "batch_counts": self.item,
            "warmup": self.warmup,
            "repeats_per_round": self.repeats,
            "variants_take_turns": self.turns or None,
            "baseline": self.baseline,
            "samples": self.samples,
            "median": {v: self.median(v) for v in variants},
            "min": {v: min(self.samples[v]) for v in variants},
            "max": {v: max(self.samples[v]) for v in variants},
            f"cost_ratio_vs_{vs}": {v: self.ratio(v) for v in variants},
            f"paired_cost_ratio_vs_{vs}": {v: self.paired_ratio(v) for v in variants},
            f"overhead_us_vs_{vs}": {v: self.overhead_us(v) for v in variants},
            f"overhead_percent_vs_{vs}": {v: (self.ratio(v) - 1) * 100 for v in variants},
            "passes": self.passes,
            f"passes_slower_than_{vs}": {v: self.wins(self.baseline, v) for v in variants},
        }
        if self.versus == (OURS, PEER):
            data["passes_resilience_cheaper_than_peer"] = self.wins(OURS, PEER)
        elif self.versus is not None:
            mine, other = self.versus
            data["versus"] = {
                "variant": mine,
                "other": other,
                "delta_us": self.us_per_request(mine) - self.us_per_request(other),
                "passes_cheaper": self.wins(mine, other),
            }
        return data


# --------------------------------------------------------------------------- scheduling


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect garbage, then keep the collector off while a batch is timed."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _orders(variants: tuple[str, ...], passes: int) -> Iterator[tuple[str, ...]]:
    """The variant order of each pass: ABC, BCA, CAB, ABC, ..."""
    for index in range(passes):
        shift = index % len(variants)
        yield variants[shift:] + variants[:shift]


def interleave(section: Section, rounds: int, runners: dict[str, SyncRunner]) -> Section:
    """Warm every variant up once, then take one sample of each per pass, interleaved."""
    for variant in section.variants:
        runners[variant](section.warmup)
    section.samples = {variant: [] for variant in section.variants}
    for order in _orders(section.variants, rounds * section.repeats):
        for variant in order:
            section.samples[variant].append(runners[variant](section.batch))
    return section


def alternate(section: Section, rounds: int, calls: dict[str, Callable[[], int]]) -> Section:
    """Like :func:`interleave`, but within a pass the variants take turns request by request.

    Each request is timed on its own and a variant's sample is its requests' total time, so
    neighbouring requests of every variant share the machine's state of the moment: slow drift
    (frequency, other tenants) cancels out of the per-pass ratios instead of landing on
    whichever variant's batch it hit. ``calls[v]()`` sends one request and returns its status.
    """
    for variant in section.variants:
        for _ in range(section.warmup):
            calls[variant]()
    section.samples = {variant: [] for variant in section.variants}
    clock = time.perf_counter_ns
    for order in _orders(section.variants, rounds * section.repeats):
        turns = [(variant, calls[variant]) for variant in order]
        spent = dict.fromkeys(order, 0)
        failed = dict.fromkeys(order, 0)
        with quiet_gc():
            for _ in range(section.batch):
                for variant, call in turns:
                    start = clock()
                    status = call()
                    spent[variant] += clock() - start
                    if status != 200:
                        failed[variant] += 1
        for variant in order:
            if failed[variant]:
                raise RuntimeError(
                    f"{variant}: {failed[variant]} of {section.batch} loopback requests failed"
                )
            section.samples[variant].append(section.batch / (spent[variant] / 1e9))
    return section


async def aalternate(
    section: Section, rounds: int, chunks: dict[str, Callable[[int], Awaitable[int]]], size: int
) -> Section:
    """:func:`alternate` for requests in flight together: the variants take turns by chunks.

    ``chunks[v](n)`` sends ``n`` requests (several in flight) and returns the nanoseconds they
    took; within a pass the variants alternate chunk by chunk, ``size`` requests each, so one
    variant's requests never share the event loop with another's.
    """
    for variant in section.variants:
        await chunks[variant](section.warmup)
    section.samples = {variant: [] for variant in section.variants}
    turns = max(1, section.batch // size)
    for order in _orders(section.variants, rounds * section.repeats):
        spent = dict.fromkeys(order, 0)
        with quiet_gc():
            for _ in range(turns):
                for variant in order:
                    spent[variant] += await chunks[variant](size)
        for variant in order:
            section.samples[variant].append(turns * size / (spent[variant] / 1e9))
    return section


async def ainterleave(section: Section, rounds: int, runners: dict[str, AsyncRunner]) -> Section:
    """:func:`interleave` for coroutines."""
    for variant in section.variants:
        await runners[variant](section.warmup)
    section.samples = {variant: [] for variant in section.variants}
    for order in _orders(section.variants, rounds * section.repeats):
        for variant in order:
            section.samples[variant].append(await runners[variant](section.batch))
    return section


# --------------------------------------------------------------------------- transports


def ok(request: httpx.Request) -> httpx.Response:
    """The MockTransport handler: a fresh ``200 ok`` for every request."""
    return httpx.Response(200, content=b"ok")


def wrap(variant: str, inner: Transport) -> Transport:
    """``inner`` as the variant uses it: bare, or under the layers the variant names.

    Each rate-limited variant gets a fresh :func:`ratelimit.never_binding` policy, so no two
    variants share counts.
    """
    if variant in (OURS, RETRY):
        return resilience.RetryTransport(inner, resilience.Retry())
    if variant == PEER:
        return httpx_retries.RetryTransport(inner, httpx_retries.Retry())
    if variant == LIMIT:
        return resilience.RateLimitTransport(inner, rl.never_binding())
    if variant == LIMIT_FIXED:
        return resilience.RateLimitTransport(inner, rl.never_binding("fixed-window"))
    if variant == BREAKER:
        return resilience.CircuitBreakerTransport(inner, resilience.CircuitBreaker())
    if variant == STACK:
        limited = resilience.RateLimitTransport(inner, rl.never_binding())
        return resilience.RetryTransport(limited, resilience.Retry())
    if variant == ALL3:
        limited = resilience.RateLimitTransport(inner, rl.never_binding())
        broken = resilience.CircuitBreakerTransport(limited, resilience.CircuitBreaker())
        return resilience.RetryTransport(broken, resilience.Retry())
    if variant == DEFAULT:
        return resilience.Stack.default()._build(inner)  # what stack.transport(inner) does
    if variant == DEFAULT_NOLOG:
        return resilience.Stack.default().replace(log=None)._build(inner)
    if variant == BARE:
        return inner
    raise ValueError(f"unknown variant {variant!r}")


def wrap_sync(variant: str, inner: httpx.BaseTransport) -> httpx.BaseTransport:
    return wrap(variant, inner)


def wrap_async(variant: str, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    return wrap(variant, inner)


def _layers(transport: object) -> list[object]:
    """The chain of transports: the outermost first, each the ``.transport`` of the one before."""
    chain = [transport]
    ours = (
        resilience.RetryTransport,
        resilience.RateLimitTransport,
        resilience.CircuitBreakerTransport,
        resilience.CacheTransport,
        resilience.LogTransport,
    )
    while isinstance(chain[-1], ours):
        chain.append(chain[-1].transport)
    return chain


def policies(transport: object) -> list[resilience.RateLimit]:
    """The rate-limit policies found in ``transport``'s chain of layers."""
    return [
        t.rate_limit for t in _layers(transport) if isinstance(t, resilience.RateLimitTransport)
    ]


def check_wrapping(transport: object, variant: str) -> None:
    """Fail loudly if a client is not using the transports the variant names."""
    expected: tuple[type[object], ...] = {
        BARE: (object,),
        OURS: (resilience.RetryTransport, object),
        RETRY: (resilience.RetryTransport, object),
        PEER: (httpx_retries.RetryTransport,),
        LIMIT: (resilience.RateLimitTransport, object),
        LIMIT_FIXED: (resilience.RateLimitTransport, object),
        BREAKER: (resilience.CircuitBreakerTransport, object),
        STACK: (resilience.RetryTransport, resilience.RateLimitTransport, object),
        ALL3: (
            resilience.RetryTransport,
            resilience.CircuitBreakerTransport,
            resilience.RateLimitTransport,
            object,
        ),
        DEFAULT: (
            resilience.LogTransport,
            resilience.CacheTransport,
            resilience.RetryTransport,
            resilience.CircuitBreakerTransport,
            resilience.LogTransport,
            object,
        ),
        DEFAULT_NOLOG: (
            resilience.CacheTransport,
            resilience.RetryTransport,
            resilience.CircuitBreakerTransport,
            object,
        ),
    }[variant]
    chain = _layers(transport)
    if len(chain) != len(expected) or not all(map(isinstance, chain, expected)):
        raise RuntimeError(f"{variant}: the client uses {transport!r}")
    for policy in policies(transport):
        strategy = "fixed-window" if variant == LIMIT_FIXED else "moving-window"
        if policy.rate != rl.NEVER_RATE or policy.strategy != strategy:
            raise RuntimeError(f"{variant}: unexpected rate limit {policy!r}")


def check_response(response: httpx.Response, variant: str) -> None:
    if response.status_code != 200 or response.content != b"ok":
        raise RuntimeError(f"{variant}: unexpected response {response!r} {response.content!r}")


# --------------------------------------------------------------------------- in-process


def client_section(cfg: Config, key: str, title: str, variants: tuple[str, ...]) -> Section:
    return Section(
        key,
        title,
        "us",
        batch=cfg.client_calls,
        warmup=cfg.client_calls,
        repeats=cfg.repeats,
        variants=variants,
        versus=(OURS, PEER) if variants == VARIANTS else None,
    )


def bench_client_sync(cfg: Config, section: Section | None = None) -> Section:
    if section is None:
        title = "in-process: httpx.Client.get over MockTransport"
        section = client_section(cfg, "inprocess_client_sync", title, VARIANTS)
    clients = {
        v: httpx.Client(transport=wrap_sync(v, httpx.MockTransport(ok)), trust_env=False)
        for v in section.variants
    }

    def runner(variant: str) -> SyncRunner:
        client = clients[variant]
        check_wrapping(client._transport, variant)
        check_response(client.get(MOCK_URL), variant)
        get = client.get

        def run(calls: int) -> float:
            with quiet_gc():
                start = time.perf_counter_ns()
                for _ in range(calls):
                    get(MOCK_URL)
                elapsed = time.perf_counter_ns() - start
            return elapsed / calls / 1000

        return run

    try:
        return interleave(section, cfg.rounds, {v: runner(v) for v in section.variants})
    finally:
        for client in clients.values():
            client.close()


def bench_client_async(cfg: Config, section: Section | None = None) -> Section:
    if section is None:
        title = "in-process: httpx.AsyncClient.get over MockTransport (sequential awaits)"
        section = client_section(cfg, "inprocess_client_async", title, VARIANTS)

    async def main(section: Section) -> Section:
        clients = {
            v: httpx.AsyncClient(transport=wrap_async(v, httpx.MockTransport(ok)), trust_env=False)
            for v in section.variants
        }

        async def runner(variant: str) -> AsyncRunner:
            client = clients[variant]
            check_wrapping(client._transport, variant)
            check_response(await client.get(MOCK_URL), variant)
            get = client.get

            async def run(calls: int) -> float:
                with quiet_gc():
                    start = time.perf_counter_ns()
                    for _ in range(calls):
                        await get(MOCK_URL)
                    elapsed = time.perf_counter_ns() - start
                return elapsed / calls / 1000

            return run

        try:
            runners = {v: await runner(v) for v in section.variants}
            return await ainterleave(section, cfg.rounds, runners)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(main(section))


def _resetter(transport: object, request: httpx.Request) -> Callable[[], None]:
    """Empties the rate-limit windows of ``transport``'s layers for ``request``'s key.

    Called before every batch (untimed), so a moving window holds at most one batch of hits.
    """
    found = policies(transport)
    key = resilience.per_host(request)  # the key RateLimitTransport uses by default

    def reset() -> None:
        for policy in found:
            rl.reset(policy, key)

    return reset


def layer_section(
    cfg: Config,
    key: str,
    title: str,
    variants: tuple[str, ...],
    versus: tuple[str, str] | None,
) -> Section:
    return Section(
        key,
        title,
        "us",
        batch=cfg.layer_calls,
        warmup=cfg.layer_calls,
        repeats=cfg.repeats,
        variants=variants,
        versus=versus,
    )


def bench_layer_sync(cfg: Config, section: Section | None = None) -> Section:
    if section is None:
        section = layer_section(
            cfg,
            "inprocess_layer_sync",
            "transport layer only: transport.handle_request(request), pre-built request",
            VARIANTS,
            (OURS, PEER),
        )

    def runner(variant: str) -> SyncRunner:
        transport = wrap_sync(variant, httpx.MockTransport(ok))
        check_wrapping(transport, variant)
        request = httpx.Request("GET", MOCK_URL)
        check_response(transport.handle_request(request), variant)
        handle = transport.handle_request
        reset = _resetter(transport, request)

        def run(calls: int) -> float:
            reset()
            with quiet_gc():
                start = time.perf_counter_ns()
                for _ in range(calls):
                    handle(request)
                elapsed = time.perf_counter_ns() - start
            return elapsed / calls / 1000

        return run

    return interleave(section, cfg.rounds, {v: runner(v) for v in section.variants})


def bench_layer_async(cfg: Config, section: Section | None = None) -> Section:
    if section is None:
        section = layer_section(
            cfg,
            "inprocess_layer_async",
            "transport layer only: await transport.handle_async_request(request)",
            VARIANTS,
            (OURS, PEER),
        )

    async def main(section: Section) -> Section:
        async def runner(variant: str) -> AsyncRunner:
            transport = wrap_async(variant, httpx.MockTransport(ok))
            check_wrapping(transport, variant)
            request = httpx.Request("GET", MOCK_URL)
            response = await transport.handle_async_request(request)
            await response.aread()
            check_response(response, variant)
            handle = transport.handle_async_request
            reset = _resetter(transport, request)

            async def run(calls: int) -> float:
                reset()
                with quiet_gc():
                    start = time.perf_counter_ns()
                    for _ in range(calls):
                        await handle(request)
                    elapsed = time.perf_counter_ns() - start
                return elapsed / calls / 1000

            return run

        runners = {v: await runner(v) for v in section.variants}
        return await ainterleave(section, cfg.rounds, runners)

    return asyncio.run(main(section))


def bench_limit_layer_sync(cfg: Config) -> Section:
    return bench_layer_sync(
        cfg,
        layer_section(
            cfg,
            "ratelimit_layer_sync",
            "layers: transport.handle_request(request) over MockTransport, "
            f"limit {rl.NEVER_RATE!r} (never waits)",
            LAYER_VARIANTS,
            (STACK, RETRY),
        ),
    )


def bench_limit_layer_async(cfg: Config) -> Section:
    return bench_layer_async(
        cfg,
        layer_section(
            cfg,
            "ratelimit_layer_async",
            "layers: await transport.handle_async_request(request), "
            f"limit {rl.NEVER_RATE!r} (never waits)",
            LAYER_VARIANTS,
            (STACK, RETRY),
        ),
    )


# --------------------------------------------------------------------------- loopback


class Server:
    """``python -m resilience._testing_server`` in a subprocess: ``200 ok`` on 127.0.0.1."""

    def __init__(self, stderr: IO[bytes]) -> None:
        self._stderr = stderr  # read back only if the server fails to start
        self.process = subprocess.Popen(
            [sys.executable, "-m", "resilience._testing_server", "--port", "0", "--ignore-stdin"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            self.port = self._read_port(timeout=30.0)
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}/bench"

    def _read_port(self, timeout: float) -> int:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline().decode(errors="replace").strip() if ready else ""
        parts = line.split()
        if len(parts) != 2 or parts[0] != "LISTENING" or not parts[1].isdigit():
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace").strip()
            raise RuntimeError(f"the test server did not start (said {line!r}): {detail}")
        return int(parts[1])

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def loopback_sync_section(
    cfg: Config, key: str, title: str, variants: tuple[str, ...], versus: tuple[str, str] | None
) -> Section:
    return Section(
        key,
        title,
        "rps",
        batch=cfg.sync_requests,
        warmup=max(cfg.sync_requests // 4, 50),
        repeats=cfg.loopback_repeats[0],
        variants=variants,
        versus=versus,
    )


def loopback_async_section(
    cfg: Config, key: str, title: str, variants: tuple[str, ...], versus: tuple[str, str] | None
) -> Section:
    return Section(
        key,
        title,
        "rps",
        batch=cfg.async_requests,
        # enough to open every connection of the pool before timing starts
        warmup=max(cfg.async_requests // 3, 2 * cfg.concurrency),
        repeats=cfg.loopback_repeats[1],
        variants=variants,
        versus=versus,
    )


def bench_loopback_sync(cfg: Config, url: str, section: Section | None = None) -> Section:
    if section is None:
        section = loopback_sync_section(
            cfg,
            "loopback_sync",
            "loopback: httpx.Client.get, sequential, one keep-alive connection",
            VARIANTS,
            (OURS, PEER),
        )
    # httpx's default limits, but with idle connections kept for KEEPALIVE_EXPIRY
    limits = httpx.Limits(
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    clients = {
        v: httpx.Client(transport=wrap_sync(v, httpx.HTTPTransport(limits=limits)), trust_env=False)
        for v in section.variants
    }

    def call(variant: str) -> Callable[[], int]:
        client = clients[variant]
        check_wrapping(client._transport, variant)
        check_response(client.get(url), variant)
        get = client.get
        return lambda: get(url).status_code

    section.turns = "request by request"
    try:
        return alternate(section, cfg.rounds, {v: call(v) for v in section.variants})
    finally:
        for client in clients.values():
            client.close()


def bench_loopback_async(cfg: Config, url: str, section: Section | None = None) -> Section:
    if section is None:
        section = loopback_async_section(
            cfg,
            "loopback_async",
            f"loopback: httpx.AsyncClient.get, {cfg.concurrency} concurrent (asyncio.gather)",
            VARIANTS,
            (OURS, PEER),
        )
    # Every connection may stay open: httpcore 1.0.9 counts *all* connections against
    # max_keepalive_connections, so with more than that many open it closes each connection
    # as soon as it falls idle, and the pool churns (the README's "Concurrency" note).
    limits = httpx.Limits(
        max_connections=cfg.concurrency,
        max_keepalive_connections=cfg.concurrency,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )

    async def main(section: Section) -> Section:
        # The pool size is the inner transport's: a client ignores limits= when given a transport.
        clients = {
            v: httpx.AsyncClient(
                transport=wrap_async(v, httpx.AsyncHTTPTransport(limits=limits)),
                trust_env=False,
                timeout=30.0,
            )
            for v in section.variants
        }

        async def chunk(variant: str) -> Callable[[int], Awaitable[int]]:
            client = clients[variant]
            check_wrapping(client._transport, variant)
            check_response(await client.get(url), variant)
            get = client.get

            async def run(count: int) -> int:
                """``count`` requests, ``concurrency`` in flight; the nanoseconds they took."""
                semaphore = asyncio.Semaphore(cfg.concurrency)

                async def one() -> int:
                    async with semaphore:
                        return (await get(url)).status_code

                start = time.perf_counter_ns()
                statuses = await asyncio.gather(*(one() for _ in range(count)))
                elapsed = time.perf_counter_ns() - start
                failed = sum(status != 200 for status in statuses)
                if failed:
                    raise RuntimeError(f"{variant}: {failed} of {count} loopback requests failed")
                return elapsed

            return run

        size = 2 * cfg.concurrency
        section.turns = f"by chunks of {size} requests"
        try:
            chunks = {v: await chunk(v) for v in section.variants}
            return await aalternate(section, cfg.rounds, chunks, size)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(main(section))


def bench_limit_loopback_sync(cfg: Config, url: str) -> Section:
    title = (
        "loopback, layers stacked: httpx.Client.get, sequential, one keep-alive "
        f"connection, limit {rl.NEVER_RATE!r}"
    )
    section = loopback_sync_section(cfg, "ratelimit_loopback_sync", title, STACK_VARIANTS, None)
    return bench_loopback_sync(cfg, url, section)


def bench_limit_loopback_async(cfg: Config, url: str) -> Section:
    title = (
        f"loopback, layers stacked: httpx.AsyncClient.get, {cfg.concurrency} concurrent, "
        f"limit {rl.NEVER_RATE!r}"
    )
    section = loopback_async_section(cfg, "ratelimit_loopback_async", title, STACK_VARIANTS, None)
    return bench_loopback_async(cfg, url, section)


# --------------------------------------------------------------------------- the whole stack

STACK_NOTE = "Stack.default(): log, cache (miss path: responses carry no caching headers), retry"


def bench_stack_client_sync(cfg: Config) -> Section:
    title = f"whole stack in-process: httpx.Client.get over MockTransport ({STACK_NOTE})"
    return bench_client_sync(cfg, client_section(cfg, "stack_client_sync", title, DEFAULT_VARIANTS))


def bench_stack_client_async(cfg: Config) -> Section:
    title = "whole stack in-process: httpx.AsyncClient.get over MockTransport"
    section = client_section(cfg, "stack_client_async", title, DEFAULT_VARIANTS)
    return bench_client_async(cfg, section)


def bench_stack_loopback_sync(cfg: Config, url: str) -> Section:
    title = "whole stack, loopback: httpx.Client.get, sequential, one keep-alive connection"
    section = loopback_sync_section(cfg, "stack_loopback_sync", title, DEFAULT_VARIANTS, None)
    return bench_loopback_sync(cfg, url, section)


def bench_stack_loopback_async(cfg: Config, url: str) -> Section:
    title = f"whole stack, loopback: httpx.AsyncClient.get, {cfg.concurrency} concurrent"
    section = loopback_async_section(cfg, "stack_loopback_async", title, DEFAULT_VARIANTS, None)
    return bench_loopback_async(cfg, url, section)


def summarize_stack(sections: dict[str, Section]) -> tuple[str, dict[str, Any]]:
    in_sync, in_async = sections["stack_client_sync"], sections["stack_client_async"]
    loop_sync, loop_async = sections["stack_loopback_sync"], sections["stack_loopback_async"]

    def log_cost(section: Section) -> float:
        """What the log layers cost with their level filtered out, over no log layers."""
        return section.us_per_request(DEFAULT) - section.us_per_request(DEFAULT_NOLOG)

    # the verdict: the median of the per-pass ratios, each pass's variants back to back
    ratio_sync, ratio_async = loop_sync.paired_ratio(DEFAULT), loop_async.paired_ratio(DEFAULT)
    verdict = "met" if max(ratio_sync, ratio_async) <= 1.05 else "NOT met"

    def spread(section: Section) -> str:
        low, high = section.paired_spread(DEFAULT)
        return f"{low:.3f}..{high:.3f}"

    text = (
        f"SUMMARY: whole stack ({DEFAULT}) on loopback, median of the per-pass ratios: sync "
        f"{ratio_sync:.3f}x, async {ratio_async:.3f}x bare httpx (target <= 1.05x: {verdict})\n"
        f"         middle half of the passes: sync {spread(loop_sync)}, async "
        f"{spread(loop_async)}; median against median: "
        f"{_loopback(loop_sync, loop_async, DEFAULT)}\n"
        f"SUMMARY: whole stack in-process per Client.get: sync "
        f"{in_sync.overhead_us(DEFAULT):+.2f} {US}, async {in_async.overhead_us(DEFAULT):+.2f} "
        f"{US} over bare\n"
        f"SUMMARY: log layers enabled but filtered vs no log layers: sync "
        f"{log_cost(in_sync):+.2f} {US}, async {log_cost(in_async):+.2f} {US} per request"
    )
    data = {
        "loopback_ratio": {"sync": ratio_sync, "async": ratio_async},
        "loopback_ratio_middle_half": _pair(
            loop_sync, loop_async, lambda section: section.paired_spread(DEFAULT)
        ),
        "loopback_overhead_percent": _pair(loop_sync, loop_async, _percent(DEFAULT)),
        "inprocess_overhead_us": _pair(in_sync, in_async, _us(DEFAULT)),
        "filtered_log_cost_us": _pair(in_sync, in_async, log_cost),
    }
    return text, data


# --------------------------------------------------------------------------- limiters


def bench_accuracy(cfg: Config) -> list[rl.Accuracy]:
    """Section 11: each path of ours against a binding "20/second", one run after the other."""
    seconds = cfg.accuracy_seconds
    tasks = f"{cfg.accuracy_tasks} tasks"
    results: list[rl.Accuracy] = []

    def fresh(strategy: Strategy) -> resilience.RateLimit:
        return resilience.RateLimit(rl.ACCURACY_RATE, strategy=strategy)

    async def run_async(strategy: Strategy) -> rl.Accuracy:
        policy = fresh(strategy)
        name = f"acquire_async, {strategy}"
        result = rl.Accuracy(name, tasks, rl.ACCURACY_PER_SECOND, seconds)

        async def acquire() -> None:
            await acquire_async(policy, rl.KEY, 30)

        return await rl.accuracy_async(result, acquire, cfg.accuracy_tasks)

    results.append(asyncio.run(run_async("moving-window")))
    policy = fresh("moving-window")
    threads = f"{cfg.accuracy_threads} threads"
    result = rl.Accuracy("acquire (sync), moving-window", threads, rl.ACCURACY_PER_SECOND, seconds)

    def acquire_sync(max_wait: float) -> None:
        acquire(policy, rl.KEY, max_wait)

    results.append(rl.accuracy_threads(result, acquire_sync, cfg.accuracy_threads))
    results.append(asyncio.run(run_async("fixed-window")))
    results.append(asyncio.run(run_async("sliding-window-counter")))
    return results


def bench_limiters(
    cfg: Config, ours: dict[str, rl.Accuracy]
) -> tuple[Section, dict[str, rl.Accuracy], dict[int, float]]:
    """Section 12: µs per acquisition (never binding), then each peer's accuracy at 20/second.

    Our accuracy is taken from section 11's ``acquire_async`` runs (``ours``), not run again;
    the peers' accuracy is returned, with our moving window's cost by occupancy (a side note).
    """
    section = Section(
        "limiter_overhead_async",
        "async limiters: µs per acquisition with a limit that never binds "
        f"({rl.NEVER_PER_SECOND}/s), and accuracy at {rl.ACCURACY_RATE!r}",
        "us",
        batch=cfg.limiter_calls,
        warmup=cfg.limiter_calls,
        repeats=cfg.repeats,
        variants=LIMITERS,
        baseline=LIM_OURS,
        versus=None,
        items="acquisitions",
    )

    async def main() -> tuple[Section, dict[str, rl.Accuracy], dict[int, float]]:
        moving, fixed = rl.never_binding(), rl.never_binding("fixed-window")
        aio, pyrate = rl.AioLimiterPeer(rl.NEVER_PER_SECOND), rl.PyratePeer(rl.NEVER_PER_SECOND)

        def ours_runner(policy: resilience.RateLimit) -> AsyncRunner:
            async def run(calls: int) -> float:
                rl.reset(policy, rl.KEY)
                with quiet_gc():
                    start = time.perf_counter_ns()
                    for _ in range(calls):
                        await acquire_async(policy, rl.KEY, 30)
                    elapsed = time.perf_counter_ns() - start
                return elapsed / calls / 1000

            return run

        def peer_runner(peer: rl.Peer) -> AsyncRunner:
            take = peer.acquire

            async def run(calls: int) -> float:
                peer.reset()
                with quiet_gc():
                    start = time.perf_counter_ns()
                    for _ in range(calls):
                        await take()
                    elapsed = time.perf_counter_ns() - start
                return elapsed / calls / 1000

            return run

        runners = {
            LIM_OURS: ours_runner(moving),
            LIM_OURS_FIXED: ours_runner(fixed),
            LIM_AIO: peer_runner(aio),
            LIM_PYRATE: peer_runner(pyrate),
        }
        try:
            await ainterleave(section, cfg.rounds, runners)
        finally:
            pyrate.close()

        occupancy = await rl.occupancy_costs(OCCUPANCY, cfg.occupancy_calls)
        tasks = f"{cfg.accuracy_tasks} tasks"
        accuracy: dict[str, rl.Accuracy] = {}
        makers: tuple[tuple[str, Callable[[int], rl.Peer]], ...] = (
            (LIM_AIO, rl.AioLimiterPeer),
            (LIM_PYRATE, rl.PyratePeer),
        )
        for name, make in makers:
            peer = make(rl.ACCURACY_PER_SECOND)
            result = rl.Accuracy(name, tasks, rl.ACCURACY_PER_SECOND, cfg.accuracy_seconds)
            try:
                accuracy[name] = await rl.accuracy_async(result, peer.acquire, cfg.accuracy_tasks)
            finally:
                peer.close()
        return section, accuracy, occupancy

    return asyncio.run(main())


# --------------------------------------------------------------------------- report


def _plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def _spread(section: Section, variant: str) -> str:
    low, high = min(section.samples[variant]), max(section.samples[variant])
    if section.unit == "us":
        return f"{low:8.2f} .. {high:<8.2f}"
    return f"{low:8.0f} .. {high:<8.0f}"


def _how(section: Section, rounds: int) -> str:
    how = _plural(rounds, "round") + (f" x {section.repeats}" if section.repeats > 1 else "")
    turns = f"; variants take turns {section.turns}" if section.turns else ""
    return (
        f"median of {_plural(section.passes, 'sample')} ({how}) of {section.batch} "
        f"{section.item} each{turns}"
    )


def format_section(number: int, section: Section, rounds: int) -> str:
    unit = f"{US}/req" if section.unit == "us" else "req/s"
    width = max(15, max(map(len, section.variants)) + 2)
    lines = [
        f"[{number}] {section.title}",
        f"    {_how(section, rounds)}; cost = time per request / bare httpx's",
        f"    {'variant':<{width}}{'median ' + unit:>14}  {'min .. max':^20}  {'cost':>6}  "
        f"{'overhead vs bare':>22}",
    ]
    for variant in section.variants:
        median = section.median(variant)
        value = f"{median:14.2f}" if section.unit == "us" else f"{median:14.0f}"
        if variant == section.baseline:
            overhead = "-"
        elif section.unit == "us":
            overhead = f"{section.overhead_us(variant):+.2f} {US}/req"
        else:
            percent = (section.ratio(variant) - 1) * 100
            overhead = f"{percent:+.1f}% ({section.overhead_us(variant):+.1f} {US}/req)"
        lines.append(
            f"    {variant:<{width}}{value}  {_spread(section, variant):^20}  "
            f"{section.ratio(variant):5.2f}x  {overhead:>22}"
        )
    if section.versus is not None:
        mine, other = section.versus
        delta = section.us_per_request(mine) - section.us_per_request(other)
        verdict = "cheaper" if delta < 0 else "dearer"
        passes = _plural(section.passes, "pass", "passes")
        lines.append(
            f"    {mine} vs {other}: {delta:+.2f} {US}/req ({mine} is {abs(delta):.2f} {US} "
            f"{verdict}; cheaper in {section.wins(mine, other)} of {passes})"
        )
    return "\n".join(lines)


def _window(result: rl.Accuracy) -> str:
    verdict = "ok" if result.max_window <= result.limit else "OVER"
    return f"{result.max_window:>4} ({verdict})"


def format_accuracy(number: int, results: list[rl.Accuracy]) -> str:
    first = results[0]
    lines = [
        f"[{number}] limiter accuracy on the real clock: {rl.ACCURACY_RATE!r}, each path called "
        "directly (no HTTP), a fresh limiter per run",
        f"    each run: the callers take slots in a loop for {first.seconds:g} s; achieved = "
        "acquisitions in the run / its length;",
        f"    steady = the same after the first {rl.WINDOW:g} s; max/1s = most acquisitions in any "
        f"{rl.WINDOW:g} s window (limit {first.limit})",
        f"    {'path, strategy':<38}{'callers':>10}  {'taken':>6}  {'achieved/s':>10}  "
        f"{'vs conf.':>8}  {'error':>7}  {'steady/s':>8}  {'max/1s':>10}",
    ]
    for result in results:
        lines.append(
            f"    {result.name:<38}{result.how:>10}  {result.count:>6}  {result.achieved:10.2f}  "
            f"{result.ratio:7.3f}x  {result.error_percent:+6.1f}%  {result.steady:8.2f}  "
            f"{_window(result):>10}"
        )
    return "\n".join(lines)


def format_limiters(
    number: int, section: Section, accuracy: dict[str, rl.Accuracy], rounds: int
) -> str:
    unit = f"{US}/acq"
    first = accuracy[LIM_OURS]
    lines = [
        f"[{number}] {section.title}",
        f"    overhead: {_how(section, rounds)}, sequential awaits in one task; cost = time per "
        f"acquisition / {LIM_OURS}'s",
        f"    accuracy: {first.how} for {first.seconds:g} s at {rl.ACCURACY_RATE!r} (ours: the "
        "acquire_async runs of the section above)",
        f"    {'limiter':<18}{'median ' + unit:>14}  {'min .. max':^20}  {'cost':>6}  "
        f"{'achieved/s':>10}  {'vs conf.':>8}  {'steady/s':>8}  {'max/1s':>10}",
    ]
    for variant in section.variants:
        result = accuracy[variant]
        lines.append(
            f"    {variant:<18}{section.median(variant):14.2f}  {_spread(section, variant):^20}  "
            f"{section.ratio(variant):5.2f}x  {result.achieved:10.2f}  {result.ratio:7.3f}x  "
            f"{result.steady:8.2f}  {_window(result):>10}"
        )
    return "\n".join(lines)


def _loopback(sync: Section, async_: Section, variant: str) -> str:
    def pct(section: Section) -> str:
        return f"{(section.ratio(variant) - 1) * 100:+.1f}%"

    return (
        f"sync {pct(sync)}, async {pct(async_)} (slower than bare in "
        f"{sync.wins(BARE, variant)}/{sync.passes} and "
        f"{async_.wins(BARE, variant)}/{async_.passes} passes)"
    )


def _pair(sync: Section, async_: Section, value: Callable[[Section], _T]) -> dict[str, _T]:
    """``{"sync": value(sync), "async": value(async_)}``: one figure for each path."""
    return {"sync": value(sync), "async": value(async_)}


def _percent(variant: str) -> Callable[[Section], float]:
    """The variant's overhead over the section's baseline, in percent."""
    return lambda section: (section.ratio(variant) - 1) * 100


def _us(variant: str) -> Callable[[Section], float]:
    """The variant's overhead over the section's baseline, in µs per request."""
    return lambda section: section.overhead_us(variant)


def summarize(sections: dict[str, Section]) -> tuple[str, dict[str, Any]]:
    sync, async_ = sections["loopback_sync"], sections["loopback_async"]
    in_process = [k for k in sections if k.startswith("inprocess_")]
    lower = {k: sections[k].overhead_us(OURS) < sections[k].overhead_us(PEER) for k in in_process}
    layer = sections["inprocess_layer_sync"]
    ours_us, peer_us = layer.overhead_us(OURS), layer.overhead_us(PEER)
    answer = "LOWER" if lower["inprocess_layer_sync"] else "NOT lower"
    each = ", ".join(
        f"{k.removeprefix('inprocess_')} {'yes' if v else 'no'}" for k, v in lower.items()
    )
    text = (
        f"SUMMARY: {OURS} loopback overhead vs bare httpx: {_loopback(sync, async_, OURS)}\n"
        f"         {PEER} for comparison: {_loopback(sync, async_, PEER)}\n"
        f"SUMMARY: in-process wrapper overhead per handle_request call: {OURS} "
        f"{ours_us:+.2f} {US}, {PEER} {peer_us:+.2f} {US}: ours is {answer} than {PEER}'\n"
        f"         (ours lower in each in-process section? {each})"
    )
    data = {
        "loopback_overhead_percent": _pair(sync, async_, _percent(OURS)),
        "loopback_overhead_percent_peer": _pair(sync, async_, _percent(PEER)),
        "loopback_passes_slower_than_bare": {
            "sync": f"{sync.wins(BARE, OURS)}/{sync.passes}",
            "async": f"{async_.wins(BARE, OURS)}/{async_.passes}",
        },
        "layer_sync_overhead_us": {OURS: ours_us, PEER: peer_us},
        "ours_in_process_overhead_lower": lower["inprocess_layer_sync"],
        "ours_lower_than_peer_per_section": lower,
    }
    return text, data


def format_occupancy(costs: dict[int, float], calls: int) -> str:
    levels = ", ".join(
        f"{f'{level // 1000}k' if level else 'empty'}: {cost:.2f} {US}"
        for level, cost in costs.items()
    )
    return (
        "    note: the moving window costs more the more hits it holds (limits' in-memory storage "
        "inserts each\n    hit at the front of a list). acquire_async per call, by hits already "
        f"in the window ({calls} calls each):\n    {levels}"
    )


def summarize_limits(
    sections: dict[str, Section], accuracy: list[rl.Accuracy], peers: dict[str, rl.Accuracy]
) -> tuple[str, dict[str, Any]]:
    layer_sync = sections["ratelimit_layer_sync"]
    layer_async = sections["ratelimit_layer_async"]
    loop_sync = sections["ratelimit_loopback_sync"]
    loop_async = sections["ratelimit_loopback_async"]
    limiters = sections["limiter_overhead_async"]

    def share(section: Section) -> float:
        """What the limiter adds on top of RetryTransport when stacked under it."""
        return section.us_per_request(STACK) - section.us_per_request(RETRY)

    def us(value: float) -> str:
        return f"{value:+.2f} {US}"

    async_moving, sync_moving = accuracy[0], accuracy[1]
    ours_us = limiters.median(LIM_OURS)
    text = (
        f"SUMMARY: rate-limit layer overhead per call (RateLimitTransport alone, moving window, "
        f"never waiting): sync {us(layer_sync.overhead_us(LIMIT))}, async "
        f"{us(layer_async.overhead_us(LIMIT))}\n"
        f"         fixed window: sync {us(layer_sync.overhead_us(LIMIT_FIXED))}, async "
        f"{us(layer_async.overhead_us(LIMIT_FIXED))}; stacked under RetryTransport it adds "
        f"sync {us(share(layer_sync))}, async {us(share(layer_async))}\n"
        f"SUMMARY: breaker layer overhead per call (CircuitBreakerTransport alone, closed): "
        f"sync {us(layer_sync.overhead_us(BREAKER))}, async {us(layer_async.overhead_us(BREAKER))}"
        f"\n         all three ({ALL3}): sync {us(layer_sync.overhead_us(ALL3))}, async "
        f"{us(layer_async.overhead_us(ALL3))}\n"
        f"SUMMARY: {STACK} loopback overhead vs bare httpx: "
        f"{_loopback(loop_sync, loop_async, STACK)}\n"
        f"SUMMARY: {ALL3} loopback overhead vs bare httpx: "
        f"{_loopback(loop_sync, loop_async, ALL3)}\n"
        f"SUMMARY: achieved-rate error at {rl.ACCURACY_RATE!r}: async "
        f"{async_moving.error_percent:+.1f}% (max {async_moving.max_window} in any "
        f"{rl.WINDOW:g} s), sync {sync_moving.error_percent:+.1f}% (max "
        f"{sync_moving.max_window}); limit {async_moving.limit}\n"
        f"SUMMARY: per acquisition (acquire_async, never binding): {LIM_OURS} {ours_us:.2f} {US}, "
        + ", ".join(
            f"{peer} {limiters.median(peer):.2f} {US} (ours {limiters.ratio(peer) ** -1:.2f}x "
            f"its cost; it achieves {peers[peer].error_percent:+.1f}%, max "
            f"{peers[peer].max_window}/{rl.WINDOW:g} s)"
            for peer in (LIM_AIO, LIM_PYRATE)
        )
    )
    data = {
        "ratelimit_layer_overhead_us": _pair(layer_sync, layer_async, _us(LIMIT)),
        "ratelimit_fixed_window_layer_overhead_us": _pair(
            layer_sync, layer_async, _us(LIMIT_FIXED)
        ),
        "ratelimit_stacked_share_us": _pair(layer_sync, layer_async, share),
        "breaker_layer_overhead_us": _pair(layer_sync, layer_async, _us(BREAKER)),
        "all_three_layers_overhead_us": _pair(layer_sync, layer_async, _us(ALL3)),
        "stacked_loopback_overhead_percent": _pair(loop_sync, loop_async, _percent(STACK)),
        "all_three_loopback_overhead_percent": _pair(loop_sync, loop_async, _percent(ALL3)),
        "achieved_rate_error_percent": {r.name: r.error_percent for r in accuracy},
        "max_in_any_window": {r.name: r.max_window for r in accuracy},
        "acquisition_us": {v: limiters.median(v) for v in limiters.variants},
        "peer_achieved_rate_error_percent": {k: v.error_percent for k, v in peers.items()},
        "peer_max_in_any_window": {k: v.max_window for k, v in peers.items()},
    }
    return text, data


PACKAGES = ("httpx", "httpx-retries", "resilience", "limits", "aiolimiter", "pyrate-limiter")


def _meta(cfg: Config) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": load,
        "versions": {name: version(name) for name in PACKAGES},
        "config": dataclasses.asdict(cfg),
        "sniffio_installed": importlib.util.find_spec("sniffio") is not None,
    }


# --------------------------------------------------------------------------- main


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # Handled like Ctrl-C, which asyncio.run turns into a clean cancellation; the unwinding
    # runs the finally clauses, so the server subprocess is stopped.
    signal.raise_signal(signal.SIGINT)


GROUPS = ("retry", "limits", "stack")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark resilience.RetryTransport against bare httpx and httpx-retries.",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (seconds)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per section (default: 5; --quick: 2)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        help="run only this group of sections (repeatable; default: all): retry (1-6), "
        "limits (7-12), stack (13-16)",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # Even where SIGINT is ignored (a background job), stop cleanly on Ctrl-C and SIGTERM.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    cfg = QUICK if args.quick else FULL
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
    meta = _meta(cfg)
    began = time.perf_counter()
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    print(
        f"resilience benchmark ({'quick' if cfg.quick else 'full'}, "
        f"{_plural(cfg.rounds, 'round')}): "
        f"{meta['implementation']} {meta['python']}, {versions}",
        flush=True,
    )
    print(f"{meta['cpus']} CPUs, load average at start: {meta['loadavg_at_start']}", flush=True)
    if not meta["sniffio_installed"]:
        print(
            "note: sniffio is not installed, so httpcore retries `import sniffio` (a failing "
            "import: a\n      sys.path search) for each async lock, event and cancellation "
            "shield it sets up,\n      several per request; this slows every async loopback "
            "variant alike.",
            flush=True,
        )
    print(flush=True)

    sections: dict[str, Section] = {}
    numbers = iter(range(1, 100))

    def first_section(number: int) -> None:  # sections keep their numbers in a partial run
        nonlocal numbers
        numbers = iter(range(number, 100))

    def report(section: Section) -> None:
        sections[section.key] = section
        print(format_section(next(numbers), section, cfg.rounds), flush=True)
        print(flush=True)

    def serve(*benches: Callable[[Config, str], Section]) -> None:
        with tempfile.TemporaryFile() as server_log:
            server = Server(server_log)
            try:
                for bench in benches:
                    report(bench(cfg, server.url))
            finally:
                server.stop()

    groups = set(args.only or GROUPS)
    summaries: list[str] = []
    document: dict[str, Any] = {"summary": {}}
    if "retry" in groups:
        first_section(1)
        report(bench_client_sync(cfg))
        report(bench_client_async(cfg))
        report(bench_layer_sync(cfg))
        report(bench_layer_async(cfg))
        serve(bench_loopback_sync, bench_loopback_async)
        summary, summary_data = summarize(sections)
        summaries.append(summary)
        document["summary"].update(summary_data)

    if "limits" in groups:  # the rate-limit and breaker layers
        first_section(7)
        report(bench_limit_layer_sync(cfg))
        report(bench_limit_layer_async(cfg))
        serve(bench_limit_loopback_sync, bench_limit_loopback_async)
        accuracy = bench_accuracy(cfg)
        print(format_accuracy(next(numbers), accuracy), flush=True)
        print(flush=True)
        ours = {LIM_OURS: accuracy[0], LIM_OURS_FIXED: accuracy[2]}
        limiters, peers, occupancy = bench_limiters(cfg, ours)
        sections[limiters.key] = limiters
        number = next(numbers)
        print(format_limiters(number, limiters, {**ours, **peers}, cfg.rounds), flush=True)
        print(format_occupancy(occupancy, cfg.occupancy_calls), flush=True)
        print(flush=True)
        limit_summary, limit_data = summarize_limits(sections, accuracy, peers)
        summaries.append(limit_summary)
        document["summary"]["rate_limit"] = limit_data
        document["accuracy"] = {r.name: r.to_json() for r in accuracy} | {
            f"{name} (peer)": r.to_json() for name, r in peers.items() if name != LIM_OURS
        }
        document["moving_window_us_by_hits_held"] = occupancy

    if "stack" in groups:  # the whole stack
        first_section(13)
        report(bench_stack_client_sync(cfg))
        report(bench_stack_client_async(cfg))
        serve(bench_stack_loopback_sync, bench_stack_loopback_async)
        stack_summary, stack_data = summarize_stack(sections)
        summaries.append(stack_summary)
        document["summary"]["stack"] = stack_data

    elapsed = time.perf_counter() - began
    for summary in summaries:
        print(summary)
    print(f"(took {elapsed:.1f} s)")
    if args.json:
        document = {
            "meta": {**meta, "elapsed_seconds": elapsed, "groups": sorted(groups)},
            "sections": {key: section.to_json() for key, section in sections.items()},
            **document,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
