"""The demo: one workload through bare httpx and through a resilience stack, on 127.0.0.1.

``python -m resilience demo`` (``bash scripts/demo``) starts a
:class:`~resilience.testing.FaultServer` on 127.0.0.1, plays the same workload four times (sync
and async, bare httpx and the stack of :func:`demo_stack`) and prints what each run saw:
success rate, duplicate POSTs, latency percentiles, retries, breaker trips and cache hits.

The workload mixes what an API client sends:

- ``POST /orders`` places an order whose id is in the body. The server takes the order before
  it answers, so when a reset loses the answer the order is taken all the same. With the stack
  each POST carries an ``Idempotency-Key``, so the retry layer may resend it; the server answers
  a key whose order it took with its recorded answer, as Stripe does, instead of taking it again.
- ``GET /catalog?page=N``: a few pages, fresh for a minute (``Cache-Control: max-age=60``).
- ``GET /items?id=N``: one item per request, never stored (``Cache-Control: no-store``).

A share of answers (``fault_rate``) are faults, uniformly one of the mix of
:meth:`FaultServer.chaos <resilience.testing.FaultServer.chaos>`: 503 or 429 with Retry-After,
500, 502, a connection reset, or a 200 delayed by 0.2 s. The faults depend only on the seed and
the order in which requests arrive. Every client ignores the environment's proxies
(``trust_env=False``), so no request leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import pybreaker
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ._breaker import CircuitBreaker
from ._exceptions import ResilienceError
from ._retry import Retry
from ._transports import CACHE_STATUS, Stack
from .testing import FaultServer, Outcome, RecordedRequest, Reset, Respond

__all__ = [
    "Call",
    "DemoBackend",
    "RunResult",
    "TripCounter",
    "demo_stack",
    "plan",
    "render",
    "run_demo",
]

TIMEOUT = 5.0
"""The clients' httpx timeout, seconds."""
SLOW = 0.2
"""How long the server holds a slow answer, seconds."""
RETRY_AFTER = 0.05
"""What the 503 and 429 faults ask for (``retry-after-ms: 50``; ``Retry-After: 1``)."""
CATALOG_PAGES = 10
MAX_REQUESTS = 100_000
FAULTS = ("503", "429", "500", "502", "reset", "slow")
"""The kinds of fault the server draws from, uniformly (the mix of ``FaultServer.chaos``)."""
CALL_HEADER = "x-demo-call"
"""Numbers each logical request, so the server can tell a retry from a new request."""

_RETRY_HEADERS = (("Retry-After", "1"), ("retry-after-ms", str(round(RETRY_AFTER * 1000))))
_FAULT_ANSWERS: dict[str, Outcome] = {
    "503": Respond(503, b"service unavailable", headers=(*_RETRY_HEADERS, ("x-fault", "503"))),
    "429": Respond(429, b"too many requests", headers=(*_RETRY_HEADERS, ("x-fault", "429"))),
    "500": Respond(500, b"internal server error", headers=(("x-fault", "500"),)),
    "502": Respond(502, b"bad gateway", headers=(("x-fault", "502"),)),
}
_JSON = ("content-type", "application/json")
_Tick = Callable[[], None]


def demo_stack(*, listeners: Sequence[pybreaker.CircuitBreakerListener] = ()) -> Stack:
    """:meth:`Stack.default() <resilience.Stack.default>` tuned so the demo ends in seconds.

    The cache, the retry budget, the attempts and the log are the default ones. Changed, because
    the defaults suit production time scales (a demo run lasts a second or two):

    - backoff from 0.05 s capped at 1 s (default: from 0.5 s, capped at 30 s);
    - a 5 s deadline per logical request (default: 60 s);
    - the open breaker lets a probe through after 0.1 s (default: 30 s).

    Args:
        listeners: ``pybreaker.CircuitBreakerListener`` objects for the breaker (the demo
            counts trips with a :class:`TripCounter`).
    """
    default = Stack.default()
    retry, breaker = _retry_and_breaker(default)
    return default.replace(
        retry=retry.replace(backoff=retry.backoff.replace(base=0.05, cap=1.0), deadline=5.0),
        breaker=breaker.replace(reset_timeout=0.1, listeners=tuple(listeners)),
    )


