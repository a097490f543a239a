"""The demo (the README's first command) runs, and the resilient runs beat the bare ones."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from resilience.__main__ import main


def test_demo_resilient_beats_bare() -> None:
    """A small demo run prints a table in which retrying raises the success rate to 100%."""
    out = io.StringIO()
    from resilience._demo import run_demo

    assert run_demo(requests=60, fault_rate=0.3, seed=3, concurrency=10, out=out) == 0
    text = out.getvalue()
    rates = {
        name.strip(): float(rate)
        for name, rate in re.findall(r"^((?:sync|async), [a-z ]+?)\s+([\d.]+)%", text, re.M)
    }
    assert set(rates) == {
        "sync, bare httpx",
        "sync, resilience",
        "async, bare httpx",
        "async, resilience",
    }
    assert rates["sync, bare httpx"] < 100.0
    assert rates["async, bare httpx"] < 100.0
    assert rates["sync, resilience"] == 100.0
    assert rates["async, resilience"] == 100.0
    assert "127.0.0.1" in text


def test_demo_command_line() -> None:
    """`python -m resilience demo` runs with flags and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "resilience", "demo", "--requests", "20", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "sync, resilience" in done.stdout


def test_demo_rejects_bad_flags() -> None:
    """A bad count is a clear error."""
    with pytest.raises(ValueError, match="requests must be >= 1, got 0"):
        main(["demo", "--requests", "0"])
