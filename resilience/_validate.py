"""Checks that policies run when they are built, so bad values fail early with a clear message.

Every error names the policy, the field and the value: ``Backoff.base must be >= 0, got -1``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["check_instance", "check_methods", "check_number", "check_statuses"]


def _describe(value: Any) -> str:
    return repr(value)


def check_number(
    owner: str,
    field: str,
    value: Any,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Raise TypeError/ValueError unless ``value`` is a finite number within the bounds given.

    Args:
        owner: the policy's class name, for the message.
        field: the field's name, for the message.
        value: the value to check.
        minimum: inclusive lower bound.
        above: exclusive lower bound.
        maximum: inclusive upper bound.
        integer: require an ``int``.
        optional: accept ``None``.
    """
    if value is None and optional:
        return
    name = f"{owner}.{field}"
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        wanted = "an int" if integer else "a number"
        if optional:
            wanted += " or None"
        raise TypeError(f"{name} must be {wanted}, got {_describe(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float, e.g. 10**400
        finite = False
    if not finite:
        raise ValueError(f"{name} must be finite, got {_describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {_describe(value)}")
    if above is not None and value <= above:
        raise ValueError(f"{name} must be > {above:g}, got {_describe(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {_describe(value)}")


def check_statuses(owner: str, field: str, value: Iterable[Any]) -> frozenset[int]:
    """Return ``value`` as a frozenset of HTTP statuses (100-599), or raise naming the culprit."""
    if isinstance(value, (str, bytes, int)) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}.{field} must be a collection of status codes, got {value!r}")
    statuses = frozenset(value)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"{owner}.{field} must hold ints, got {status!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"{owner}.{field} holds {status!r}, not an HTTP status (100-599)")
    return statuses


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_methods(owner: str, field: str, value: object) -> frozenset[str]:
    """Return ``value`` as a frozenset of upper-case method names, or raise naming the culprit."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}.{field} must be a collection of method names, got {value!r}")
    methods = set()
    for method in value:
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            raise ValueError(f"{owner}.{field} holds {method!r}, not an HTTP method name")
        methods.add(method.upper())
    return frozenset(methods)


def check_instance(owner: str, field: str, value: object, kind: type | tuple[type, ...]) -> None:
    """Raise TypeError unless ``value`` is an instance of ``kind``."""
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{owner}.{field} must be {names}, got {value!r}")
