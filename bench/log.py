"""Benchmark: what the logging layer costs, in-process, next to bare httpx.

Run ``python bench/log.py`` (about a minute) or ``python bench/log.py --quick`` (a few seconds).
Nothing leaves the process: every request is answered by ``httpx.MockTransport``.

Variants, each with both scopes (``LogTransport(LogTransport(mock, log, scope="attempt"),
log)``, the way a stack puts them) except ``httpx``:

- ``httpx``: bare httpx, no logging layer;
- ``off``: ``Log()`` in an application that configured no logging (the stdlib level is above
  INFO and there is no handler): nothing can be emitted, the layers pass the request through;
- ``filtered-stdlib``: ``Log()`` with a handler on the root logger and ``"resilience"`` at
  WARNING: successes are filtered out, failures would be logged, so a request id is made and
  bound for each request;
- ``filtered-structlog``: ``Log(logger)`` with a user's logger from
  ``structlog.make_filtering_bound_logger(WARNING)``: the same, through structlog;
- ``rendered``: ``Log(logger)`` at INFO, every event rendered to JSON into a list (not stdout).

Sections: 1. ``httpx.Client.get``; 2. ``httpx.AsyncClient.get`` (sequential awaits); 3. the
transport layers alone, ``handle_request`` on one pre-built request. Variants are interleaved
within every round (the starting variant rotates), each batch runs with the garbage collector
off, and the tables report the median µs per request, its spread, the ratio to bare httpx and
the overhead in µs. The run ends with a ``SUMMARY`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from structlog.testing import CapturingLogger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resilience as rs

URL = "http://127.0.0.1:9/items?page=2"
VARIANTS = ("httpx", "off", "filtered-stdlib", "filtered-structlog", "rendered")
ROOT = logging.getLogger()
LIBRARY = logging.getLogger("resilience")
HANDLER = logging.NullHandler()


def ok(request: httpx.Request) -> httpx.Response:
    """The in-process server: 200 with a small body."""
    return httpx.Response(200, content=b"ok")


@dataclass
class Variant:
    """One way of logging: its policy, and the global logging state it needs."""

    name: str
    log: rs.Log | None
    stdlib_level: int | None = None  # "resilience"'s level; None: unconfigured, no handler
    output: CapturingLogger | None = None

    def prepare(self) -> None:
        """Set the stdlib state this variant runs under, and empty its output (untimed)."""
        if self.stdlib_level is None:
            if HANDLER in ROOT.handlers:
                ROOT.removeHandler(HANDLER)
            LIBRARY.setLevel(logging.NOTSET)
        else:
            if HANDLER not in ROOT.handlers:
                ROOT.addHandler(HANDLER)
            LIBRARY.setLevel(self.stdlib_level)
        if self.output is not None:
            self.output.calls.clear()

    def wrap(self, inner: Any) -> Any:
        """The transport for this variant around ``inner``."""
        if self.log is None:
            return inner
        return rs.LogTransport(rs.LogTransport(inner, self.log, scope="attempt"), self.log)


def user_logger(level: int) -> tuple[Any, CapturingLogger]:
    """A user's structlog logger rendering JSON into memory, filtering below ``level``."""
    output = CapturingLogger()
    logger = structlog.wrap_logger(
        output,
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
    return logger, output


def variants() -> dict[str, Variant]:
    filtered, _ = user_logger(logging.WARNING)
    rendered, output = user_logger(logging.INFO)
    return {
        "httpx": Variant("httpx", None),
        "off": Variant("off", rs.Log()),
        "filtered-stdlib": Variant("filtered-stdlib", rs.Log(), stdlib_level=logging.WARNING),
        "filtered-structlog": Variant("filtered-structlog", rs.Log(filtered)),
        "rendered": Variant("rendered", rs.Log(rendered), output=output),
    }


@dataclass
class Section:
    """The samples of one section: µs per request, per variant."""

    title: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, variant: str) -> float:
        return statistics.median(self.samples[variant])

    def ratio(self, variant: str) -> float:
        return self.median(variant) / self.median("httpx")

    def overhead(self, variant: str) -> float:
        return self.median(variant) - self.median("httpx")

    def table(self) -> str:
        lines = [
            f"\n{self.title}",
            f"  {'variant':<20} {'median µs':>10} {'min .. max':>18} {'cost':>7} {'overhead':>10}",
        ]
        for name in VARIANTS:
            values = self.samples[name]
            lines.append(
                f"  {name:<20} {self.median(name):>10.1f} "
                f"{min(values):>8.1f} .. {max(values):<7.1f} {self.ratio(name):>6.2f}x "
                f"{self.overhead(name):>+8.1f} µs"
            )
        return "\n".join(lines)


