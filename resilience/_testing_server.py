"""A real fault-injecting HTTP/1.1 server for tests and benchmarks.

:class:`FaultServer` is a small HTTP/1.1 server written on plain asyncio streams. It runs its own
event loop in a daemon thread, so it serves sync tests, async tests on any event loop, and plain
scripts alike. It only ever binds a loopback address.

Every request is recorded *before* its outcome is performed, then answered with an outcome:

* :class:`Respond`: a normal response, optionally delayed, stalled mid-body or chunked;
* :class:`Reset`: the connection is aborted with a TCP RST before any response byte;
* :class:`ResetMidBody`: the headers and part of the body are sent, then a TCP RST;
* :class:`Truncate`: the headers and part of the body are sent, then a clean close (FIN).

Example::

    with FaultServer() as server:
        server.script("/flaky", Respond(503), Reset(), then=Respond(200, b"done"))
        ...  # point an httpx client at server.url + "/flaky"
        assert server.count("/flaky") == 3

Run ``python -m resilience._testing_server --port 0`` to serve every path with ``200 ok`` from
another process: it prints ``LISTENING <port>`` once listening and serves until its standard
input closes or it receives SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import FrameType
from typing import ClassVar, TypeAlias, cast
from urllib.parse import urlsplit

__all__ = [
    "FaultServer",
    "Outcome",
    "RecordedRequest",
    "Reset",
    "ResetMidBody",
    "Respond",
    "Truncate",
    "main",
]

HeadersInput: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]] | None
_HeaderItems: TypeAlias = tuple[tuple[str, str], ...]

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_STR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")
_REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_SINGLE_WRITE_MAX = 16 * 1024
_CHUNK_END = b"0\r\n\r\n"


# --------------------------------------------------------------------------- validation


def _check_seconds(name: str, value: object) -> float:
    """Return ``value`` as a float of seconds, or raise ValueError naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_int(name: str, value: object, low: int | None, high: int | None) -> int:
    """Return ``value`` if it is an int within [low, high], or raise ValueError naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        lo = "" if low is None else f" >= {low}"
        hi = "" if high is None else f" <= {high}"
        raise ValueError(f"{name} must be an int{lo}{hi}, got {value!r}")
    return value


def _check_rate(value: object) -> float:
    """Return ``value`` as a probability in [0, 1], or raise ValueError naming ``fault_rate``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"fault_rate must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_status(value: object) -> int:
    """Return ``value`` as a final HTTP status code (200-999), or raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 999:
        raise ValueError(f"status must be an int in 200..999, got {value!r}")
    return value


def _check_body(value: object) -> bytes:
    """Return ``value`` as bytes, or raise ValueError naming ``body``."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError(f"body must be bytes, got {value!r}")
    return bytes(value)


def _check_headers(value: object) -> _HeaderItems:
    """Normalise response headers to a tuple of ``(name, value)`` pairs, or raise ValueError."""
    if value is None:
        return ()
    items: Iterable[object]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        raise ValueError(f"headers must be a mapping or a sequence of pairs, got {value!r}")
    else:
        items = list(value)
    result: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"headers must hold (name, value) pairs, got {item!r}")
        name, val = item
        if not isinstance(name, str) or not _TOKEN_STR.fullmatch(name):
            raise ValueError(f"headers: invalid header name {name!r}")
        if not isinstance(val, str) or _BAD_VALUE_CHARS.search(val):
            raise ValueError(f"headers: invalid value {val!r} for header {name!r}")
        try:
            val.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"headers: value {val!r} for header {name!r} is not latin-1") from None
        result.append((name, val))
    return tuple(result)


