"""The package's public surface and hygiene."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import httpx

import resilience as rs


def test_all_is_complete() -> None:
    """__all__ lists every public name once (ruff's RUF022 keeps it sorted)."""
    public = {
        name
        for name, value in vars(rs).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(rs.__all__) == public
    assert len(rs.__all__) == len(set(rs.__all__))


def test_exports_present_as_resilience() -> None:
    """Exported classes show as resilience.X in reprs and docs."""
    assert rs.Retry.__module__ == "resilience"
    assert rs.RetryTransport.__module__ == "resilience"


def test_py_typed_is_shipped() -> None:
    """The package is marked as typed (PEP 561)."""
    assert (Path(rs.__file__).parent / "py.typed").exists()


def test_version() -> None:
    """__version__ comes from the installed metadata."""
    assert isinstance(rs.__version__, str)
    assert rs.__version__.count(".") >= 2


def test_import_configures_nothing_global() -> None:
    """Importing resilience configures neither structlog nor logging handlers."""
    code = (
        "import logging, structlog, resilience\n"
        "assert not structlog.is_configured()\n"
        "assert logging.getLogger().handlers == []\n"
        "assert logging.getLogger('resilience').handlers == []\n"
        "assert logging.getLogger('resilience.retry').handlers == []\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unconfigured_app_sees_no_output() -> None:
    """An app that configures nothing sees no output from a retry (INFO is below lastResort)."""
    code = (
        "import httpx, resilience as rs\n"
        "from resilience.testing import FakeClock\n"
        "seq = iter([503, 200])\n"
        "t = httpx.MockTransport(lambda r: httpx.Response(next(seq)))\n"
        "c = httpx.Client(transport=rs.RetryTransport(t, rs.Retry(clock=FakeClock())))\n"
        "assert c.get('http://127.0.0.1:9/').status_code == 200\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == ""
    assert done.stderr == ""


def test_errors_derive_from_httpx_in_the_adapter() -> None:
    """The transport's DeadlineExceeded is both ours and an httpx.TimeoutException."""
    from resilience._transports import DeadlineExceeded

    error = DeadlineExceeded("late", deadline=1.0)
    assert isinstance(error, rs.DeadlineExceeded)
    assert isinstance(error, rs.ResilienceError)
    assert isinstance(error, httpx.TimeoutException)
    assert error.deadline == 1.0


def test_only_the_adapter_imports_httpx() -> None:
    """httpx is imported only under resilience/_transports (the seam for a second client)."""
    root = Path(rs.__file__).parent
    offenders = [
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if "_transports" not in path.parts
        and path.name not in {"_testing_server.py", "testing.py", "__main__.py", "_demo.py"}
        and re.search(r"^\s*(import|from) httpx\b", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
