"""Shared fixtures: the fault-injecting loopback server and a client driver for sync and async."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import anyio.from_thread
import httpx
import pytest

from resilience.testing import FaultServer


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A fault-injecting HTTP/1.1 server on 127.0.0.1, fresh for each test."""
    with FaultServer() as fault_server:
        yield fault_server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Driver:
    """Sends requests through a sync ``httpx.Client`` or an ``httpx.AsyncClient``, from sync code.

    The async client lives on an event loop in a helper thread (an anyio blocking portal), so
    one test body exercises ``handle_request`` or ``handle_async_request`` alike.
    """

    def __init__(self, mode: str, stack: ExitStack) -> None:
        self.mode = mode
        self._stack = stack
        self._portal: anyio.from_thread.BlockingPortal | None = None
        if mode == "async":
            self._portal = stack.enter_context(anyio.from_thread.start_blocking_portal())

    def client(
        self, wrap: Callable[[Any], Any], *, limits: httpx.Limits | None = None, **kwargs: Any
    ) -> Client:
        """A client whose transport is ``wrap(httpx's real transport)``."""
        pool = limits or httpx.Limits()
        if self._portal is None:
            sync = httpx.Client(transport=wrap(httpx.HTTPTransport(limits=pool)), **kwargs)
            self._stack.callback(sync.close)
            return Client(self, sync)

        async def build() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                transport=wrap(httpx.AsyncHTTPTransport(limits=pool)), **kwargs
            )

        aclient = self._portal.call(build)
        self._stack.callback(self._portal.call, aclient.aclose)
        return Client(self, aclient)

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)``, awaiting it on the portal's loop in async mode."""
        if self._portal is None:
            return function(*args)
        return self._portal.call(function, *args)


class Client:
    """One client of a :class:`Driver`: ``request()`` returns a read response either way."""

    def __init__(self, driver: Driver, client: httpx.Client | httpx.AsyncClient) -> None:
        self.driver = driver
        self.httpx = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request and read its body."""
        client = self.httpx
        if isinstance(client, httpx.Client):
            return client.request(method, url, **kwargs)

        async def send() -> httpx.Response:
            return await client.request(method, url, **kwargs)

        return self.driver.run(send)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the client (and the transports under it)."""
        client = self.httpx
        if isinstance(client, httpx.Client):
            client.close()
        else:
            self.driver.run(client.aclose)


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """Run the test with a sync client, then with an async one."""
    with ExitStack() as stack:
        yield Driver(request.param, stack)