def _retry_and_breaker(stack: Stack) -> tuple[Retry, CircuitBreaker]:
    """The retry and breaker layers of ``stack``, which the demo's presets both have."""
    if stack.retry is None or stack.breaker is None:  # pragma: no cover - both presets have both
        raise RuntimeError(f"the demo needs a stack with a retry and a breaker layer: {stack}")
    return stack.retry, stack.breaker


class TripCounter(pybreaker.CircuitBreakerListener):
    """A pybreaker listener counting how often a circuit opened."""

    def __init__(self) -> None:
        self.trips = 0
        self._lock = threading.Lock()

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        """Count a move to the open state."""
        if new_state.name == pybreaker.STATE_OPEN:
            with self._lock:
                self.trips += 1


@dataclass(frozen=True, slots=True)
class Call:
    """One logical request of the workload.

    Attributes:
        number: its place in the workload; sent in the ``x-demo-call`` header.
        method: ``"GET"`` or ``"POST"``.
        target: the path and query under the run's prefix, e.g. ``"/catalog?page=3"``.
        body: the POST body, None for a GET.
    """

    number: int
    method: str
    target: str
    body: bytes | None = None


def plan(requests: int, seed: int) -> list[Call]:
    """The workload: about 20% POST /orders, 25% GET /catalog (cacheable), 55% GET /items."""
    rng = random.Random(f"workload-{seed}")
    calls = []
    for number in range(requests):
        draw = rng.random()
        if draw < 0.2:
            body = json.dumps({"order": number}).encode()
            calls.append(Call(number, "POST", "/orders", body))
        elif draw < 0.45:
            calls.append(Call(number, "GET", f"/catalog?page={rng.randrange(CATALOG_PAGES)}"))
        else:
            calls.append(Call(number, "GET", f"/items?id={number}"))
    return calls


