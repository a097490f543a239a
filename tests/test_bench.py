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
    for variant in ("httpx", "resilience", "httpx-retries"):
        assert variant in done.stdout
    assert "SUMMARY" in done.stdout
    assert "x " in done.stdout or "x\n" in done.stdout  # ratio column, e.g. "1.03x"
    assert json.loads(out.read_text())
