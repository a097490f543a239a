"""Key functions: which requests share one budget, one limit or one breaker.

A key function takes the request and returns a string. Requests with the same key share state.
They read only ``request.method`` and ``request.url`` (``scheme``, ``host``, ``port``, ``path``),
so they work with any HTTP library whose request has those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["KeyFunc", "global_key", "per_endpoint", "per_host"]


class _URL(Protocol):
    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def path(self) -> str: ...


class _Request(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> _URL: ...


KeyFunc = Callable[[Any], str]
"""A function of the request that returns the key of the state it uses."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: _URL) -> str:
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{url.host}:{port}"


def per_host(request: _Request) -> str:
    """One key per origin (scheme, host and port): ``"https://api.example.com:443"``."""
    return _origin(request.url)


def per_endpoint(request: _Request) -> str:
    """One key per method, origin and path: ``"GET https://api.example.com:443/users"``."""
    return f"{request.method} {_origin(request.url)}{request.url.path}"


def global_key(request: object) -> str:
    """One key for every request: ``"global"``."""
    return "global"