class DemoBackend:
    """The flaky API behind one run: a route handler for :meth:`FaultServer.route`.

    It draws a fault for every request it receives, takes orders, answers a repeated
    ``Idempotency-Key`` from its record, and counts what a client cannot see: requests
    received, orders taken more than once.

    Args:
        fault_rate: the share of answers that are faults, in [0, 1].
        seed: seeds the fault sequence.
        faults: the kinds of fault drawn from, uniformly: ``"503"``, ``"429"``, ``"500"``,
            ``"502"``, ``"reset"``, ``"slow"`` (default: all of them).

    Raises:
        ValueError: a fault rate outside [0, 1], or an unknown or empty ``faults``.
    """

    def __init__(self, *, fault_rate: float, seed: int, faults: Sequence[str] = FAULTS) -> None:
        self.fault_rate = _check_fault_rate(fault_rate)
        if isinstance(faults, str) or not faults or not set(faults) <= set(FAULTS):
            raise ValueError(
                f"faults must be a non-empty sequence drawn from {FAULTS}, got {faults!r}"
            )
        self.faults = tuple(faults)
        self._rng = random.Random(f"faults-{seed}")
        self._lock = threading.Lock()
        self._received = 0
        self._calls: set[str] = set()
        self._orders: Counter[str] = Counter()
        self._answers: dict[str, bytes] = {}
        self._replays = 0

    def install(self, server: FaultServer, prefix: str) -> None:
        """Serve ``prefix + "/orders"``, ``"/catalog"`` and ``"/items"`` on ``server``."""
        for name in ("orders", "catalog", "items"):
            server.route(f"{prefix}/{name}", self)

    @property
    def received(self) -> int:
        """Requests received, retries included."""
        with self._lock:
            return self._received

    @property
    def retries(self) -> int:
        """Requests received beyond the first of each logical request (``x-demo-call``)."""
        with self._lock:
            return self._received - len(self._calls)

    @property
    def duplicates(self) -> int:
        """Orders taken more than once: every extra time counts."""
        with self._lock:
            return sum(times - 1 for times in self._orders.values())

    @property
    def replays(self) -> int:
        """POSTs answered from the record of their ``Idempotency-Key``."""
        with self._lock:
            return self._replays

    def __call__(self, request: RecordedRequest) -> Outcome:
        """Answer one request: a fault, or the resource (an order is taken first)."""
        with self._lock:
            self._received += 1
            call = request.header(CALL_HEADER)
            if call is not None:
                self._calls.add(call)
            fault = self._rng.choice(self.faults) if self._rng.random() < self.fault_rate else None
            answer = _FAULT_ANSWERS.get(fault or "")
            if answer is not None:
                return answer  # the server failed before doing anything
            resource = request.path.rpartition("/")[2]
            outcome: Respond
            if resource == "orders" and request.method == "POST":
                outcome = self._order(request)
            elif resource == "catalog":
                body = json.dumps({"catalog": request.query}).encode()
                outcome = Respond(200, body, headers=(_JSON, ("cache-control", "max-age=60")))
            else:
                body = json.dumps({"item": request.query}).encode()
                outcome = Respond(200, body, headers=(_JSON, ("cache-control", "no-store")))
        if fault == "reset":
            return Reset()  # for a POST, the order is taken and its answer is lost
        if fault == "slow":
            return Respond(outcome.status, outcome.body, outcome.headers, delay=SLOW)
        return outcome

    def _order(self, request: RecordedRequest) -> Respond:
        """Take the order in the body, or replay the answer of a known ``Idempotency-Key``."""
        key = request.header("idempotency-key")
        if key is not None and key in self._answers:
            self._replays += 1
            return Respond(
                201, self._answers[key], headers=(_JSON, ("idempotent-replayed", "true"))
            )
        try:
            order = str(json.loads(request.body)["order"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return Respond(
                400, b'{"error": "the body must be {\\"order\\": id}"}', headers=(_JSON,)
            )
        self._orders[order] += 1
        body = json.dumps({"order": order, "status": "accepted"}).encode()
        if key is not None:
            self._answers[key] = body
        return Respond(201, body, headers=(_JSON,))


@dataclass
class RunResult:
    """What one run of the workload saw, from the client's side and from the server's."""

    name: str
    requests: int
    ok: int = 0
    cache_hits: int = 0
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    duplicates: int = 0
    replays: int = 0
    breaker_trips: int = 0
    elapsed: float = 0.0

    def record(self, started: float, response: httpx.Response | None) -> None:
        """Count one logical request's outcome (None: it raised)."""
        self.latencies.append(time.perf_counter() - started)
        if response is not None:
            if response.is_success:
                self.ok += 1
            if response.extensions.get(CACHE_STATUS) == "hit":
                self.cache_hits += 1

    @property
    def success_rate(self) -> float:
        """Share of logical requests that got a 2xx."""
        return self.ok / self.requests if self.requests else 0.0

    def percentile(self, q: int) -> float:
        """Latency percentile ``q`` (1..99), in milliseconds."""
        if len(self.latencies) < 2:
            return 1000 * (self.latencies[0] if self.latencies else 0.0)
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


def _headers(call: Call, keyed: bool) -> dict[str, str]:
    headers = {CALL_HEADER: str(call.number)}
    if keyed and call.method == "POST":
        headers["Idempotency-Key"] = f"order-{call.number}"
    return headers


def _finish(result: RunResult, backend: DemoBackend, trips: TripCounter, started: float) -> None:
    result.elapsed = time.perf_counter() - started
    result.retries = backend.retries
    result.duplicates = backend.duplicates
    result.replays = backend.replays
    result.breaker_trips = trips.trips


def _run_sync(
    name: str, base_url: str, backend: DemoBackend, calls: list[Call], resilient: bool, tick: _Tick
) -> RunResult:
    result = RunResult(name, len(calls))
    trips = TripCounter()
    if resilient:
        client = demo_stack(listeners=[trips]).client(
            base_url=base_url, timeout=TIMEOUT, trust_env=False
        )
    else:
        client = httpx.Client(base_url=base_url, timeout=TIMEOUT, trust_env=False)
    started_run = time.perf_counter()
    with client:
        for call in calls:
            started = time.perf_counter()
            try:
                response: httpx.Response | None = client.request(
                    call.method, call.target, content=call.body, headers=_headers(call, resilient)
                )
            except (httpx.HTTPError, ResilienceError):
                response = None
            result.record(started, response)
            tick()
    _finish(result, backend, trips, started_run)
    return result


async def _run_async(
    name: str,
    base_url: str,
    backend: DemoBackend,
    calls: list[Call],
    resilient: bool,
    tick: _Tick,
    concurrency: int,
) -> RunResult:
    result = RunResult(name, len(calls))
    trips = TripCounter()
    if resilient:
        client = demo_stack(listeners=[trips]).async_client(
            base_url=base_url, timeout=TIMEOUT, trust_env=False
        )
    else:
        client = httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT, trust_env=False)
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Call) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                response: httpx.Response | None = await client.request(
                    call.method, call.target, content=call.body, headers=_headers(call, resilient)
                )
            except (httpx.HTTPError, ResilienceError):
                response = None
            result.record(started, response)
            tick()

    started_run = time.perf_counter()
    async with client:
        await asyncio.gather(*(one(call) for call in calls))
    _finish(result, backend, trips, started_run)
    return result


