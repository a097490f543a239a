"""Re-create locks after ``fork()``: a child must not inherit a lock held by another thread."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["after_fork_in_child"]

_callbacks: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def after_fork_in_child(owner: Any, callback: Callable[[Any], None]) -> None:
    """Call ``callback(owner)`` in the child after each ``fork()``, while ``owner`` is alive."""
    with _guard:
        _callbacks[owner] = callback


def _run_callbacks() -> None:
    global _guard
    _guard = threading.Lock()
    for owner, callback in list(_callbacks.items()):
        callback(owner)


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_run_callbacks)
