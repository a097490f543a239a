"""The docs site builds with `mkdocs build --strict` and renders the API as resilience.X."""

from __future__ import annotations

import html as html_module
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

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

# The other pages of the nav, and the sections each must have (their anchor ids).
SECTIONS = {
    "decorators": [
        "retry-rsretryon",
        "circuit-breaker-rscircuitbreaker",
        "rate-limit-rsratelimit5second",
        "a-whole-stack-stack",
        "signatures-and-types",
        "sync-and-async",
        "cancellation",
    ],
    "recipes": [
        "wrapping-an-sdks-own-client",
        "per-host-policies",
        "one-limit-for-sync-and-async-clients",
        "retrying-posts-safely-an-idempotency-key",
        "serving-a-stale-copy-during-an-outage",
        "logging-the-configuration-at-start-up",
        "testing-your-own-code",
    ],
}

# Sphinx roles as a reader would see them if the griffe extension had not rewritten them.
ROLE_TEXT = [":class:", ":func:", ":meth:", ":attr:", ":data:", ":exc:", ":mod:", ":obj:"]


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


@pytest.mark.parametrize(("name", "sections"), SECTIONS.items(), ids=list(SECTIONS))
def test_decorators_and_recipes_pages(site: Path, name: str, sections: list[str]) -> None:
    """The decorators and recipes pages are built, in the nav, with each of their sections."""
    html = page(site, name)
    for section in sections:
        assert f'id="{section}"' in html, section
    assert f'href="{name}/"' in page(site, ""), f"{name} is not in the nav"


def test_decorators_page_covers_the_contract(site: Path) -> None:
    """The decorators page shows each decorator and the rules of API.md section 10.8."""
    seen = text(page(site, "decorators"))
    for needle in [
        "@rs.Retry(",
        "@rs.CircuitBreaker(",
        "@rs.RateLimit(",
        "@stack",
        "on=",
        "rs.RetryError",
        ".last_exception",
        "qualified name",
        "ParamSpec",
        "iscoroutinefunction",
        "CancelledError",
    ]:
        assert needle in seen, needle


def test_no_sphinx_role_is_rendered(site: Path) -> None:
    """No page, API reference included, shows a Sphinx role such as :class:`X` as text."""
    pages = sorted(site.rglob("*.html"))
    assert len(list(site.glob("reference/*/index.html"))) >= len(REFERENCE)
    for path in pages:
        seen = text(path.read_text(encoding="utf-8"))
        found = [role for role in ROLE_TEXT if role in seen]
        assert found == [], (path.relative_to(site).as_posix(), found)


def test_roles_became_links_that_resolve(site: Path) -> None:
    """The rewritten roles are links in the reference, each to an anchor that exists."""
    links = 0
    for path in sorted(site.glob("reference/*/index.html")):
        html = path.read_text(encoding="utf-8")
        for href in re.findall(r'<a class="autorefs autorefs-internal"[^>]*?href="([^"]*)"', html):
            target, _, anchor = href.partition("#")
            target_html = (path.parent / target / "index.html") if target else path
            assert target_html.resolve().is_file(), (path, href)
            assert f'id="{anchor}"' in target_html.read_text(encoding="utf-8"), (path, href)
            links += 1
    assert links >= 20  # the docstrings hold about 90 roles that point at rendered objects
    stack = page(site, "reference/stack")
    assert re.search(r'href="\.\./retry/#resilience\.Retry"', stack)  # Stack's `retry` argument


def test_the_extension_is_not_published(site: Path) -> None:
    """docs/_griffe_roles.py configures the build; it is not copied into the site."""
    assert list(site.rglob("*.py")) == []


# -- the griffe extension (docs/_griffe_roles.py), on its own ----------------------------------


@pytest.fixture(scope="module")
def roles() -> ModuleType:
    """The extension module, imported from its file."""
    spec = importlib.util.spec_from_file_location(
        "griffe_roles_under_test", ROOT / "docs" / "_griffe_roles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("docstring", "expected"),
    [
        ("See :class:`~a.b.C`.", "See [`C`][a.b.C]."),
        ("See :class:`a.b.C`.", "See [`a.b.C`][a.b.C]."),
        ("See :py:meth:`~a.b.C.run`.", "See [`run`][a.b.C.run]."),
        ("See :func:`the helper <a.b.C>`.", "See [`the helper`][a.b.C]."),
        ("See :class:`!a.b.C`, unlinked.", "See `a.b.C`, unlinked."),
        ("Wrapped :class:`~a.b.\n    C`.", "Wrapped [`C`][a.b.C]."),
        ("Unknown :func:`time.monotonic`.", "Unknown `time.monotonic`."),
        ("Private :class:`~a._x.Y`.", "Private `Y`."),
        ("Both :data:`a.b.C` and :attr:`~q.z`.", "Both [`a.b.C`][a.b.C] and `z`."),
        ("No role: ``:class:`` alone, a: b.", "No role: ``:class:`` alone, a: b."),
    ],
)
def test_rewrite_forms(roles: ModuleType, docstring: str, expected: str) -> None:
    """Each form of a role becomes a link when the target resolves, plain code otherwise."""

    def resolve(target: str) -> str | None:
        return target if target.startswith("a.b.") else None

    assert roles.rewrite(docstring, resolve) == expected