_COLUMNS = (
    ("run", 20, "<"),
    ("success", 9, ">"),
    ("dup POSTs", 11, ">"),
    ("p50 ms", 8, ">"),
    ("p99 ms", 8, ">"),
    ("retries", 9, ">"),
    ("breaker trips", 15, ">"),
    ("cache hits", 12, ">"),
    ("time s", 8, ">"),
)


def render(results: Sequence[RunResult]) -> str:
    """The results as a plain text table, one row per run."""
    header = "".join(f"{title:{align}{width}}" for title, width, align in _COLUMNS)
    lines = [header, "-" * len(header)]
    for r in results:
        cells = (
            r.name,
            f"{r.success_rate:.1%}",
            r.duplicates,
            f"{r.percentile(50):.1f}",
            f"{r.percentile(99):.1f}",
            r.retries,
            r.breaker_trips,
            r.cache_hits,
            f"{r.elapsed:.2f}",
        )
        lines.append(
            "".join(
                f"{cell:{align}{width}}"
                for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
            )
        )
    return "\n".join(lines)


def _check_fault_rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"fault_rate must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_count(name: str, value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def _progress_bars() -> Progress:
    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
    )


def run_demo(
    *,
    requests: int = 300,
    fault_rate: float = 0.3,
    seed: int = 7,
    concurrency: int = 20,
    out: TextIO | None = None,
    progress: bool = True,
) -> int:
    """Play the workload four times (sync and async, bare and resilient), print the table.

    Args:
        requests: logical requests per run (1..100,000).
        fault_rate: share of the server's answers that are faults, in [0, 1].
        seed: seeds the workload and the fault sequence.
        concurrency: requests in flight at once in the async runs (1..10,000).
        out: where the table goes (default: standard output).
        progress: show progress bars on standard error while the runs go.

    Returns:
        0, the exit status.

    Raises:
        ValueError, TypeError: a bad argument, naming it.
    """
    requests = _check_count("requests", requests, MAX_REQUESTS)
    fault_rate = _check_fault_rate(fault_rate)
    concurrency = _check_count("concurrency", concurrency, 10_000)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    out = sys.stdout if out is None else out
    calls = plan(requests, seed)
    runs = (
        ("sync, bare httpx", False, False),
        ("sync, resilience", True, False),
        ("async, bare httpx", False, True),
        ("async, resilience", True, True),
    )
    results: list[RunResult] = []
    with FaultServer("127.0.0.1") as server:
        out.write(_intro(server.url, calls, fault_rate, seed, concurrency))
        out.flush()
        bars = _progress_bars() if progress else None
        if bars is not None:
            bars.start()
        try:
            for index, (name, resilient, concurrent) in enumerate(runs):
                backend = DemoBackend(fault_rate=fault_rate, seed=seed)
                prefix = f"/run{index}"
                backend.install(server, prefix)
                tick = _ticker(bars, name, requests)
                if concurrent:
                    run = _run_async(
                        name, server.url + prefix, backend, calls, resilient, tick, concurrency
                    )
                    results.append(asyncio.run(run))
                else:
                    results.append(
                        _run_sync(name, server.url + prefix, backend, calls, resilient, tick)
                    )
        finally:
            if bars is not None:
                bars.stop()
    out.write(render(results) + "\n\n")
    out.write(_legend(sum(r.replays for r in results)))
    if any(r.breaker_trips for r in results):
        out.write(_BREAKER_OPENED)
    return 0