def orders(passes: int) -> list[tuple[str, ...]]:
    """Variant orders, rotating the first one pass after pass."""
    return [VARIANTS[i % len(VARIANTS) :] + VARIANTS[: i % len(VARIANTS)] for i in range(passes)]


def timed(batch: Callable[[], None], calls: int) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        batch()
        return (time.perf_counter_ns() - start) / calls / 1000
    finally:
        gc.enable()


def run_sync(
    title: str, calls: int, passes: int, make: Callable[[Variant], Callable[[], None]]
) -> Section:
    section = Section(title, {name: [] for name in VARIANTS})
    table = variants()
    batches = {name: make(variant) for name, variant in table.items()}
    for name in VARIANTS:  # warm-up
        table[name].prepare()
        batches[name]()
    for order in orders(passes):
        for name in order:
            table[name].prepare()
            section.samples[name].append(timed(batches[name], calls))
    table["httpx"].prepare()  # leave logging as we found it
    return section


def bench_client_sync(calls: int, passes: int) -> Section:
    def make(variant: Variant) -> Callable[[], None]:
        client = httpx.Client(transport=variant.wrap(httpx.MockTransport(ok)))

        def batch() -> None:
            for _ in range(calls):
                client.get(URL)

        return batch

    return run_sync("1. in-process, httpx.Client.get", calls, passes, make)


def bench_layer_sync(calls: int, passes: int) -> Section:
    def make(variant: Variant) -> Callable[[], None]:
        transport = variant.wrap(httpx.MockTransport(ok))
        request = httpx.Request("GET", URL)

        def batch() -> None:
            for _ in range(calls):
                transport.handle_request(request)

        return batch

    return run_sync("3. the transport layers alone, handle_request", calls, passes, make)


def bench_client_async(calls: int, passes: int) -> Section:
    async def main() -> Section:
        section = Section("2. in-process, httpx.AsyncClient.get", {name: [] for name in VARIANTS})
        table = variants()

        def make(variant: Variant) -> Callable[[], Awaitable[None]]:
            client = httpx.AsyncClient(transport=variant.wrap(httpx.MockTransport(ok)))

            async def batch() -> None:
                for _ in range(calls):
                    await client.get(URL)

            return batch

        batches = {name: make(variant) for name, variant in table.items()}
        for name in VARIANTS:
            table[name].prepare()
            await batches[name]()
        for order in orders(passes):
            for name in order:
                table[name].prepare()
                gc.collect()
                gc.disable()
                try:
                    start = time.perf_counter_ns()
                    await batches[name]()
                    elapsed = time.perf_counter_ns() - start
                finally:
                    gc.enable()
                section.samples[name].append(elapsed / calls / 1000)
        table["httpx"].prepare()
        return section

    return asyncio.run(main())


def check_events() -> None:
    """The variants do what they say: only ``rendered`` emits, one event per scope."""
    table = variants()
    for name, variant in table.items():
        variant.prepare()
        with httpx.Client(transport=variant.wrap(httpx.MockTransport(ok))) as client:
            client.get(URL)
        if variant.output is not None:
            events = [json.loads(call.args[0])["event"] for call in variant.output.calls]
            if events != ["http.attempt", "http.request"]:
                raise SystemExit(f"{name}: unexpected events {events}")
    table["httpx"].prepare()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args(argv)
    calls, passes = (200, 5) if args.quick else (2000, 15)
    check_events()
    print(
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}, structlog "
        f"{structlog.__version__}; {calls} calls per batch, {passes} passes per section"
    )
    sections = [
        bench_client_sync(calls, passes),
        bench_client_async(calls, passes),
        bench_layer_sync(calls * 2, passes),
    ]
    for section in sections:
        print(section.table())
    client, aclient, layer = sections
    summary = "; ".join(
        f"{name} {client.ratio(name):.2f}x sync / {aclient.ratio(name):.2f}x async "
        f"({layer.overhead(name):+.1f} µs per request in the layers)"
        for name in VARIANTS[1:]
    )
    print(f"\nSUMMARY logging vs bare httpx, in-process: {summary}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    section.title: {
                        name: {
                            "median_us": section.median(name),
                            "ratio": section.ratio(name),
                            "samples_us": section.samples[name],
                        }
                        for name in VARIANTS
                    }
                    for section in sections
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