def _check_after(value: object, body: bytes) -> int | None:
    """Validate ``after`` (None or 0..len(body)), or raise ValueError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= len(body):
        raise ValueError(f"after must be None or an int in 0..{len(body)}, got {value!r}")
    return value


def _check_path(value: object) -> str:
    """Validate a route path (``/...`` or ``*``), or raise ValueError naming ``path``."""
    if not isinstance(value, str) or not (value.startswith("/") or value == "*"):
        raise ValueError(f"path must be a str starting with '/', got {value!r}")
    if "?" in value or _BAD_VALUE_CHARS.search(value) or " " in value:
        raise ValueError(f"path must not contain a query, spaces or CR/LF, got {value!r}")
    return value


def _check_method(value: object) -> str | None:
    """Validate and upper-case an HTTP method (or None), or raise ValueError naming ``method``."""
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN_STR.fullmatch(value):
        raise ValueError(f"method must be None or an HTTP method name, got {value!r}")
    return value.upper()


# --------------------------------------------------------------------------- public data


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        method: The request method, as sent (``"GET"``).
        path: The request path without the query string, still percent-encoded.
        query: The query string without the ``?`` (``""`` when absent).
        headers: ``(name, value)`` pairs in wire order; names are lower-cased.
        body: The request body, de-chunked when it was sent chunked.
        received_at: :func:`time.monotonic` when the request head was read.
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Respond:
    """Send a complete response.

    ``Content-Length`` is computed from ``body`` unless ``headers`` already set one (which lets
    a test lie; a mismatched length closes the connection after the response). Responses carry
    ``Connection: keep-alive`` unless the request asked to close. A ``HEAD`` request, a 204 and
    a 304 get no body.

    Attributes:
        status: The status code, 200..999.
        body: The response body.
        headers: Extra headers, as a mapping or ``(name, value)`` pairs; normalised to a tuple
            of pairs.
        delay: Seconds to wait before sending anything, status line included.
        body_delay: Seconds to wait after the headers and the first half of the body are sent,
            before the rest.
        chunked: Send the body with ``Transfer-Encoding: chunked`` instead of a length.
    """

    status: int = 200
    body: bytes = b""
    headers: HeadersInput = None
    delay: float = 0.0
    body_delay: float = 0.0
    chunked: bool = False

    def __post_init__(self) -> None:
        """Validate and normalise the fields."""
        object.__setattr__(self, "status", _check_status(self.status))
        object.__setattr__(self, "body", _check_body(self.body))
        object.__setattr__(self, "headers", _check_headers(self.headers))
        object.__setattr__(self, "delay", _check_seconds("delay", self.delay))
        object.__setattr__(self, "body_delay", _check_seconds("body_delay", self.body_delay))
        if not isinstance(self.chunked, bool):
            raise ValueError(f"chunked must be a bool, got {self.chunked!r}")


@dataclass(frozen=True, slots=True)
class Reset:
    """Abort the connection with a TCP RST before any response byte.

    Attributes:
        delay: Seconds to wait after reading the request before the reset.
    """

    delay: float = 0.0

    def __post_init__(self) -> None:
        """Validate the delay."""
        object.__setattr__(self, "delay", _check_seconds("delay", self.delay))


@dataclass(frozen=True, slots=True)
class _PartialBody:
    """Status, headers and the first ``after`` bytes of ``body``, then the connection ends.

    Attributes:
        status: The status code, 200..999.
        body: The full body; ``Content-Length`` announces all of it unless ``headers`` set one.
        headers: Extra headers, as a mapping or ``(name, value)`` pairs.
        after: How many body bytes to send before the end (default: half of ``body``).
    """

    status: int = 200
    body: bytes = b"x" * 1024
    headers: HeadersInput = None
    after: int | None = None

    def __post_init__(self) -> None:
        """Validate and normalise the fields."""
        object.__setattr__(self, "status", _check_status(self.status))
        object.__setattr__(self, "body", _check_body(self.body))
        object.__setattr__(self, "headers", _check_headers(self.headers))
        object.__setattr__(self, "after", _check_after(self.after, self.body))


@dataclass(frozen=True, slots=True)
class ResetMidBody(_PartialBody):
    """Send the status, headers and part of the body, then abort with a TCP RST.

    Takes the fields of every partial-body outcome: ``status``, ``body``, ``headers`` and
    ``after`` (how many body bytes to send before the reset; default: half of ``body``).
    """


@dataclass(frozen=True, slots=True)
class Truncate(_PartialBody):
    """Send the status, headers and part of the body, then close cleanly (FIN).

    The client sees a body shorter than the announced ``Content-Length``. Takes ``status``,
    ``body``, ``headers`` and ``after`` (how many body bytes to send before closing).
    """


Outcome: TypeAlias = Respond | Reset | ResetMidBody | Truncate
_OUTCOME_TYPES = (Respond, Reset, ResetMidBody, Truncate)
_DEFAULT_OUTCOME = Respond(200, body=b"ok")


# --------------------------------------------------------------------------- internals


class _HttpError(Exception):
    """A request the server refuses with ``status``; the connection is closed afterwards."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Script:
    """Outcomes handed out in order, then ``then`` forever."""

    __slots__ = ("outcomes", "then")

    def __init__(self, outcomes: Iterable[Outcome], then: Outcome) -> None:
        self.outcomes: deque[Outcome] = deque(outcomes)
        self.then = then

    def next(self) -> Outcome:
        """Return the next outcome (call with the server lock held)."""
        return self.outcomes.popleft() if self.outcomes else self.then