_BREAKER_OPENED = (
    "\nThe breaker opened: at this fault rate the stack fails requests at once rather than add "
    "load to\na server that is failing, so it can answer fewer than bare httpx does. That is the "
    "breaker's\npurpose; CircuitOpenError.retry_after tells an application when to try again.\n"
)


def _intro(url: str, calls: Sequence[Call], fault_rate: float, seed: int, concurrency: int) -> str:
    """What the runs are about to do: the server, the workload, the two clients."""
    posts = sum(call.method == "POST" for call in calls)
    catalog = sum(call.target.startswith("/catalog") for call in calls)
    items = len(calls) - posts - catalog
    return (
        f"A flaky API on {url}: {fault_rate:.0%} of its answers are faults (503 or 429 with\n"
        f"Retry-After, 500, 502, a connection reset, or a 200 delayed by {SLOW:g} s). A reset "
        "after a POST\nloses the answer, not the order.\n"
        f"Each run sends the same {len(calls)} requests: {posts} POST /orders, {catalog} GET "
        f"/catalog (max-age=60,\n{CATALOG_PAGES} pages), {items} GET /items (no-store); the "
        f"async runs keep {concurrency} in flight. Seed {seed}.\n\n"
        "bare httpx  httpx.Client and httpx.AsyncClient: no retries, no cache, no breaker.\n"
        "resilience  rs.Stack.default() (cache, retry with a budget, breaker, log), tuned for a "
        "short demo:\n"
        f"            {_tuning()}\n"
        "            Its POSTs carry an Idempotency-Key.\n\n"
    )


def _tuning() -> str:
    """How :func:`demo_stack` differs from ``Stack.default()``, read from both."""
    before, default = _retry_and_breaker(Stack.default())
    after, demo = _retry_and_breaker(demo_stack())
    return (
        f"backoff from {after.backoff.base:g} s capped at {after.backoff.cap:g} s (default: from "
        f"{before.backoff.base:g} s, capped at {before.backoff.cap:g} s),\n            a "
        f"{after.deadline:g} s deadline (default {before.deadline:g} s), a breaker probing "
        f"{demo.reset_timeout:g} s after it opens (default "
        f"{default.reset_timeout:g} s)."
    )


def _legend(replays: int) -> str:
    """What the columns mean, and what the server saw of the resent POSTs."""
    posts = "POST" if replays == 1 else "POSTs"
    fail_max = _retry_and_breaker(demo_stack())[1].fail_max
    return (
        "success: requests answered 2xx. dup POSTs: orders the server took more than once.\n"
        "p50, p99: latency of each logical request, its retries and waits included.\n"
        "retries: requests the server received beyond the first of each logical request.\n"
        f"breaker trips: times a circuit opened ({fail_max} failures in a row); while it is open, "
        "requests fail\nat once, without reaching the server. cache hits: answered by the "
        "client's cache.\n"
        f"The server answered {replays} resent {posts} from its record of their "
        "Idempotency-Key, so the\nstack's retries took no order twice; bare httpx never resends "
        "a POST.\n"
    )


def _ticker(bars: Progress | None, name: str, total: int) -> _Tick:
    if bars is None:
        return _nothing
    task = bars.add_task(name, total=total)

    def tick() -> None:
        bars.advance(task)

    return tick


def _nothing() -> None:
    pass
