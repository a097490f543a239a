"""Benchmark: the cost of ``resilience.RetryTransport`` next to bare httpx and httpx-retries.

Run ``python bench/run.py`` (under 2 minutes), ``python bench/run.py --quick`` (a smoke run of
a few seconds) or ``python bench/run.py --rounds 9 --json results.json``. See bench/README.md.

Sections, each measured for three variants (bare httpx, httpx + resilience's RetryTransport
with ``Retry()``, httpx + httpx-retries' RetryTransport with its ``Retry()``):

1. in-process, ``httpx.Client.get`` over ``httpx.MockTransport``: microseconds per request;
2. the same with ``httpx.AsyncClient`` and sequential awaits;
3. the transport layer alone: ``transport.handle_request(request)`` on a pre-built request;
4. the same for ``await transport.handle_async_request(request)``;
5. loopback HTTP/1.1 to a server in a subprocess, sequential ``httpx.Client.get``: req/s;
6. loopback with ``httpx.AsyncClient``, ``concurrency`` requests in flight: req/s.

Variants are interleaved within every round (the starting variant rotates from one pass to the
next), a warm-up batch of each runs first, and the median over the samples is reported. Only
127.0.0.1 is ever contacted.
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
from typing import IO, Any, Literal, TypeAlias

import httpx
import httpx_retries

import resilience

BARE = "httpx"
OURS = "resilience"
PEER = "httpx-retries"
VARIANTS: tuple[str, ...] = (BARE, OURS, PEER)

Unit: TypeAlias = Literal["us", "rps"]
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
    repeats: int  # interleaved passes per round in sections 1-5 (not the slow async loopback)
    client_calls: int  # per in-process client batch (sections 1, 2)
    layer_calls: int  # per in-process transport-layer batch (sections 3, 4)
    sync_requests: int  # per sequential loopback batch (section 5)
    async_requests: int  # per concurrent loopback batch (section 6)
    concurrency: int  # requests in flight in section 6 (and the pool size)
    quick: bool


FULL = Config(
    rounds=5,
    repeats=3,
    client_calls=2000,
    layer_calls=10000,
    sync_requests=2000,
    async_requests=2000,
    concurrency=100,
    quick=False,
)
QUICK = Config(
    rounds=2,
    repeats=1,
    client_calls=300,
    layer_calls=3000,
    sync_requests=200,
    async_requests=300,
    concurrency=100,
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

    @property
    def item(self) -> str:
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
        """Cost relative to bare httpx, median against median: above 1.00 is slower."""
        return self.us_per_request(variant) / self.us_per_request(BARE)

    def paired_ratio(self, variant: str) -> float:
        """The median of the per-pass ratios to bare httpx (robust to slow drift)."""
        pairs = zip(self.costs(variant), self.costs(BARE), strict=True)
        return statistics.median(cost / bare for cost, bare in pairs)

    def overhead_us(self, variant: str) -> float:
        """Extra microseconds per request over bare httpx (median against median)."""
        return self.us_per_request(variant) - self.us_per_request(BARE)

    def wins(self, variant: str, other: str) -> int:
        """In how many passes ``variant`` cost less than ``other`` (samples are paired)."""
        pairs = zip(self.costs(variant), self.costs(other), strict=True)
        return sum(mine < theirs for mine, theirs in pairs)

    @property
    def passes(self) -> int:
        return len(self.samples[BARE])

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "unit": "us_per_request" if self.unit == "us" else "requests_per_second",
            "batch": self.batch,
            "warmup": self.warmup,
            "repeats_per_round": self.repeats,
            "samples": self.samples,
            "median": {v: self.median(v) for v in VARIANTS},
            "min": {v: min(self.samples[v]) for v in VARIANTS},
            "max": {v: max(self.samples[v]) for v in VARIANTS},
            "cost_ratio_vs_bare": {v: self.ratio(v) for v in VARIANTS},
            "paired_cost_ratio_vs_bare": {v: self.paired_ratio(v) for v in VARIANTS},
            "overhead_us_vs_bare": {v: self.overhead_us(v) for v in VARIANTS},
            "overhead_percent_vs_bare": {v: (self.ratio(v) - 1) * 100 for v in VARIANTS},
            "passes": self.passes,
            "passes_slower_than_bare": {v: self.wins(BARE, v) for v in VARIANTS},
            "passes_resilience_cheaper_than_peer": self.wins(OURS, PEER),
        }


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


def _orders(passes: int) -> Iterator[tuple[str, ...]]:
    """The variant order of each pass: ABC, BCA, CAB, ABC, ..."""
    for index in range(passes):
        shift = index % len(VARIANTS)
        yield VARIANTS[shift:] + VARIANTS[:shift]


def interleave(section: Section, rounds: int, runners: dict[str, SyncRunner]) -> Section:
    """Warm every variant up once, then take one sample of each per pass, interleaved."""
    for variant in VARIANTS:
        runners[variant](section.warmup)
    section.samples = {variant: [] for variant in VARIANTS}
    for order in _orders(rounds * section.repeats):
        for variant in order:
            section.samples[variant].append(runners[variant](section.batch))
    return section


async def ainterleave(section: Section, rounds: int, runners: dict[str, AsyncRunner]) -> Section:
    """:func:`interleave` for coroutines."""
    for variant in VARIANTS:
        await runners[variant](section.warmup)
    section.samples = {variant: [] for variant in VARIANTS}
    for order in _orders(rounds * section.repeats):
        for variant in order:
            section.samples[variant].append(await runners[variant](section.batch))
    return section


# --------------------------------------------------------------------------- transports


def ok(request: httpx.Request) -> httpx.Response:
    """The MockTransport handler: a fresh ``200 ok`` for every request."""
    return httpx.Response(200, content=b"ok")


def wrap_sync(variant: str, inner: httpx.BaseTransport) -> httpx.BaseTransport:
    """``inner`` as the variant uses it: bare, or under one of the two retry transports."""
    if variant == OURS:
        return resilience.RetryTransport(inner, resilience.Retry())
    if variant == PEER:
        return httpx_retries.RetryTransport(inner, httpx_retries.Retry())
    return inner


def wrap_async(variant: str, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """:func:`wrap_sync` for async transports."""
    if variant == OURS:
        return resilience.RetryTransport(inner, resilience.Retry())
    if variant == PEER:
        return httpx_retries.RetryTransport(inner, httpx_retries.Retry())
    return inner


def check_wrapping(transport: object, variant: str) -> None:
    """Fail loudly if a client is not using the transport the variant names."""
    expected: type[object] = {
        BARE: object,
        OURS: resilience.RetryTransport,
        PEER: httpx_retries.RetryTransport,
    }[variant]
    if not isinstance(transport, expected):
        raise RuntimeError(f"{variant}: the client uses {transport!r}")


def check_response(response: httpx.Response, variant: str) -> None:
    if response.status_code != 200 or response.content != b"ok":
        raise RuntimeError(f"{variant}: unexpected response {response!r} {response.content!r}")


# --------------------------------------------------------------------------- in-process


def bench_client_sync(cfg: Config) -> Section:
    section = Section(
        "inprocess_client_sync",
        "in-process: httpx.Client.get over MockTransport",
        "us",
        batch=cfg.client_calls,
        warmup=cfg.client_calls,
        repeats=cfg.repeats,
    )
    clients = {
        v: httpx.Client(transport=wrap_sync(v, httpx.MockTransport(ok)), trust_env=False)
        for v in VARIANTS
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
        return interleave(section, cfg.rounds, {v: runner(v) for v in VARIANTS})
    finally:
        for client in clients.values():
            client.close()


def bench_client_async(cfg: Config) -> Section:
    section = Section(
        "inprocess_client_async",
        "in-process: httpx.AsyncClient.get over MockTransport (sequential awaits)",
        "us",
        batch=cfg.client_calls,
        warmup=cfg.client_calls,
        repeats=cfg.repeats,
    )

    async def main() -> Section:
        clients = {
            v: httpx.AsyncClient(transport=wrap_async(v, httpx.MockTransport(ok)), trust_env=False)
            for v in VARIANTS
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
            runners = {v: await runner(v) for v in VARIANTS}
            return await ainterleave(section, cfg.rounds, runners)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(main())


def bench_layer_sync(cfg: Config) -> Section:
    section = Section(
        "inprocess_layer_sync",
        "transport layer only: transport.handle_request(request), pre-built request",
        "us",
        batch=cfg.layer_calls,
        warmup=cfg.layer_calls,
        repeats=cfg.repeats,
    )

    def runner(variant: str) -> SyncRunner:
        transport = wrap_sync(variant, httpx.MockTransport(ok))
        request = httpx.Request("GET", MOCK_URL)
        check_response(transport.handle_request(request), variant)
        handle = transport.handle_request

        def run(calls: int) -> float:
            with quiet_gc():
                start = time.perf_counter_ns()
                for _ in range(calls):
                    handle(request)
                elapsed = time.perf_counter_ns() - start
            return elapsed / calls / 1000

        return run

    return interleave(section, cfg.rounds, {v: runner(v) for v in VARIANTS})


def bench_layer_async(cfg: Config) -> Section:
    section = Section(
        "inprocess_layer_async",
        "transport layer only: await transport.handle_async_request(request)",
        "us",
        batch=cfg.layer_calls,
        warmup=cfg.layer_calls,
        repeats=cfg.repeats,
    )

    async def main() -> Section:
        async def runner(variant: str) -> AsyncRunner:
            transport = wrap_async(variant, httpx.MockTransport(ok))
            request = httpx.Request("GET", MOCK_URL)
            response = await transport.handle_async_request(request)
            await response.aread()
            check_response(response, variant)
            handle = transport.handle_async_request

            async def run(calls: int) -> float:
                with quiet_gc():
                    start = time.perf_counter_ns()
                    for _ in range(calls):
                        await handle(request)
                    elapsed = time.perf_counter_ns() - start
                return elapsed / calls / 1000

            return run

        runners = {v: await runner(v) for v in VARIANTS}
        return await ainterleave(section, cfg.rounds, runners)

    return asyncio.run(main())


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


def bench_loopback_sync(cfg: Config, url: str) -> Section:
    section = Section(
        "loopback_sync",
        "loopback: httpx.Client.get, sequential, one keep-alive connection",
        "rps",
        batch=cfg.sync_requests,
        warmup=max(cfg.sync_requests // 4, 50),
        repeats=cfg.repeats,
    )
    # httpx's default limits, but with idle connections kept for KEEPALIVE_EXPIRY
    limits = httpx.Limits(
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    clients = {
        v: httpx.Client(transport=wrap_sync(v, httpx.HTTPTransport(limits=limits)), trust_env=False)
        for v in VARIANTS
    }

    def runner(variant: str) -> SyncRunner:
        client = clients[variant]
        check_wrapping(client._transport, variant)
        check_response(client.get(url), variant)
        get = client.get

        def run(count: int) -> float:
            failed = 0
            with quiet_gc():
                start = time.perf_counter_ns()
                for _ in range(count):
                    if get(url).status_code != 200:
                        failed += 1
                elapsed = time.perf_counter_ns() - start
            if failed:
                raise RuntimeError(f"{variant}: {failed} of {count} loopback requests failed")
            return count / (elapsed / 1e9)

        return run

    try:
        return interleave(section, cfg.rounds, {v: runner(v) for v in VARIANTS})
    finally:
        for client in clients.values():
            client.close()


def bench_loopback_async(cfg: Config, url: str) -> Section:
    section = Section(
        "loopback_async",
        f"loopback: httpx.AsyncClient.get, {cfg.concurrency} concurrent (asyncio.gather)",
        "rps",
        batch=cfg.async_requests,
        # enough to open every connection of the pool before timing starts
        warmup=max(cfg.async_requests // 3, 2 * cfg.concurrency),
    )
    limits = httpx.Limits(max_connections=cfg.concurrency, keepalive_expiry=KEEPALIVE_EXPIRY)

    async def main() -> Section:
        # The pool size is the inner transport's: a client ignores limits= when given a transport.
        clients = {
            v: httpx.AsyncClient(
                transport=wrap_async(v, httpx.AsyncHTTPTransport(limits=limits)),
                trust_env=False,
                timeout=30.0,
            )
            for v in VARIANTS
        }

        async def runner(variant: str) -> AsyncRunner:
            client = clients[variant]
            check_wrapping(client._transport, variant)
            check_response(await client.get(url), variant)
            get = client.get

            async def run(count: int) -> float:
                semaphore = asyncio.Semaphore(cfg.concurrency)

                async def one() -> int:
                    async with semaphore:
                        return (await get(url)).status_code

                with quiet_gc():
                    start = time.perf_counter_ns()
                    statuses = await asyncio.gather(*(one() for _ in range(count)))
                    elapsed = time.perf_counter_ns() - start
                failed = sum(status != 200 for status in statuses)
                if failed:
                    raise RuntimeError(f"{variant}: {failed} of {count} loopback requests failed")
                return count / (elapsed / 1e9)

            return run

        try:
            runners = {v: await runner(v) for v in VARIANTS}
            return await ainterleave(section, cfg.rounds, runners)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(main())


# --------------------------------------------------------------------------- report


def _plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def _spread(section: Section, variant: str) -> str:
    low, high = min(section.samples[variant]), max(section.samples[variant])
    if section.unit == "us":
        return f"{low:8.2f} .. {high:<8.2f}"
    return f"{low:8.0f} .. {high:<8.0f}"


def format_section(number: int, section: Section, rounds: int) -> str:
    unit = f"{US}/req" if section.unit == "us" else "req/s"
    how = _plural(rounds, "round") + (f" x {section.repeats}" if section.repeats > 1 else "")
    lines = [
        f"[{number}] {section.title}",
        f"    median of {_plural(section.passes, 'sample')} ({how}) of {section.batch} "
        f"{section.item} each; "
        "cost = time per request / bare httpx's",
        f"    {'variant':<15}{'median ' + unit:>14}  {'min .. max':^20}  {'cost':>6}  "
        f"{'overhead vs bare':>22}",
    ]
    for variant in VARIANTS:
        median = section.median(variant)
        value = f"{median:14.2f}" if section.unit == "us" else f"{median:14.0f}"
        if variant == BARE:
            overhead = "-"
        elif section.unit == "us":
            overhead = f"{section.overhead_us(variant):+.2f} {US}/req"
        else:
            percent = (section.ratio(variant) - 1) * 100
            overhead = f"{percent:+.1f}% ({section.overhead_us(variant):+.1f} {US}/req)"
        lines.append(
            f"    {variant:<15}{value}  {_spread(section, variant):^20}  "
            f"{section.ratio(variant):5.2f}x  {overhead:>22}"
        )
    delta = section.us_per_request(OURS) - section.us_per_request(PEER)
    verdict = "cheaper" if delta < 0 else "dearer"
    passes = _plural(section.passes, "pass", "passes")
    lines.append(
        f"    {OURS} vs {PEER}: {delta:+.2f} {US}/req ({OURS} is {abs(delta):.2f} {US} "
        f"{verdict}; cheaper in {section.wins(OURS, PEER)} of {passes})"
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
        "loopback_overhead_percent": {
            "sync": (sync.ratio(OURS) - 1) * 100,
            "async": (async_.ratio(OURS) - 1) * 100,
        },
        "loopback_overhead_percent_peer": {
            "sync": (sync.ratio(PEER) - 1) * 100,
            "async": (async_.ratio(PEER) - 1) * 100,
        },
        "loopback_passes_slower_than_bare": {
            "sync": f"{sync.wins(BARE, OURS)}/{sync.passes}",
            "async": f"{async_.wins(BARE, OURS)}/{async_.passes}",
        },
        "layer_sync_overhead_us": {OURS: ours_us, PEER: peer_us},
        "ours_in_process_overhead_lower": lower["inprocess_layer_sync"],
        "ours_lower_than_peer_per_section": lower,
    }
    return text, data


def _meta(cfg: Config) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": load,
        "versions": {name: version(name) for name in ("httpx", "httpx-retries", "resilience")},
        "config": dataclasses.asdict(cfg),
        "sniffio_installed": importlib.util.find_spec("sniffio") is not None,
    }


# --------------------------------------------------------------------------- main


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # Handled like Ctrl-C, which asyncio.run turns into a clean cancellation; the unwinding
    # runs the finally clauses, so the server subprocess is stopped.
    signal.raise_signal(signal.SIGINT)


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

    def report(section: Section) -> None:
        sections[section.key] = section
        print(format_section(len(sections), section, cfg.rounds), flush=True)
        print(flush=True)

    report(bench_client_sync(cfg))
    report(bench_client_async(cfg))
    report(bench_layer_sync(cfg))
    report(bench_layer_async(cfg))
    with tempfile.TemporaryFile() as server_log:
        server = Server(server_log)
        try:
            report(bench_loopback_sync(cfg, server.url))
            report(bench_loopback_async(cfg, server.url))
        finally:
            server.stop()

    summary, summary_data = summarize(sections)
    elapsed = time.perf_counter() - began
    print(summary)
    print(f"(took {elapsed:.1f} s)")
    if args.json:
        document = {
            "meta": {**meta, "elapsed_seconds": elapsed},
            "sections": {key: section.to_json() for key, section in sections.items()},
            "summary": summary_data,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
