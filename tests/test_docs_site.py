"""The docs site builds with `mkdocs build --strict` and renders the API as resilience.X."""

from __future__ import annotations

import html as html_module
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import resilience

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed: the docs site needs the dev extra (pip install -e '.[dev]')",
)

# Each API reference page and public names it must render, as their anchor ids.
REFERENCE = {
    "retry": [
        "Retry",
        "Backoff",
        "RetryBudget",
        "MemoryBudgetStorage",
        "RetryTransport",
        "IDEMPOTENT",
        "RETRY_STATUSES",
    ],
    "ratelimit": ["RateLimit", "RateLimitStorage", "RateLimitTransport"],
    "cache": ["Cache", "CacheTransport", "CacheStorage", "MemoryCacheStorage", "FileCacheStorage"],
    "logging": ["Log", "LogTransport", "Redactions", "DEFAULT_REDACTIONS"],
    "breaker": [
        "CircuitBreaker",
        "BreakerStorage",
        "MemoryBreakerStorage",
        "CircuitBreakerTransport",
        "FAILURE_STATUSES",
    ],
    "errors": [
        "ResilienceError",
        "RetryError",
        "DeadlineExceeded",
        "RateLimitExceeded",
        "CircuitOpenError",
    ],
    "testing": ["testing.FaultServer", "testing.FakeClock", "testing.Respond", "testing.Reset"],
    "keys": ["per_host", "per_endpoint", "global_key", "Clock", "SystemClock", "SYSTEM_CLOCK"],
}

# The guides in the nav, each built to <name>/index.html.
GUIDES = ["retry", "ratelimit", "breaker", "cache", "logging", "testing", "errors"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module into a temporary directory (never into the repo)."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    return out


def page(site: Path, name: str) -> str:
    """The HTML of a built page, by its path without .md ("" for the home page)."""
    path = site / name / "index.html"
    assert path.is_file(), f"{name or 'index'}.md was not built"
    return path.read_text(encoding="utf-8")


def text(html: str) -> str:
    """What a reader sees: the HTML without its tags (code highlighting splits words in spans)."""
    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


def test_home_page_has_the_two_commands_and_links_every_layer(site: Path) -> None:
    """The home page shows the getting-started commands and links each guide."""
    html = page(site, "")
    assert "Getting started" in text(html)
    assert "bash scripts/demo" in text(html)
    assert "bash scripts/test" in text(html)
    for guide in GUIDES:
        assert f'href="{guide}/"' in html, guide


@pytest.mark.parametrize("guide", GUIDES)
def test_every_guide_is_built(site: Path, guide: str) -> None:
    """Each guide in the nav becomes a page with its title."""
    assert "<h1" in page(site, guide)


def test_errors_page_names_every_exception(site: Path) -> None:
    """The errors guide covers each exception and its httpx base."""
    html = page(site, "errors")
    for name in REFERENCE["errors"]:
        assert f"rs.{name}" in text(html), name
    assert "httpx.TransportError" in html
    assert "httpx.TimeoutException" in html


@pytest.mark.parametrize(("reference", "names"), REFERENCE.items(), ids=list(REFERENCE))
def test_reference_page_renders_public_names(site: Path, reference: str, names: list[str]) -> None:
    """mkdocstrings renders each name under its public path, resilience.X, with its docstring."""
    html = page(site, f"reference/{reference}")
    for name in names:
        assert f'id="resilience.{name}"' in html, name
    # headings name the public path, never the private module the object lives in
    private = re.findall(r'id="resilience\._[^"]*"', html)
    assert private == []


def test_every_public_name_is_in_the_reference(site: Path) -> None:
    """Each name in resilience.__all__ is rendered on some API reference page."""
    pages = "".join(path.read_text(encoding="utf-8") for path in site.glob("reference/*/*.html"))
    missing = [name for name in resilience.__all__ if f'id="resilience.{name}"' not in pages]
    assert missing == [], f"add `::: resilience.NAME` to a docs/reference/ page for {missing}"


def test_reference_shows_docstrings_and_signatures(site: Path) -> None:
    """The reference carries the docstrings' text and the typed signatures."""
    html = page(site, "reference/retry")
    assert "Exponential backoff with jitter" in html  # Backoff's docstring
    assert "RetryTransport" in html
    assert "attempts" in html  # a parameter of Retry's signature


def test_site_is_self_contained(site: Path) -> None:
    """Nothing is loaded from a CDN: no web fonts, no remote scripts or stylesheets."""
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html, path
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//[^"]*"', html)
        assert remote == [], (path, remote)
