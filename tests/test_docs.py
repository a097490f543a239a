"""Every Python example in the README and the docs runs, so none can rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    """(id, code) for every ```python block of every page."""
    found = []
    for page in PAGES:
        for number, match in enumerate(FENCE.finditer(page.read_text()), 1):
            found.append((f"{page.relative_to(ROOT).as_posix()}#{number}", match.group(1)))
    return found


def test_there_are_examples() -> None:
    """The pages do hold examples (a broken pattern would otherwise pass silently)."""
    assert len(examples()) >= 8


@pytest.mark.parametrize(("name", "code"), examples(), ids=[name for name, _ in examples()])
def test_example_runs(name: str, code: str) -> None:
    """The example runs without error in a fresh namespace."""
    exec(compile(code, name, "exec"), {"__name__": f"example_{name}"})
