"""The demo: the same workload, bare httpx vs httpx with resilience, against a flaky server.

The server (``resilience.testing.FaultServer``, on 127.0.0.1 only) answers a share of requests
with 503/429 carrying Retry-After, 500/502, connection resets and slow responses.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import TextIO

import httpx

from ._retry import Backoff, Retry
from ._transports import RetryTransport
from .testing import FaultServer

__all__ = ["RunResult", "demo_policy", "run_demo"]


def demo_policy() -> Retry:
    """The retry policy the demo uses: 5 attempts, short full-jitter backoff, 10 s deadline."""
    return Retry(attempts=5, backoff=Backoff(base=0.05, cap=1.0), deadline=10.0)


@dataclass
class RunResult:
    """What one run of the workload saw."""

    name: str
    requests: int
    ok: int = 0
    failed_status: int = 0
    errors: int = 0
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def record(self, started: float, response: httpx.Response | None) -> None:
        """Count one logical request's outcome."""
        self.latencies.append(time.monotonic() - started)
        if response is None:
            self.errors += 1
        elif response.is_success:
            self.ok += 1
        else:
            self.failed_status += 1

    @property
    def success_rate(self) -> float:
        """Share of logical requests that got a 2xx."""
        return self.ok / self.requests if self.requests else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if len(self.latencies) < 2:
            return 1000 * (self.latencies[0] if self.latencies else 0.0)
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


def _run_sync(name: str, server: FaultServer, path: str, n: int, retry: Retry | None) -> RunResult:
    result = RunResult(name, n)
    before = server.count(path)
    inner = httpx.HTTPTransport()
    transport: httpx.BaseTransport = inner if retry is None else RetryTransport(inner, retry)
    started_run = time.monotonic()
    with httpx.Client(transport=transport, base_url=server.url, timeout=5.0) as client:
        for _ in range(n):
            started = time.monotonic()
            try:
                response: httpx.Response | None = client.get(path)
            except httpx.HTTPError:
                response = None
            result.record(started, response)
    result.elapsed = time.monotonic() - started_run
    result.sent = server.count(path) - before
    return result


async def _run_async(
    name: str, server: FaultServer, path: str, n: int, retry: Retry | None, concurrency: int
) -> RunResult:
    result = RunResult(name, n)
    before = server.count(path)
    inner = httpx.AsyncHTTPTransport()
    transport: httpx.AsyncBaseTransport = inner if retry is None else RetryTransport(inner, retry)
    gate = asyncio.Semaphore(concurrency)
    started_run = time.monotonic()
    async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=5.0) as client:

        async def one() -> None:
            async with gate:
                started = time.monotonic()
                try:
                    response: httpx.Response | None = await client.get(path)
                except httpx.HTTPError:
                    response = None
                result.record(started, response)

        await asyncio.gather(*(one() for _ in range(n)))
    result.elapsed = time.monotonic() - started_run
    result.sent = server.count(path) - before
    return result


def render(results: list[RunResult]) -> str:
    """The results as a text table."""
    header = (
        f"{'run':<26}{'success':>9}{'5xx/429':>9}{'errors':>8}{'sent':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'time s':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.name:<26}{r.success_rate:>9.1%}{r.failed_status:>9}{r.errors:>8}{r.sent:>7}"
            f"{r.percentile(50):>9.1f}{r.percentile(99):>9.1f}{r.elapsed:>8.2f}"
        )
    return "\n".join(lines)


def run_demo(*, requests: int, fault_rate: float, seed: int, concurrency: int, out: TextIO) -> int:
    """Run the four runs (sync and async, bare and resilient), print the table, return 0."""
    if requests < 1:
        raise ValueError(f"requests must be >= 1, got {requests!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
    retry = demo_policy()
    with FaultServer() as server:
        out.write(
            f"flaky server on {server.url}: {fault_rate:.0%} of answers are 503/429 with "
            "Retry-After, 500/502, connection resets or slow\n"
            f"{requests} GETs per run; resilient = RetryTransport({retry.attempts} attempts, "
            f"full-jitter backoff from {retry.backoff.base:g}s, {retry.deadline:g}s deadline)\n\n"
        )
        results: list[RunResult] = []
        for name, policy in (("sync, bare httpx", None), ("sync, resilience", retry)):
            server.chaos(f"/{len(results)}", fault_rate=fault_rate, seed=seed)
            results.append(_run_sync(name, server, f"/{len(results)}", requests, policy))
        for name, policy in (("async, bare httpx", None), ("async, resilience", retry)):
            server.chaos(f"/{len(results)}", fault_rate=fault_rate, seed=seed)
            results.append(
                asyncio.run(
                    _run_async(name, server, f"/{len(results)}", requests, policy, concurrency)
                )
            )
    out.write(render(results) + "\n\n")
    out.write(
        "success: share of requests that got a 2xx; sent: requests the server received "
        "(retries included)\n"
    )
    return 0
