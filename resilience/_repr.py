"""A policy's repr with its sets in sorted order, so a logged configuration reads the same
from one run to the next (a frozenset's own repr follows the hash seed)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["policy_repr"]


def _shown(value: object) -> str:
    if isinstance(value, frozenset):
        if not value:
            return "frozenset()"
        try:
            items = sorted(value)
        except TypeError:  # mixed types: order by their reprs
            items = sorted(value, key=repr)
        return "frozenset({" + ", ".join(map(repr, items)) + "})"
    return repr(value)


def policy_repr(self: Any) -> str:
    """``Name(field=value, ...)`` over the dataclass's repr fields, sets sorted."""
    shown = ", ".join(
        f"{field.name}={_shown(getattr(self, field.name))}"
        for field in dataclasses.fields(self)
        if field.repr
    )
    return f"{type(self).__name__}({shown})"
