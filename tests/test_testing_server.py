"""Tests for the fault-injecting HTTP/1.1 server, against real httpx clients and raw sockets."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from resilience._testing_server import (
    FaultServer,
    Outcome,
    RecordedRequest,
    Reset,
    ResetMidBody,
    Respond,
    Truncate,
    main,
)

TRANSPORT_ERRORS = (httpx.ReadError, httpx.RemoteProtocolError)
BODY_ERRORS = (httpx.ReadError, httpx.RemoteProtocolError)
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    """A started server, closed after the test."""
    with FaultServer() as fault_server:
        yield fault_server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A sync httpx client that ignores proxy settings from the environment."""
    with httpx.Client(trust_env=False, timeout=10.0) as http_client:
        yield http_client


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh socket and return everything received until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def recv_until_closed(sock: socket.socket, into: bytearray) -> None:
    """Append what ``sock`` receives to ``into``; fail on a clean close (a reset raises)."""
    while chunk := sock.recv(65536):
        into += chunk
    raise AssertionError(f"expected a reset, got a clean close after {bytes(into)!r}")


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(0.01)
    return True


# --------------------------------------------------------------------------- basics


def test_default_path_answers_200_ok(srv: FaultServer, client: httpx.Client) -> None:
    """An unscripted path answers 200 with body ok."""
    response = client.get(srv.url + "/anything")
    assert response.status_code == 200
    assert response.content == b"ok"
    assert response.headers["content-length"] == "2"
    assert srv.url == f"http://127.0.0.1:{srv.port}"


def test_script_sequence_then_fallback(srv: FaultServer, client: httpx.Client) -> None:
    """Scripted outcomes are used one per request, in order, then ``then`` forever."""
    srv.script("/s", Respond(503), Respond(429, b"slow"), then=Respond(201, b"made"))
    got = [client.get(srv.url + "/s") for _ in range(4)]
    assert [r.status_code for r in got] == [503, 429, 201, 201]
    assert got[1].content == b"slow"
    assert got[3].content == b"made"


def test_exhausted_script_defaults_to_200_ok(srv: FaultServer, client: httpx.Client) -> None:
    """Without ``then``, an exhausted script answers 200 ok."""
    srv.script("/s", Respond(500))
    assert client.get(srv.url + "/s").status_code == 500
    response = client.get(srv.url + "/s")
    assert (response.status_code, response.content) == (200, b"ok")


def test_method_specific_script_wins(srv: FaultServer, client: httpx.Client) -> None:
    """A (method, path) script wins over a method-less one for the same path."""
    srv.script("/m", then=Respond(500))
    srv.script("/m", then=Respond(201), method="post")
    assert client.post(srv.url + "/m").status_code == 201
    assert client.get(srv.url + "/m").status_code == 500
    assert client.put(srv.url + "/m").status_code == 500


def test_rescripting_replaces_the_script(srv: FaultServer, client: httpx.Client) -> None:
    """Scripting a path again replaces its remaining outcomes."""
    srv.script("/r", Respond(500), Respond(500))
    assert client.get(srv.url + "/r").status_code == 500
    srv.script("/r", Respond(202))
    assert client.get(srv.url + "/r").status_code == 202
    assert client.get(srv.url + "/r").status_code == 200


def test_query_string_does_not_affect_matching(srv: FaultServer, client: httpx.Client) -> None:
    """Scripts match the path without its query string, which is recorded separately."""
    srv.script("/q", Respond(418))
    assert client.get(srv.url + "/q?a=1&b=2").status_code == 418
    (request,) = srv.requests_for("/q")
    assert request.query == "a=1&b=2"
    assert request.path == "/q"


