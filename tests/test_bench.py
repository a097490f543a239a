"""The benchmark script runs (a smoke test: speed targets never go in the test suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_run(tmp_path: Path) -> None:
    """`bench/run.py --quick` measures every variant and prints ratios to bare httpx."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for variant in (
        "httpx",
        "resilience",
        "httpx-retries",
        "ratelimit",
        "breaker",
        "retry+breaker+ratelimit",
        "aiolimiter",
        "pyrate-limiter",
        "Stack.default()",
    ):
        assert variant in done.stdout
    assert "SUMMARY" in done.stdout
    assert "x " in done.stdout or "x\n" in done.stdout  # ratio column, e.g. "1.03x"
    document = json.loads(out.read_text())
    limits = document["summary"]["rate_limit"]
    assert set(limits["all_three_loopback_overhead_percent"]) == {"sync", "async"}
    # accuracy is behaviour, not speed: a moving window never admits more than its limit
    assert set(document["summary"]["stack"]["loopback_ratio"]) == {"sync", "async"}
    for path in ("acquire_async, moving-window", "acquire (sync), moving-window"):
        assert 0 < limits["max_in_any_window"][path] <= 20, path


def test_cache_bench_quick_run(tmp_path: Path) -> None:
    """`bench/cache.py --quick` compares a hit with a loopback round trip and with hishel."""
    out = tmp_path / "cache.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cache.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for name in ("httpx loopback", "resilience hit", "hishel", "hishel-rfc", "SUMMARY"):
        assert name in done.stdout
    summary = json.loads(out.read_text())["summary"]
    assert summary["hit_speedup_vs_loopback"] > 1  # a hit skips the network: never slower
    assert set(summary["miss_us"]) == {"httpx", "resilience", "hishel", "hishel-rfc"}


def test_layers_bench_quick_run() -> None:
    """`bench/layers.py --quick` prints each layer's paired overhead, sync and async."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "layers.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for section in ("[1] httpx.Client.get", "[2] httpx.AsyncClient.get"):
        assert section in done.stdout
    for variant in ("Stack.default()", "cache", "retry, no deadline", "breaker", "log"):
        assert done.stdout.count(f"    {variant} ") == 2, variant
    assert done.stdout.count("µs/req") >= 14  # an overhead figure for every layer, twice