SAMPLE = {
    "pkg/__init__.py": '''
        """The package: :class:`~pkg.Public`, :mod:`pkg`."""
        from ._impl import Public, helper

        __all__ = ["Public", "helper"]
        ''',
    "pkg/_impl.py": '''
        """Implementation: :class:`Public`, :class:`Hidden`."""


        class Hidden:
            """Not exported: :meth:`Public.run` links, :class:`Hidden` does not."""


        class Public:
            """Public. :meth:`run`, :meth:`undocumented`, :attr:`size`, :func:`time.monotonic`,
            :class:`!Public`, :func:`helper`, :class:`the class <Public>`,
            :py:class:`pkg._impl.Public`, :class:`~pkg.Public`, :meth:`_private`.
            """

            size = 3

            def run(self) -> None:
                """Run: :meth:`stop` is unknown, :class:`Public` is known."""

            def undocumented(self) -> None: ...

            def _private(self) -> None:
                """Filtered out of the site."""


        def helper() -> None:
            """Help: :class:`~pkg.Public`."""
        ''',
    "docs/reference.md": """
        # Reference

        ::: pkg.Public

        ::: pkg.helper
            options:
              show_root_heading: true
        """,
}


def load_sample(roles: ModuleType, tmp_path: Path) -> tuple[Any, Any]:
    """Load the sample package with the extension; return (extension, modules collection)."""
    import griffe

    for name, content in SAMPLE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip(), encoding="utf-8")
    extension = roles.SphinxRoles(docs_dir=str(tmp_path / "docs"))
    loader = griffe.GriffeLoader(
        extensions=griffe.load_extensions(extension), search_paths=[str(tmp_path)]
    )
    loader.load("pkg")
    return extension, loader.modules_collection


def test_extension_links_rendered_objects_only(roles: ModuleType, tmp_path: Path) -> None:
    """Targets rendered by a ::: block become links under their public path; others, code."""
    _, objects = load_sample(roles, tmp_path)

    def doc(path: str) -> str:
        return str(objects[path].docstring.value)

    public = doc("pkg._impl.Public")
    assert "[`run`][pkg.Public.run]" in public  # a documented method, by its public path
    assert "`undocumented`," in public  # no docstring: not rendered, so not linked
    assert "`size`," in public  # no docstring either
    assert "`time.monotonic`," in public  # not in the package
    assert "`Public`, [`helper`][pkg.helper]" in public  # `!` suppresses; helper resolves
    assert "[`the class`][pkg.Public]" in public
    assert "[`pkg._impl.Public`][pkg.Public]" in public  # a private path: linked publicly
    assert "[`Public`][pkg.Public], `_private`." in public  # filtered out of the site
    assert doc("pkg._impl.Public.run") == (
        "Run: `stop` is unknown, [`Public`][pkg.Public] is known."
    )
    assert doc("pkg._impl.Hidden") == (
        "Not exported: [`Public.run`][pkg.Public.run] links, `Hidden` does not."
    )
    assert doc("pkg._impl.helper") == "Help: [`Public`][pkg.Public]."
    assert doc("pkg") == "The package: [`Public`][pkg.Public], `pkg`."  # modules: no anchor
    assert doc("pkg._impl") == "Implementation: [`Public`][pkg.Public], `Hidden`."


def test_extension_leaves_no_role_in_the_package(roles: ModuleType) -> None:
    """Loading resilience with the extension leaves no Sphinx role in any docstring."""
    import griffe

    extension = roles.SphinxRoles(docs_dir=str(ROOT / "docs"))
    loader = griffe.GriffeLoader(
        extensions=griffe.load_extensions(extension), search_paths=[str(ROOT)]
    )
    package = loader.load("resilience")
    assert isinstance(package, griffe.Module)
    left = []
    stack: list[griffe.Object] = [package]
    while stack:
        obj = stack.pop()
        stack += [member for member in obj.members.values() if isinstance(member, griffe.Object)]
        if obj.docstring is not None and roles.ROLE.search(obj.docstring.value):
            left.append(obj.path)
    assert left == []
    assert extension.linked > 0
    assert extension.plain > 0