def test_count_per_path_and_method(srv: FaultServer, client: httpx.Client) -> None:
    """count() filters by path, by method, by both, or counts everything."""
    for _ in range(3):
        client.get(srv.url + "/a")
    client.post(srv.url + "/a")
    client.delete(srv.url + "/b")
    assert srv.count() == 5
    assert srv.count("/a") == 4
    assert srv.count("/a", method="GET") == 3
    assert srv.count("/a", method="post") == 1
    assert srv.count(method="DELETE") == 1
    assert srv.count("/missing") == 0
    assert [r.method for r in srv.requests_for("/a")] == ["GET", "GET", "GET", "POST"]
    assert len(srv.requests_for("/a", method="GET")) == 3


def test_post_body_and_headers_are_recorded(srv: FaultServer, client: httpx.Client) -> None:
    """The body and the headers (lower-cased names, wire order) of a POST are recorded."""
    before = time.monotonic()
    client.post(srv.url + "/p", content=b"payload", headers={"X-Trace": "abc"})
    (request,) = srv.requests
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path, request.body) == ("POST", "/p", b"payload")
    assert request.header("x-trace") == "abc"
    assert request.header("X-TRACE") == "abc"
    assert request.header("content-length") == "7"
    assert request.header("absent") is None
    assert all(name == name.lower() for name, _ in request.headers)
    assert request.headers[0][0] == "host"
    assert before <= request.received_at <= time.monotonic()


def test_chunked_request_body_is_decoded(srv: FaultServer, client: httpx.Client) -> None:
    """A body streamed from a generator arrives chunked and is recorded de-chunked."""

    def parts() -> Iterator[bytes]:
        yield b"hello "
        yield b""
        yield b"chunked " * 1000
        yield b"world"

    assert client.post(srv.url + "/up", content=parts()).status_code == 200
    (request,) = srv.requests_for("/up")
    assert request.header("transfer-encoding") == "chunked"
    assert request.body == b"hello " + b"chunked " * 1000 + b"world"


def test_requests_property_returns_a_copy(srv: FaultServer, client: httpx.Client) -> None:
    """Mutating the list from ``requests`` does not touch the server's records."""
    client.get(srv.url + "/x")
    srv.requests.clear()
    assert len(srv.requests) == 1


def test_reset_clears_scripts_records_and_connection_count(
    srv: FaultServer, client: httpx.Client
) -> None:
    """reset() forgets scripts, routes, records and connections_opened."""
    srv.script("/x", then=Respond(500))
    srv.route("/y", lambda _r: Respond(500))
    client.get(srv.url + "/x")
    srv.reset()
    assert srv.count() == 0
    assert srv.requests == []
    assert srv.connections_opened == 0
    assert client.get(srv.url + "/x").status_code == 200
    assert client.get(srv.url + "/y").status_code == 200


# --------------------------------------------------------------------------- timing


def test_delay_before_headers(srv: FaultServer, client: httpx.Client) -> None:
    """Respond(delay=...) holds back the whole response for at least the delay."""
    srv.script("/slow", Respond(200, b"late", delay=0.3))
    start = time.monotonic()
    with client.stream("GET", srv.url + "/slow") as response:
        headers_after = time.monotonic() - start
        assert response.read() == b"late"
    assert headers_after >= 0.29
    assert headers_after < 5.0


def test_body_delay_stalls_the_second_half(srv: FaultServer, client: httpx.Client) -> None:
    """Respond(body_delay=...) sends headers and half the body, then stalls before the rest."""
    body = bytes(range(256)) * 4
    srv.script("/stall", Respond(200, body, body_delay=0.3))
    start = time.monotonic()
    with client.stream("GET", srv.url + "/stall") as response:
        headers_at = time.monotonic()
        received = bytearray()
        for chunk in response.iter_raw():
            received += chunk
        done_at = time.monotonic()
    assert bytes(received) == body
    # The headers came before the stall and the rest after it (margin for client latency).
    assert done_at - headers_at >= 0.25
    assert done_at - start < 5.0