class _Route:
    """A user callable deciding each outcome."""

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[[RecordedRequest], Outcome]) -> None:
        self.handler = handler


class _Conn:
    """One served connection: its task and transport, for ``stop()`` to abort."""

    __slots__ = ("task", "transport")

    def __init__(self, task: asyncio.Task[None], transport: asyncio.WriteTransport) -> None:
        self.task = task
        self.transport = transport


def _items(headers: HeadersInput) -> _HeaderItems:
    """Return headers already normalised by ``__post_init__``."""
    return cast("_HeaderItems", headers)


def _frame_chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP chunk (empty data gives no chunk)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _rst(transport: asyncio.WriteTransport) -> None:
    """Abort ``transport`` so the kernel sends a TCP RST instead of a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Wait until everything written has left the transport's buffer."""
    writer.transport.set_write_buffer_limits(high=0)
    await writer.drain()


# --------------------------------------------------------------------------- the server


class FaultServer:
    """A fault-injecting HTTP/1.1 server on 127.0.0.1, run in a daemon thread.

    Paths answer ``200 ok`` unless scripted with :meth:`script`, routed with :meth:`route` or
    :meth:`chaos`. A registration for one ``(method, path)`` replaces the previous one for the
    same key, and a method-specific one wins over a method-less one.

    Args:
        host: ``"127.0.0.1"``, ``"::1"`` or ``"localhost"`` (bound as 127.0.0.1); nothing else.
        port: The port to bind; 0 picks a free one, kept across :meth:`stop`/:meth:`start`.
        record: Keep every request for :attr:`requests`; turn off for long benchmarks
            (:meth:`count` still works).
        max_header_bytes: Largest request head accepted; larger gets 431.
        max_body_bytes: Largest request body accepted; larger gets 413.

    Raises:
        ValueError: For a non-loopback host or an invalid port or limit.
    """

    DEFAULT_MAX_HEADER_BYTES: ClassVar[int] = 64 * 1024
    DEFAULT_MAX_BODY_BYTES: ClassVar[int] = 64 * 1024 * 1024

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        record: bool = True,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if host not in _LOOPBACK_HOSTS:
            raise ValueError(f"host must be one of 127.0.0.1, ::1, localhost; got {host!r}")
        port = _check_int("port", port, 0, 65535)
        max_header_bytes = _check_int("max_header_bytes", max_header_bytes, 1024, None)
        max_body_bytes = _check_int("max_body_bytes", max_body_bytes, 0, None)
        self._host = host
        self._bind_host = "127.0.0.1" if host == "localhost" else host
        self._port = port
        self._record = record
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes

        # Shared with the server thread; guarded by _lock.
        self._lock = threading.Lock()
        self._routes: dict[tuple[str | None, str], _Script | _Route] = {}
        self._records: list[RecordedRequest] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._opened = 0
        self._open = 0

        # Lifecycle; guarded by _control. _server, _conns and _accepting live in the loop.
        self._control = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._accepting = False

    # ------------------------------------------------------------------ properties

    @property
    def host(self) -> str:
        """The host given to the constructor."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known after the first :meth:`start`)."""
        if self._port == 0:
            raise RuntimeError("FaultServer has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``"http://127.0.0.1:8123"`` (no trailing slash)."""
        host = f"[{self._bind_host}]" if ":" in self._bind_host else self._bind_host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since the server was created or :meth:`reset`."""
        with self._lock:
            return self._opened

    @property
    def open_connections(self) -> int:
        """TCP connections currently open on the server side."""
        with self._lock:
            return self._open

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultServer:
        """Start listening (idempotent) and return self once the socket accepts connections.

        After :meth:`stop`, this binds the same port again.

        Raises:
            OSError: If the port cannot be bound (e.g. another process took it).
        """
        with self._control:
            self._check_not_server_thread("start")
            if self._server is not None:
                return self
            loop = self._ensure_loop()
            sock = self._bind()
            try:
                future = asyncio.run_coroutine_threadsafe(self._astart(sock), loop)
                self._server = future.result()
            except BaseException:
                sock.close()
                raise
            return self

    def stop(self) -> None:
        """Stop listening and abort every open connection; idempotent.

        The server thread stays alive, so :meth:`start` can listen again on the same port.
        """
        with self._control:
            self._check_not_server_thread("stop")
            if self._server is None or self._loop is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._astop(), self._loop).result()
            finally:
                self._server = None

    def close(self) -> None:
        """Stop serving and end the server thread; idempotent."""
        with self._control:
            self._check_not_server_thread("close")
            self.stop()
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            if loop is not None and thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()

    def __enter__(self) -> FaultServer:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Close the server."""
        self.close()

    def __repr__(self) -> str:
        """Show where the server listens."""
        state = "running" if self.running else "stopped"
        return f"<FaultServer {self._bind_host}:{self._port} {state}>"

    # ------------------------------------------------------------------ scripting

    def script(
        self,
        path: str,
        *outcomes: Outcome,
        method: str | None = None,
        then: Outcome | None = None,
    ) -> None:
        """Answer requests to ``path`` with ``outcomes`` in order, then with ``then``.

        Args:
            path: The exact request path, without query string.
            *outcomes: One outcome per request, in order.
            method: Only script this method (it wins over a method-less script).
            then: The outcome once ``outcomes`` are used up (default ``Respond(200, b"ok")``).

        Raises:
            ValueError: For an invalid path, method or outcome.
        """
        path = _check_path(path)
        key_method = _check_method(method)
        for index, outcome in enumerate(outcomes):
            if not isinstance(outcome, _OUTCOME_TYPES):
                raise ValueError(f"outcomes[{index}] must be an Outcome, got {outcome!r}")
        if then is None:
            then = _DEFAULT_OUTCOME
        elif not isinstance(then, _OUTCOME_TYPES):
            raise ValueError(f"then must be an Outcome, got {then!r}")
        entry = _Script(outcomes, then)
        with self._lock:
            self._routes[(key_method, path)] = entry

    def route(
        self,
        path: str,
        handler: Callable[[RecordedRequest], Outcome],
        *,
        method: str | None = None,
    ) -> None:
        """Answer each request to ``path`` with ``handler(request)``.

        The handler runs in the server thread, one request at a time; if it raises or returns
        something other than an outcome the client gets a 500 describing the error.

        Args:
            path: The exact request path, without query string.
            handler: Called with the recorded request; returns the outcome.
            method: Only route this method (it wins over a method-less route).

        Raises:
            ValueError: For an invalid path, method or handler.
        """
        path = _check_path(path)
        key_method = _check_method(method)
        if not callable(handler):
            raise ValueError(f"handler must be callable, got {handler!r}")
        with self._lock:
            self._routes[(key_method, path)] = _Route(handler)

    def chaos(
        self,
        path: str,
        *,
        fault_rate: float = 0.3,
        seed: int | None = None,
        method: str | None = None,
        retry_after: float = 0.05,
        slow: float = 0.2,
    ) -> None:
        """Answer ``path`` with a seeded random mix of faults and ``200 ok``.

        With probability ``fault_rate`` a request gets one of, uniformly: 503 or 429 with
        ``Retry-After`` (whole seconds, at least 1) and ``retry-after-ms`` headers, 500, 502,
        a :class:`Reset`, or a 200 delayed by ``slow`` seconds. Fault responses carry an
        ``x-fault`` header naming the fault. The sequence depends only on ``seed`` and the
        order requests arrive in.

        Args:
            path: The exact request path, without query string.
            fault_rate: Probability of a fault, in [0, 1].
            seed: Seed for the random generator (None: unpredictable).
            method: Only apply to this method.
            retry_after: Seconds advertised by the 503 and 429 faults.
            slow: Delay of the slow 200 fault, in seconds.

        Raises:
            ValueError: For an invalid argument.
        """
        rate = _check_rate(fault_rate)
        retry_after = _check_seconds("retry_after", retry_after)
        slow = _check_seconds("slow", slow)
        if seed is not None:
            seed = _check_int("seed", seed, None, None)
        retry = (
            ("Retry-After", str(max(1, math.ceil(retry_after)))),
            ("retry-after-ms", str(round(retry_after * 1000))),
        )
        faults: tuple[Outcome, ...] = (
            Respond(503, b"service unavailable", headers=(*retry, ("x-fault", "503"))),
            Respond(429, b"too many requests", headers=(*retry, ("x-fault", "429"))),
            Respond(500, b"internal server error", headers=(("x-fault", "500"),)),
            Respond(502, b"bad gateway", headers=(("x-fault", "502"),)),
            Reset(),
            Respond(200, b"ok", headers=(("x-fault", "slow"),), delay=slow),
        )
        ok = _DEFAULT_OUTCOME
        rng = random.Random(seed)

        def handler(_request: RecordedRequest) -> Outcome:
            if rng.random() < rate:
                return rng.choice(faults)
            return ok

        self.route(path, handler, method=method)

    # ------------------------------------------------------------------ inspection

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Return how many requests arrived, optionally only for ``path`` and/or ``method``."""
        wanted = method.upper() if method is not None else None
        with self._lock:
            return sum(
                n
                for (m, p), n in self._counts.items()
                if (path is None or p == path) and (wanted is None or m == wanted)
            )

    def requests_for(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Return the recorded requests to ``path`` (and ``method``), oldest first."""
        wanted = method.upper() if method is not None else None
        with self._lock:
            return [
                r
                for r in self._records
                if r.path == path and (wanted is None or r.method == wanted)
            ]

    def reset(self) -> None:
        """Forget scripts, routes, recorded requests and ``connections_opened``.

        Open connections are left alone.
        """
        with self._lock:
            self._routes.clear()
            self._records.clear()
            self._counts.clear()
            self._opened = 0

    # ------------------------------------------------------------------ thread plumbing

    def _check_not_server_thread(self, what: str) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(f"FaultServer.{what}() cannot be called from the server thread")

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            return self._loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run_loop, args=(loop, ready), name="FaultServer", daemon=True
        )
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread
        return loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._bind_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind_host, self._port))
            sock.listen(1024)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        return sock

    async def _astart(self, sock: socket.socket) -> asyncio.AbstractServer:
        self._accepting = True
        return await asyncio.start_server(
            self._handle, sock=sock, limit=self._max_header_bytes, backlog=1024
        )

    async def _astop(self) -> None:
        self._accepting = False
        server = self._server
        if server is not None:
            server.close()
        # A connection accepted just before close() may start its handler a little later; the
        # handler aborts itself once it sees _accepting is False, but loop until none is left.
        for _ in range(100):
            conns = list(self._conns)
            if not conns:
                break
            for conn in conns:
                conn.transport.abort()
                conn.task.cancel()
            await asyncio.gather(*(c.task for c in conns), return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # ------------------------------------------------------------------ serving

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        task = asyncio.current_task()
        if not self._accepting or task is None:
            transport.abort()
            return
        conn = _Conn(cast("asyncio.Task[None]", task), transport)
        self._conns.add(conn)
        with self._lock:
            self._opened += 1
            self._open += 1
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # stop() cancels us; finishing normally keeps StreamReaderProtocol's callback quiet.
            transport.abort()
        except (ConnectionError, asyncio.IncompleteReadError):
            transport.abort()
        except Exception as exc:  # a bug here must not kill the loop; report it and drop
            transport.abort()
            asyncio.get_running_loop().call_exception_handler(
                {"message": "FaultServer connection handler failed", "exception": exc}
            )
        finally:
            self._conns.discard(conn)
            if not transport.is_closing():
                transport.close()
            with self._lock:
                self._open -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection (possibly mid-head)
            except asyncio.LimitOverrunError:
                await self._refuse(reader, writer, 431, "request head too large")
                return
            received_at = time.monotonic()
            if head[:2] == b"\r\n":
                head = head.lstrip(b"\r\n")  # stray CRLFs between requests are allowed
                if not head:
                    continue
            try:
                request, keep_alive = await self._read_request(reader, writer, head, received_at)
            except _HttpError as exc:
                await self._refuse(reader, writer, exc.status, exc.message)
                return
            self._store(request)
            outcome = self._resolve(request)
            if not await self._perform(writer, request, outcome, keep_alive):
                return

    async def _read_request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        received_at: float,
    ) -> tuple[RecordedRequest, bool]:
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise _HttpError(400, "malformed request line")
        raw_method, target, version = parts
        if not _TOKEN.fullmatch(raw_method):
            raise _HttpError(400, "malformed method")
        if version == b"HTTP/1.1":
            http11 = True
        elif version == b"HTTP/1.0":
            http11 = False
        else:
            raise _HttpError(400, "unsupported HTTP version")
        path, query = self._split_target(target)

        headers: list[tuple[str, str]] = []
        content_lengths: list[bytes] = []
        transfer_encodings: list[str] = []
        connection_tokens: set[str] = set()
        expect_continue = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name):
                raise _HttpError(400, "malformed header line")
            value = value.strip(b" \t")
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                raise _HttpError(400, "invalid header value")
            key = name.decode("ascii").lower()
            text = value.decode("latin-1")
            headers.append((key, text))
            if key == "content-length":
                content_lengths.extend(v.strip(b" \t") for v in value.split(b","))
            elif key == "transfer-encoding":
                transfer_encodings.extend(t.strip().lower() for t in text.split(","))
            elif key == "connection":
                connection_tokens.update(t.strip().lower() for t in text.split(","))
            elif key == "expect" and text.lower() == "100-continue":
                expect_continue = http11

        if http11:
            keep_alive = "close" not in connection_tokens
        else:
            keep_alive = "keep-alive" in connection_tokens
        method = raw_method.decode("ascii")

        body = b""
        if transfer_encodings:
            if content_lengths:
                raise _HttpError(400, "both Content-Length and Transfer-Encoding")
            if transfer_encodings[-1] != "chunked":
                raise _HttpError(400, "unsupported Transfer-Encoding")
            if expect_continue:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await self._read_chunked(reader)
        elif content_lengths:
            first = content_lengths[0]
            if not first.isdigit() or any(v != first for v in content_lengths):
                raise _HttpError(400, "invalid Content-Length")
            length = int(first)
            if length > self._max_body_bytes:
                raise _HttpError(413, "request body too large")
            if length:
                if expect_continue:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await reader.readexactly(length)

        request = RecordedRequest(method, path, query, tuple(headers), body, received_at)
        return request, keep_alive

    @staticmethod
    def _split_target(target: bytes) -> tuple[str, str]:
        text = target.decode("latin-1")
        if text.startswith("/"):
            path, _, query = text.partition("?")
            return path, query
        if text == "*":
            return "*", ""
        if "://" in text:  # absolute-form, as sent to proxies
            try:
                parts = urlsplit(text)
            except ValueError:
                raise _HttpError(400, "malformed request target") from None
            return parts.path or "/", parts.query
        raise _HttpError(400, "malformed request target")

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            line = await self._read_line(reader)
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_text):
                raise _HttpError(400, "malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > self._max_body_bytes:
                raise _HttpError(413, "request body too large")
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _HttpError(400, "malformed chunk")
        trailer_bytes = 0
        while True:  # trailers are read and dropped
            line = await self._read_line(reader)
            if not line:
                break
            trailer_bytes += len(line)
            if trailer_bytes > self._max_header_bytes:
                raise _HttpError(431, "trailers too large")
        return bytes(body)

    @staticmethod
    async def _read_line(reader: asyncio.StreamReader) -> bytes:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(400, "line too long") from None
        return line[:-2]

    async def _refuse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
    ) -> None:
        body = message.encode() + b"\n"
        writer.write(
            b"HTTP/1.1 %d %b\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%b"
            % (status, _REASONS.get(status, "").encode(), len(body), body)
        )
        await writer.drain()
        # Lingering close: stop sending, then drain what the client still sends for a moment,
        # so closing with unread data does not turn into a RST that destroys our answer.
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(self._discard(reader), timeout=2.0)

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    def _store(self, request: RecordedRequest) -> None:
        key = (request.method, request.path)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._record:
                self._records.append(request)

    def _resolve(self, request: RecordedRequest) -> Outcome:
        with self._lock:
            entry = self._routes.get((request.method, request.path))
            if entry is None:
                entry = self._routes.get((None, request.path))
            if entry is None:
                return _DEFAULT_OUTCOME
            if isinstance(entry, _Script):
                return entry.next()
            handler = entry.handler
        try:  # user code runs outside the lock, so it may call count() and friends
            outcome = cast(object, handler(request))  # user code may return anything
        except Exception as exc:
            return Respond(500, f"FaultServer route handler raised {exc!r}\n".encode())
        if not isinstance(outcome, _OUTCOME_TYPES):
            return Respond(500, f"FaultServer route handler returned {outcome!r}\n".encode())
        return outcome

    async def _perform(
        self,
        writer: asyncio.StreamWriter,
        request: RecordedRequest,
        outcome: Outcome,
        keep_alive: bool,
    ) -> bool:
        """Carry out ``outcome``; return whether the connection stays open."""
        if isinstance(outcome, Respond):
            return await self._respond(writer, request, outcome, keep_alive)
        if isinstance(outcome, Reset):
            if outcome.delay:
                await asyncio.sleep(outcome.delay)
            _rst(writer.transport)
            return False
        # ResetMidBody or Truncate
        body = outcome.body
        after = len(body) // 2 if outcome.after is None else outcome.after
        lines = [b"HTTP/1.1 %d %b\r\n" % (outcome.status, _reason(outcome.status))]
        names = _append_headers(lines, _items(outcome.headers))
        if "content-length" not in names and "transfer-encoding" not in names:
            lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        if request.method != "HEAD":
            lines.append(body[:after])
        writer.write(b"".join(lines))
        await _flush(writer)
        if isinstance(outcome, ResetMidBody):
            _rst(writer.transport)
        else:
            writer.close()
        return False

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        request: RecordedRequest,
        outcome: Respond,
        keep_alive: bool,
    ) -> bool:
        if outcome.delay:
            await asyncio.sleep(outcome.delay)
        status = outcome.status
        body = outcome.body
        no_body_status = status in _NO_BODY_STATUSES
        send_body = not no_body_status and request.method != "HEAD"
        lines = [b"HTTP/1.1 %d %b\r\n" % (status, _reason(status))]
        headers = _items(outcome.headers)
        names = _append_headers(lines, headers) if headers else frozenset()
        if "connection" in names:
            for name, value in headers:
                if name.lower() == "connection" and "close" in value.lower():
                    keep_alive = False
        if outcome.chunked:
            if "transfer-encoding" not in names and not no_body_status:
                lines.append(b"transfer-encoding: chunked\r\n")
        elif "content-length" in names:
            declared = next(v for n, v in headers if n.lower() == "content-length")
            if send_body and declared.strip() != str(len(body)):
                keep_alive = False  # the framing is a lie: do not reuse the connection
        elif not no_body_status and "transfer-encoding" not in names:
            lines.append(b"content-length: %d\r\n" % len(body))
        if "connection" not in names:
            lines.append(b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n")
        lines.append(b"\r\n")

        if not send_body:
            writer.write(b"".join(lines))
        elif outcome.body_delay:
            half = len(body) // 2
            first, rest = body[:half], body[half:]
            if outcome.chunked:
                first, rest = _frame_chunk(first), _frame_chunk(rest) + _CHUNK_END
            lines.append(first)
            writer.write(b"".join(lines))
            await writer.drain()
            await asyncio.sleep(outcome.body_delay)
            writer.write(rest)
        elif outcome.chunked:
            lines.append(_frame_chunk(body) + _CHUNK_END)
            writer.write(b"".join(lines))
        elif len(body) <= _SINGLE_WRITE_MAX:
            lines.append(body)
            writer.write(b"".join(lines))
        else:
            writer.writelines((b"".join(lines), body))
        await writer.drain()
        if not keep_alive:
            writer.close()
        return keep_alive


def _reason(status: int) -> bytes:
    """Return the reason phrase for ``status`` (empty for unknown codes)."""
    return _REASONS.get(status, "").encode("latin-1")


def _append_headers(lines: list[bytes], headers: _HeaderItems) -> frozenset[str]:
    """Append rendered ``headers`` to ``lines``; return their lower-cased names."""
    names = []
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        names.append(name.lower())
    return frozenset(names)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Serve every path with ``200 ok`` until stdin closes or SIGTERM/SIGINT arrives.

    Prints ``LISTENING <port>`` on one line once listening.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m resilience._testing_server",
        description="Run a FaultServer answering every path with 200 ok.",
    )
    parser.add_argument("--host", default="127.0.0.1", choices=sorted(_LOOPBACK_HOSTS))
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    parser.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="do not stop when standard input closes (stop on SIGTERM/SIGINT only)",
    )
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    try:
        server = FaultServer(args.host, args.port, record=False)
    except ValueError as exc:
        parser.error(str(exc))
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with server:
            print(f"LISTENING {server.port}", flush=True)
            if not args.ignore_stdin:
                threading.Thread(
                    target=_wait_for_eof, args=(done,), name="stdin-watch", daemon=True
                ).start()
            while not done.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _wait_for_eof(done: threading.Event) -> None:
    """Set ``done`` once standard input reaches end of file."""
    try:
        fd = sys.stdin.fileno()
        while os.read(fd, 65536):
            pass
    except (AttributeError, OSError, ValueError):
        pass  # no usable stdin counts as closed
    done.set()


if __name__ == "__main__":
    sys.exit(main())