def test_chunked_response_with_body_delay(srv: FaultServer, client: httpx.Client) -> None:
    """A chunked response is framed correctly, with and without a stall in the middle."""
    srv.script("/c", Respond(200, b"0123456789", chunked=True))
    srv.script("/cd", Respond(200, b"0123456789", chunked=True, body_delay=0.1))
    srv.script("/ce", Respond(200, b"", chunked=True))
    for path in ("/c", "/cd"):
        response = client.get(srv.url + path)
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        assert response.content == b"0123456789"
    assert client.get(srv.url + "/ce").content == b""
    assert srv.connections_opened == 1


# --------------------------------------------------------------------------- faults


def test_reset_raises_and_is_still_counted(srv: FaultServer, client: httpx.Client) -> None:
    """Reset() makes httpx raise a transport error, and the request is recorded anyway."""
    srv.script("/r", Reset())
    with pytest.raises(TRANSPORT_ERRORS):
        client.get(srv.url + "/r")
    assert srv.count("/r") == 1
    assert client.get(srv.url + "/r").status_code == 200


def test_reset_sends_a_tcp_rst_before_any_byte(srv: FaultServer) -> None:
    """On the wire, Reset() gives the client ECONNRESET and no response bytes."""
    srv.script("/r", Reset(delay=0.05))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
        received = bytearray()
        with pytest.raises(ConnectionResetError):
            recv_until_closed(sock, received)
        assert received == b""
    assert srv.count("/r") == 1


def test_reset_mid_body_after_headers(srv: FaultServer, client: httpx.Client) -> None:
    """ResetMidBody delivers the status and headers, then reading the body fails."""
    srv.script("/m", ResetMidBody(status=206, body=b"y" * 4096, headers={"X-Part": "1"}))
    with client.stream("GET", srv.url + "/m") as response:
        assert response.status_code == 206
        assert response.headers["x-part"] == "1"
        assert response.headers["content-length"] == "4096"
        with pytest.raises(BODY_ERRORS):
            response.read()
    assert srv.count("/m") == 1


def test_reset_mid_body_on_the_wire(srv: FaultServer) -> None:
    """ResetMidBody sends exactly ``after`` body bytes, then a TCP RST."""
    srv.script("/m", ResetMidBody(body=b"z" * 100, after=10))
    received = bytearray()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /m HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            recv_until_closed(sock, received)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 100" in head
    assert body == b"z" * 10


def test_truncate_closes_cleanly_short_of_content_length(
    srv: FaultServer, client: httpx.Client
) -> None:
    """Truncate delivers the headers, then httpx sees the body end early."""
    srv.script("/t", Truncate(status=200, body=b"t" * 2048))
    with client.stream("GET", srv.url + "/t") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == "2048"
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert srv.count("/t") == 1


def test_truncate_on_the_wire(srv: FaultServer) -> None:
    """Truncate sends exactly ``after`` body bytes, then a FIN (no reset)."""
    srv.script("/t", Truncate(body=b"q" * 50, after=20))
    data = raw_exchange(srv.port, b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: 50" in head
    assert body == b"q" * 20


def test_lying_content_length_is_sent_as_given(srv: FaultServer) -> None:
    """A Content-Length set in headers is sent as is, and the connection is then closed."""
    srv.script("/lie", Respond(200, b"abcdef", headers=[("Content-Length", "3")]))
    data = raw_exchange(srv.port, b"GET /lie HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 3\r\n" in head
    assert b"content-length" not in head
    assert body == b"abcdef"


def test_route_handler_decides_each_outcome(srv: FaultServer, client: httpx.Client) -> None:
    """A route handler sees the recorded request and chooses the outcome."""
    seen: list[str] = []

    def handler(request: RecordedRequest) -> Outcome:
        seen.append(request.query)
        return Respond(200, request.query.encode()) if request.query else Reset()

    srv.route("/dyn", handler)
    assert client.get(srv.url + "/dyn?v=1").content == b"v=1"
    with pytest.raises(TRANSPORT_ERRORS):
        client.get(srv.url + "/dyn")
    assert seen == ["v=1", ""]


def test_route_handler_errors_become_500(srv: FaultServer, client: httpx.Client) -> None:
    """A route handler that raises, or returns a non-outcome, yields a 500 naming the problem."""

    def boom(_request: RecordedRequest) -> Outcome:
        raise RuntimeError("kaput")

    def wrong(_request: RecordedRequest) -> Outcome:
        return "nope"  # type: ignore[return-value]

    srv.route("/boom", boom)
    srv.route("/wrong", wrong)
    response = client.get(srv.url + "/boom")
    assert response.status_code == 500
    assert b"kaput" in response.content
    response = client.get(srv.url + "/wrong")
    assert response.status_code == 500
    assert b"nope" in response.content


# --------------------------------------------------------------------------- connections


def test_keep_alive_reuses_one_connection(srv: FaultServer) -> None:
    """Fifty sequential requests from one client share one TCP connection, closed after."""
    with httpx.Client(trust_env=False) as http_client:
        for i in range(50):
            response = http_client.get(f"{srv.url}/k?i={i}")
            assert response.status_code == 200
            assert response.headers["connection"] == "keep-alive"
        assert srv.connections_opened == 1
        assert srv.open_connections == 1
    assert srv.count("/k") == 50
    assert wait_until(lambda: srv.open_connections == 0)


def test_connection_close_is_honoured(srv: FaultServer) -> None:
    """A request with Connection: close gets the same header back and a closed socket."""
    data = raw_exchange(srv.port, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nok")
    assert wait_until(lambda: srv.open_connections == 0)


def test_http10_closes_unless_keep_alive(srv: FaultServer) -> None:
    """An HTTP/1.0 request without keep-alive gets one response and a close."""
    data = raw_exchange(srv.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert data.endswith(b"connection: close\r\n\r\nok")


def test_pipelined_requests_are_answered_in_order(srv: FaultServer) -> None:
    """Two requests sent in one write get two responses in order on the same connection."""
    srv.script("/one", Respond(201, b"1"))
    srv.script("/two", Respond(202, b"2"))
    data = raw_exchange(
        srv.port,
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert data.index(b"HTTP/1.1 201") < data.index(b"HTTP/1.1 202") < data.index(b"HTTP/1.1 200")
    assert srv.requests_for("/two")[0].body == b"abc"
    assert srv.connections_opened == 1


def test_expect_100_continue(srv: FaultServer) -> None:
    """A request with Expect: 100-continue gets an interim 100 before sending its body."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(
            b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1024)
            assert chunk
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"data")
        rest = interim.split(b"\r\n\r\n", 1)[1]
        while chunk := sock.recv(1024):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert srv.requests_for("/e")[0].body == b"data"


def test_stop_refuses_then_start_serves_on_the_same_port(srv: FaultServer) -> None:
    """After stop() connections are refused; start() listens on the same port again."""
    port = srv.port
    with httpx.Client(trust_env=False) as http_client:
        assert http_client.get(srv.url + "/up").status_code == 200
        srv.stop()
        assert not srv.running
        assert wait_until(lambda: srv.open_connections == 0)
        with pytest.raises(httpx.ConnectError):
            http_client.get(srv.url + "/up")
        srv.stop()  # idempotent
        assert srv.start() is srv
        assert srv.port == port
        assert srv.start() is srv  # idempotent
        assert http_client.get(srv.url + "/up").status_code == 200
    assert srv.count("/up") == 2
    assert srv.connections_opened == 2


def test_stop_aborts_a_request_in_flight(srv: FaultServer, client: httpx.Client) -> None:
    """stop() aborts a connection whose response is still being delayed."""
    srv.script("/hang", Respond(200, delay=30.0))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.get(srv.url + "/hang")
        except httpx.TransportError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert wait_until(lambda: srv.count("/hang") == 1)
    start = time.monotonic()
    srv.stop()
    caller.join(timeout=10)
    assert not caller.is_alive()
    assert time.monotonic() - start < 5.0
    assert len(errors) == 1
    assert srv.open_connections == 0


def test_close_is_idempotent_and_start_after_close_works() -> None:
    """close() can be repeated, and a closed server can be started again."""
    fault_server = FaultServer()
    fault_server.close()  # never started
    with fault_server:
        port = fault_server.port
    fault_server.close()
    with fault_server, httpx.Client(trust_env=False) as http_client:
        assert fault_server.port == port
        assert http_client.get(fault_server.url + "/").status_code == 200


def test_concurrent_clients_from_threads_are_all_recorded(srv: FaultServer) -> None:
    """Requests from several threads at once are all served and counted."""

    def worker() -> None:
        with httpx.Client(trust_env=False) as http_client:
            for _ in range(25):
                assert http_client.get(srv.url + "/t").status_code == 200

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert srv.count("/t") == 100
    assert srv.connections_opened == 4


@pytest.mark.anyio
async def test_async_client_concurrent_requests(srv: FaultServer) -> None:
    """An AsyncClient gets scripted outcomes and many concurrent answers."""
    srv.script("/a", Respond(503), then=Respond(200, b"fine"))
    statuses: list[int] = []
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http_client:
        assert (await http_client.get(srv.url + "/a")).status_code == 503

        async def fetch() -> None:
            statuses.append((await http_client.get(srv.url + "/a")).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(fetch)
    assert statuses == [200] * 20
    assert srv.count("/a") == 21


@pytest.mark.anyio
async def test_async_client_sees_reset_and_delay(srv: FaultServer) -> None:
    """An AsyncClient sees a Reset as a transport error and a delayed response as late."""
    srv.script("/r", Reset(), Respond(200, b"ok", delay=0.2))
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http_client:
        with pytest.raises(TRANSPORT_ERRORS):
            await http_client.get(srv.url + "/r")
        start = time.monotonic()
        response = await http_client.get(srv.url + "/r")
        assert time.monotonic() - start >= 0.19
        assert response.content == b"ok"


# --------------------------------------------------------------------------- HEAD and status


def test_head_gets_headers_but_no_body(srv: FaultServer) -> None:
    """A HEAD response announces the body length but sends no body."""
    srv.script("/h", then=Respond(200, b"x" * 100))
    with httpx.Client(trust_env=False) as http_client:
        response = http_client.head(srv.url + "/h")
        assert response.status_code == 200
        assert response.headers["content-length"] == "100"
        assert response.content == b""
        assert http_client.get(srv.url + "/h").content == b"x" * 100  # framing intact
    data = raw_exchange(srv.port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.endswith(b"\r\n\r\n")


def test_no_body_statuses(srv: FaultServer) -> None:
    """204 and 304 responses carry no body even when one is given."""
    srv.script("/n", Respond(204, b"ignored"), Respond(304, b"ignored"), then=Respond(200, b"y"))
    with httpx.Client(trust_env=False) as http_client:
        assert http_client.get(srv.url + "/n").content == b""
        assert http_client.get(srv.url + "/n").status_code == 304
        assert http_client.get(srv.url + "/n").content == b"y"
        assert srv.connections_opened == 1


def test_custom_headers_and_unknown_status(srv: FaultServer, client: httpx.Client) -> None:
    """Extra headers are sent in order, and an unknown status code goes out as is."""
    srv.script("/x", Respond(799, b"?", headers=[("X-A", "1"), ("X-A", "2")]))
    response = client.get(srv.url + "/x")
    assert response.status_code == 799
    assert response.headers.get_list("x-a") == ["1", "2"]


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET nopath HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n", 413),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_requests_are_refused(srv: FaultServer, raw: bytes, status: int) -> None:
    """Malformed or oversized requests get a 400/413/431 and a closed connection."""
    data = raw_exchange(srv.port, raw)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close\r\n" in data
    assert srv.count() == 0


def test_absolute_form_target_and_stray_crlf(srv: FaultServer) -> None:
    """An absolute-form target is reduced to its path, and leading CRLFs are skipped."""
    raw_exchange(
        srv.port, b"\r\nGET http://example.test/abs?q=1 HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    (request,) = srv.requests
    assert (request.path, request.query) == ("/abs", "q=1")


# --------------------------------------------------------------------------- chaos


def chaos_run(fault_server: FaultServer, seed: int | None, n: int, rate: float = 0.3) -> list[str]:
    """Send ``n`` requests to a chaos path and return what each one got."""
    fault_server.chaos("/chaos", fault_rate=rate, seed=seed, retry_after=0.05, slow=0.01)
    results = []
    with httpx.Client(trust_env=False, timeout=10.0) as http_client:
        for _ in range(n):
            try:
                response = http_client.get(fault_server.url + "/chaos")
            except TRANSPORT_ERRORS:
                results.append("reset")
            else:
                results.append(f"{response.status_code}:{response.headers.get('x-fault', '')}")
    return results


def test_chaos_is_deterministic_for_a_seed(srv: FaultServer) -> None:
    """The same seed gives the same sequence of outcomes; another seed gives another."""
    first = chaos_run(srv, seed=7, n=60)
    second = chaos_run(srv, seed=7, n=60)
    other = chaos_run(srv, seed=8, n=60)
    assert first == second
    assert first != other
    assert srv.count("/chaos") == 180


def test_chaos_fault_share_and_headers(srv: FaultServer) -> None:
    """About fault_rate of chaos requests fail, with every kind of fault represented."""
    results = chaos_run(srv, seed=1234, n=400, rate=0.3)
    faults = [r for r in results if r != "200:"]
    assert 0.2 * 400 <= len(faults) <= 0.4 * 400
    kinds = {r for r in faults}
    assert kinds == {"503:503", "429:429", "500:500", "502:502", "reset", "200:slow"}
    srv.chaos("/h", fault_rate=1.0, seed=3, retry_after=2.5)
    with httpx.Client(trust_env=False) as http_client:
        for _ in range(50):
            try:
                response = http_client.get(srv.url + "/h")
            except TRANSPORT_ERRORS:
                continue
            if response.status_code in (429, 503):
                assert response.headers["retry-after"] == "3"
                assert response.headers["retry-after-ms"] == "2500"
                break
        else:
            raise AssertionError("no 429/503 in 50 all-fault requests")


def test_chaos_zero_rate_never_faults(srv: FaultServer) -> None:
    """fault_rate=0 answers every request 200 ok."""
    assert set(chaos_run(srv, seed=None, n=30, rate=0.0)) == {"200:"}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Respond(status=99), "status"),
        (lambda: Respond(status=1000), "status"),
        (lambda: Respond(status=True), "status"),
        (lambda: Respond(body="text"), "body"),  # type: ignore[arg-type]
        (lambda: Respond(delay=-1), "delay"),
        (lambda: Respond(delay=math.inf), "delay"),
        (lambda: Respond(body_delay=math.nan), "body_delay"),
        (lambda: Respond(headers={"Bad Name": "x"}), "headers"),
        (lambda: Respond(headers={"X": "a\r\nInjected: 1"}), "headers"),
        (lambda: Respond(headers=[("X",)]), "headers"),  # type: ignore[list-item]
        (lambda: Respond(chunked=1), "chunked"),  # type: ignore[arg-type]
        (lambda: Reset(delay=-0.1), "delay"),
        (lambda: ResetMidBody(after=2000), "after"),
        (lambda: ResetMidBody(after=-1), "after"),
        (lambda: Truncate(body=b"abc", after=4), "after"),
        (lambda: Truncate(status=42), "status"),
        (lambda: FaultServer(port=70000), "port"),
        (lambda: FaultServer(max_body_bytes=-1), "max_body_bytes"),
        (lambda: FaultServer().chaos("/c", fault_rate=1.5), "fault_rate"),
        (lambda: FaultServer().chaos("/c", fault_rate=-0.1), "fault_rate"),
        (lambda: FaultServer().chaos("/c", slow=-1), "slow"),
        (lambda: FaultServer().chaos("/c", retry_after=-1), "retry_after"),
        (lambda: FaultServer().script("nopath"), "path"),
        (lambda: FaultServer().script("/p?q=1"), "path"),
        (lambda: FaultServer().script("/p", method="GE T"), "method"),
        (lambda: FaultServer().script("/p", "no"), "outcomes"),  # type: ignore[arg-type]
        (lambda: FaultServer().script("/p", then=200), "then"),  # type: ignore[arg-type]
        (lambda: FaultServer().route("/p", "nope"), "handler"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_value_error_naming_the_field(build: object, field: str) -> None:
    """Invalid arguments raise ValueError whose message names the offending field."""
    assert callable(build)
    with pytest.raises(ValueError, match=field):
        build()


def test_outcomes_are_normalised_and_hashable() -> None:
    """Headers given as a mapping or as pairs compare equal, and outcomes are hashable."""
    assert Respond(headers={"A": "1"}) == Respond(headers=[("A", "1")])
    assert Respond(headers={"A": "1"}).headers == (("A", "1"),)
    assert len({Respond(), Respond(), Reset(), Truncate(), ResetMidBody()}) == 4
    assert Respond(body=bytearray(b"ab")).body == b"ab"  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.1", "example.com", "", "::"])
def test_non_loopback_host_is_refused(host: str) -> None:
    """Only loopback hosts are accepted."""
    with pytest.raises(ValueError, match="host"):
        FaultServer(host=host)


def test_localhost_binds_ipv4_loopback(client: httpx.Client) -> None:
    """host='localhost' binds 127.0.0.1 and its URL says so."""
    with FaultServer(host="localhost") as fault_server:
        assert fault_server.host == "localhost"
        assert fault_server.url.startswith("http://127.0.0.1:")
        assert client.get(fault_server.url).status_code == 200


def test_port_before_start_is_an_error() -> None:
    """Asking for the port of a server that never bound one raises RuntimeError."""
    with pytest.raises(RuntimeError, match="start"):
        _ = FaultServer().port


def test_record_false_keeps_counts_only(client: httpx.Client) -> None:
    """With record=False nothing is kept in ``requests`` but count() still works."""
    with FaultServer(record=False) as fault_server:
        client.get(fault_server.url + "/x")
        assert fault_server.requests == []
        assert fault_server.count("/x") == 1


# --------------------------------------------------------------------------- CLI


def test_cli_prints_listening_and_serves() -> None:
    """The CLI prints LISTENING <port>, serves 200 ok, and exits on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilience._testing_server", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        word, port_text = line.split()
        assert word == "LISTENING"
        with httpx.Client(trust_env=False) as http_client:
            response = http_client.get(f"http://127.0.0.1:{int(port_text)}/any/path")
        assert (response.status_code, response.content) == (200, b"ok")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_cli_exits_when_stdin_closes() -> None:
    """The CLI stops serving once its standard input is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilience._testing_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"LISTENING ")
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """main() refuses a non-loopback host or an invalid port before binding anything."""
    with pytest.raises(SystemExit) as excinfo:
        main(["--host", "0.0.0.0"])
    assert excinfo.value.code == 2
    assert "host" in capsys.readouterr().err
    with pytest.raises(SystemExit) as excinfo:
        main(["--port", "70000"])
    assert excinfo.value.code == 2
    assert "port" in capsys.readouterr().err
