"""RetryTransport against the real fault-injecting loopback server, with sync and async clients."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate

import httpx
import pytest

import resilience as rs
from resilience.testing import FakeClock, FaultServer, Reset, ResetMidBody, Respond

from .conftest import Driver, free_port

FAST = rs.Backoff(base=0.01, multiplier=2.0, cap=0.05, jitter="none")


def retrying(policy: rs.Retry) -> object:
    """A transport factory for ``Driver.client``."""
    return lambda inner: rs.RetryTransport(inner, policy)


def test_503_503_200_succeeds_after_three_requests(server: FaultServer, driver: Driver) -> None:
    """Two 503s then a 200: the caller gets the 200, and the server saw exactly 3 requests."""
    server.script("/flaky", Respond(503), Respond(503), Respond(200, body=b"done"))
    clock = FakeClock()
    client = driver.client(retrying(rs.Retry(clock=clock)))
    response = client.request("GET", f"{server.url}/flaky")
    assert response.status_code == 200
    assert response.content == b"done"
    assert server.count("/flaky") == 3
    assert len(clock.sleeps) == 2


def test_post_503_is_sent_once(server: FaultServer, driver: Driver) -> None:
    """A POST without an idempotency key is never resent: the 503 comes back after 1 request."""
    server.script("/orders", Respond(503), then=Respond(201))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))
    response = client.request("POST", f"{server.url}/orders", json={"item": 1})
    assert response.status_code == 503
    assert server.count("/orders", method="POST") == 1


def test_post_with_idempotency_key_is_retried_with_the_same_key(
    server: FaultServer, driver: Driver
) -> None:
    """A keyed POST is retried after a 503, and both attempts carry the same key and body."""
    server.script("/orders", Respond(503), Respond(201))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))
    response = client.request(
        "POST", f"{server.url}/orders", json={"item": 1}, headers={"Idempotency-Key": "k-42"}
    )
    assert response.status_code == 201
    posts = server.requests_for("/orders", method="POST")
    assert [p.header("idempotency-key") for p in posts] == ["k-42", "k-42"]
    assert posts[0].body == posts[1].body == b'{"item":1}'


def test_429_is_retried_for_post(server: FaultServer, driver: Driver) -> None:
    """A 429 means the server did not process the request, so even a bare POST is retried."""
    server.script("/orders", Respond(429, headers={"Retry-After": "1"}), Respond(201))
    clock = FakeClock()
    client = driver.client(retrying(rs.Retry(clock=clock)))
    assert client.request("POST", f"{server.url}/orders", content=b"x").status_code == 201
    assert server.count("/orders") == 2
    assert clock.sleeps[0] >= 1.0


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "2"},
        {"Retry-After": formatdate(1_750_000_002, usegmt=True)},
        {"retry-after-ms": "2000"},
    ],
    ids=["seconds", "http-date", "retry-after-ms"],
)
def test_retry_after_is_waited(
    server: FaultServer, driver: Driver, headers: dict[str, str]
) -> None:
    """Retry-After as seconds, as an HTTP-date 2 s ahead, or in ms: the sleep is at least 2 s."""
    server.script("/slow-down", Respond(503, headers=headers), Respond(200))
    clock = FakeClock(wall=1_750_000_000.0)
    client = driver.client(retrying(rs.Retry(backoff=FAST, clock=clock)))
    assert client.request("GET", f"{server.url}/slow-down").status_code == 200
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] >= 2.0


def test_retry_after_really_waits(server: FaultServer, driver: Driver) -> None:
    """With the real clock, the second request arrives at least Retry-After seconds later."""
    server.script("/wait", Respond(503, headers={"Retry-After": "1"}), Respond(200))
    client = driver.client(retrying(rs.Retry(backoff=FAST)))
    started = time.monotonic()
    assert client.request("GET", f"{server.url}/wait").status_code == 200
    assert time.monotonic() - started >= 1.0
    first, second = server.requests_for("/wait")
    assert second.received_at - first.received_at >= 0.95


def test_retry_after_beyond_max_returns_at_once(server: FaultServer, driver: Driver) -> None:
    """Retry-After: 100000 with max_retry_after=120: the 503 comes back after 1 request."""
    server.script("/down", Respond(503, headers={"Retry-After": "100000"}), then=Respond(200))
    clock = FakeClock()
    client = driver.client(retrying(rs.Retry(max_retry_after=120, clock=clock)))
    response = client.request("GET", f"{server.url}/down")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "100000"
    assert server.count("/down") == 1
    assert clock.sleeps == []


def test_reset_before_any_byte_on_post_is_not_retried(server: FaultServer, driver: Driver) -> None:
    """The connection was made and the POST sent, then reset: it may have been processed."""
    server.script("/pay", Reset(), then=Respond(200))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.request("POST", f"{server.url}/pay", content=b"charge")
    assert server.count("/pay") == 1


def test_reset_before_any_byte_on_get_is_retried(server: FaultServer, driver: Driver) -> None:
    """The same reset on a GET is retried: resending an idempotent request is safe."""
    server.script("/read", Reset(), then=Respond(200, body=b"ok"))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))
    assert client.request("GET", f"{server.url}/read").content == b"ok"
    assert server.count("/read") == 2


class StartsServerOnSleep(FakeClock):
    """A fake clock that brings the server up during the first backoff sleep."""

    def __init__(self, server: FaultServer) -> None:
        super().__init__()
        self.server = server

    def sleep(self, seconds: float) -> None:
        self.server.start()
        super().sleep(seconds)


def test_post_whose_connect_never_completed_is_retried(driver: Driver) -> None:
    """A POST refused at connect never reached a server, so it is resent: 1 POST arrives."""
    server = FaultServer(port=free_port())
    try:
        server.script("/pay", Respond(201))
        clock = StartsServerOnSleep(server)
        client = driver.client(retrying(rs.Retry(clock=clock)))
        response = client.request("POST", f"http://127.0.0.1:{server.port}/pay", content=b"x")
        assert response.status_code == 201
        assert len(clock.sleeps) == 1
        assert server.count("/pay", method="POST") == 1
    finally:
        server.close()


def test_connect_errors_end_with_the_last_exception(driver: Driver) -> None:
    """Nothing listens: every attempt is made, then the ConnectError reaches the caller."""
    clock = FakeClock()
    client = driver.client(retrying(rs.Retry(attempts=3, clock=clock)))
    with pytest.raises(httpx.ConnectError):
        client.request("GET", f"http://127.0.0.1:{free_port()}/")
    assert len(clock.sleeps) == 2


def test_reset_mid_body_is_retried_with_read_body(server: FaultServer, driver: Driver) -> None:
    """With read_body=True a body cut by a reset is read inside the attempt and retried."""
    server.script("/report", ResetMidBody(body=b"x" * 4096), then=Respond(200, body=b"y" * 4096))
    client = driver.client(retrying(rs.Retry(read_body=True, clock=FakeClock())))
    response = client.request("GET", f"{server.url}/report")
    assert response.content == b"y" * 4096
    assert server.count("/report") == 2


def test_reset_mid_body_reaches_the_caller_without_read_body(
    server: FaultServer, driver: Driver
) -> None:
    """Without read_body the body is read after the transport returned: the error surfaces."""
    server.script("/report", ResetMidBody(body=b"x" * 4096), then=Respond(200, body=b"y" * 4096))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.request("GET", f"{server.url}/report")
    assert server.count("/report") == 1


def test_read_body_can_be_turned_off_per_request(server: FaultServer, driver: Driver) -> None:
    """extensions={"resilience": {"read_body": False}} turns read_body off for one request."""
    server.script("/report", ResetMidBody(body=b"x" * 4096), then=Respond(200))
    client = driver.client(retrying(rs.Retry(read_body=True, clock=FakeClock())))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.request(
            "GET", f"{server.url}/report", extensions={"resilience": {"read_body": False}}
        )
    assert server.count("/report") == 1


def test_read_body_leaves_event_streams_alone(server: FaultServer, driver: Driver) -> None:
    """A text/event-stream body is never read inside the attempt, even with read_body=True."""
    headers = {"Content-Type": "text/event-stream"}
    server.script("/events", ResetMidBody(body=b"data: 1\n\n" * 100, headers=headers))
    client = driver.client(retrying(rs.Retry(read_body=True, clock=FakeClock())))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.request("GET", f"{server.url}/events")
    assert server.count("/events") == 1


def test_deadline_cuts_slow_attempts(server: FaultServer, driver: Driver) -> None:
    """Deadline 1 s, every answer takes 0.4 s: DeadlineExceeded before 1.1 s, an httpx timeout."""
    server.script("/slow", then=Respond(503, delay=0.4))
    client = driver.client(retrying(rs.Retry(attempts=10, backoff=FAST, deadline=1.0)))
    started = time.monotonic()
    with pytest.raises(rs.DeadlineExceeded) as caught:
        client.request("GET", f"{server.url}/slow")
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.1
    assert isinstance(caught.value, httpx.TimeoutException)
    assert caught.value.deadline == 1.0
    assert server.count("/slow") == 3


def test_deadline_caps_the_client_timeout(server: FaultServer, driver: Driver) -> None:
    """A 0.5 s deadline wins over a 30 s client timeout when the server hangs."""
    server.script("/hang", Respond(200, delay=5.0))
    client = driver.client(retrying(rs.Retry(deadline=0.5)), timeout=30.0)
    started = time.monotonic()
    with pytest.raises(rs.DeadlineExceeded):
        client.request("GET", f"{server.url}/hang")
    assert time.monotonic() - started < 2.0


def test_deadline_spans_redirect_hops(server: FaultServer, driver: Driver) -> None:
    """Each of two hops takes 0.6 s; a 1 s deadline for the whole request cuts the second."""
    server.script("/a", Respond(302, headers={"Location": "/b"}, delay=0.6))
    server.script("/b", Respond(200, delay=0.6))
    client = driver.client(retrying(rs.Retry(deadline=1.0)), follow_redirects=True)
    started = time.monotonic()
    with pytest.raises(rs.DeadlineExceeded):
        client.request("GET", f"{server.url}/a")
    assert time.monotonic() - started < 1.5
    assert server.count("/b") == 1


def test_held_response_is_returned_when_the_sleep_would_pass_the_deadline(
    server: FaultServer, driver: Driver
) -> None:
    """Retry-After 5 s under a 2 s deadline: the 503 we hold comes back at once."""
    server.script("/busy", Respond(503, headers={"Retry-After": "5"}), then=Respond(200))
    client = driver.client(retrying(rs.Retry(deadline=2.0)))
    started = time.monotonic()
    assert client.request("GET", f"{server.url}/busy").status_code == 503
    assert time.monotonic() - started < 1.0
    assert server.count("/busy") == 1


def test_budget_exhausted_stops_retrying(server: FaultServer, driver: Driver) -> None:
    """A budget of 2 retries per window: the first request uses both, the second gets none."""
    server.script("/down", then=Respond(503))
    budget = rs.RetryBudget(ratio=0.0, min_per_second=0.2)
    client = driver.client(retrying(rs.Retry(attempts=4, budget=budget, clock=FakeClock())))
    assert client.request("GET", f"{server.url}/down").status_code == 503
    assert server.count("/down") == 3
    assert client.request("GET", f"{server.url}/down").status_code == 503
    assert server.count("/down") == 4


def test_x_should_retry_true_makes_a_post_retryable(server: FaultServer, driver: Driver) -> None:
    """x-should-retry: true on a 409 to a POST: the server says a resend is safe."""
    server.script("/jobs", Respond(409, headers={"x-should-retry": "true"}), Respond(201))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))
    assert client.request("POST", f"{server.url}/jobs", content=b"j").status_code == 201
    assert server.count("/jobs") == 2


def test_x_should_retry_false_stops_a_get(server: FaultServer, driver: Driver) -> None:
    """x-should-retry: false on a 503 to a GET: not retried."""
    server.script("/jobs", Respond(503, headers={"x-should-retry": "false"}), then=Respond(200))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))
    assert client.request("GET", f"{server.url}/jobs").status_code == 503
    assert server.count("/jobs") == 1


def test_one_shot_body_is_not_resent(server: FaultServer, driver: Driver) -> None:
    """A keyed POST whose body is a generator cannot be replayed, so a 503 is returned as is."""
    server.script("/upload", Respond(503), then=Respond(201))
    client = driver.client(retrying(rs.Retry(clock=FakeClock())))

    def chunks() -> object:
        yield b"part1"
        yield b"part2"

    if driver.mode == "async":

        async def achunks() -> object:
            yield b"part1"
            yield b"part2"

        body: object = achunks()
    else:
        body = chunks()
    response = client.request(
        "POST", f"{server.url}/upload", content=body, headers={"Idempotency-Key": "u-1"}
    )
    assert response.status_code == 503
    assert server.count("/upload") == 1
    assert server.requests_for("/upload")[0].body == b"part1part2"


def test_per_request_override(server: FaultServer, driver: Driver) -> None:
    """extensions override the policy for one request: None disables, a Retry replaces."""
    server.script("/x", then=Respond(503))
    policy = rs.Retry(attempts=4, clock=FakeClock())
    client = driver.client(retrying(policy))
    url = f"{server.url}/x"
    client.request("GET", url, extensions={"resilience": {"retry": None}})
    assert server.count("/x") == 1
    client.request("GET", url, extensions={"resilience": {"retry": policy.replace(attempts=2)}})
    assert server.count("/x") == 3
    client.request("GET", url)
    assert server.count("/x") == 7


def test_bad_override_is_a_clear_error(server: FaultServer, driver: Driver) -> None:
    """A per-request override of the wrong type raises a TypeError that names it."""
    client = driver.client(retrying(rs.Retry()))
    with pytest.raises(TypeError, match=r'\["retry"\] must be a Retry or None'):
        client.request("GET", server.url, extensions={"resilience": {"retry": 3}})


def test_thousand_requests_leave_no_open_connections(server: FaultServer, driver: Driver) -> None:
    """500 logical GETs, each a 503 then a 200, over a pool of one: nothing leaks."""
    outcomes = [Respond(503, body=b"busy" * 100), Respond(200, body=b"ok" * 100)] * 500
    server.script("/load", *outcomes)
    client = driver.client(
        retrying(rs.Retry(clock=FakeClock())),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=httpx.Timeout(5.0, pool=1.0),
    )
    for _ in range(500):
        assert client.request("GET", f"{server.url}/load").status_code == 200
    assert server.count("/load") == 1000
    assert server.connections_opened == 1
    client.close()
    deadline = time.monotonic() + 5.0
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.open_connections == 0


def test_retry_is_logged_with_secrets_redacted(
    server: FaultServer, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry emits retry.scheduled with method, redacted URL, attempt, delay and reason."""
    server.script("/data", Respond(503), Respond(200))
    client = driver.client(retrying(rs.Retry(backoff=FAST, clock=FakeClock())))
    with caplog.at_level(logging.INFO, logger="resilience"):
        client.request("GET", f"{server.url}/data?token=s3cret&page=2")
    [record] = [r for r in caplog.records if r.msg == "retry.scheduled"]
    fields = record.__dict__
    assert fields["method"] == "GET"
    assert fields["url"] == f"{server.url}/data?token=[REDACTED]&page=2"
    assert fields["attempt"] == 1
    assert fields["delay"] == pytest.approx(0.01)
    assert fields["reason"] == "status 503"
    assert "s3cret" not in caplog.text


def test_sync_transport_refuses_async_use(server: FaultServer) -> None:
    """Wrapping a sync transport and using it from an AsyncClient is a clear TypeError."""
    transport = rs.RetryTransport(httpx.HTTPTransport())

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(server.url)

    import anyio

    with pytest.raises(TypeError, match=r"use it with httpx\.Client"):
        anyio.run(main)
    transport.close()


def test_bad_construction() -> None:
    """RetryTransport names what is wrong with its arguments."""
    with pytest.raises(TypeError, match="needs an httpx transport"):
        rs.RetryTransport(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a Retry"):
        rs.RetryTransport(httpx.HTTPTransport(), retry=3)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_retry_sleep_does_not_block_the_loop(server: FaultServer) -> None:
    """While an async request waits out Retry-After, other tasks keep running."""
    import anyio

    server.script("/wait", Respond(503, headers={"retry-after-ms": "500"}), Respond(200))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    transport = rs.RetryTransport(httpx.AsyncHTTPTransport(), rs.Retry(backoff=FAST))
    async with httpx.AsyncClient(transport=transport) as client, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        response = await client.get(f"{server.url}/wait")
        tg.cancel_scope.cancel()
    assert response.status_code == 200
    assert ticks >= 20  # 0.5 s of 10 ms ticks, with a wide margin for a busy machine


def test_inherited_deadline_that_passed_stops_before_sending() -> None:
    """A hop that arrives after the logical request's deadline is not sent at all."""
    from resilience._transports._httpx import DEADLINE

    sent: list[httpx.Request] = []
    transport = rs.RetryTransport(
        httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200)),
        rs.Retry(clock=FakeClock(start=100.0)),  # no deadline of its own: it inherits one
    )
    with httpx.Client(transport=transport) as client:
        request = client.build_request("GET", "http://127.0.0.1:9/hop?token=t")
        request.extensions[DEADLINE] = 99.0
        with pytest.raises(rs.DeadlineExceeded, match=r"GET .*token=\[REDACTED\].*deadline"):
            client.send(request)
    assert sent == []


class Stalling(httpx.AsyncBaseTransport):
    """An async transport that ignores httpx's timeouts: it answers after ``delay`` seconds."""

    def __init__(self, delay: float, error: BaseException | None = None) -> None:
        self.delay = delay
        self.error = error
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        self.calls += 1
        await anyio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return httpx.Response(200)


@pytest.mark.parametrize("scope", ["watch", "anyio"])
@pytest.mark.anyio
async def test_async_deadline_cuts_off_a_transport_that_ignores_timeouts(
    scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under asyncio (the loop's deadline watch) and elsewhere (an anyio scope) it is enforced."""
    from resilience._transports import retry

    if scope == "anyio":
        monkeypatch.setattr(retry, "_watched", False)
    stalling = Stalling(delay=10.0)
    transport = rs.RetryTransport(stalling, rs.Retry(deadline=0.3))
    started = time.monotonic()
    with pytest.raises(rs.DeadlineExceeded, match=r"GET .*token=\[REDACTED\].*cut off"):
        await transport.handle_async_request(
            httpx.Request("GET", "http://127.0.0.1:9/slow?token=t")
        )
    assert 0.25 <= time.monotonic() - started < 2.0
    assert stalling.calls == 1


@pytest.mark.anyio
async def test_async_deadline_does_not_claim_the_transports_own_timeout_error() -> None:
    """A builtin TimeoutError raised by the transport itself is not reported as the deadline."""
    transport = rs.RetryTransport(
        Stalling(delay=0.0, error=TimeoutError("the transport's own")), rs.Retry(deadline=30.0)
    )
    with pytest.raises(TimeoutError, match="the transport's own") as caught:
        await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/"))
    assert not isinstance(caught.value, rs.DeadlineExceeded)


@pytest.mark.anyio
async def test_async_cancellation_from_outside_is_not_turned_into_a_deadline() -> None:
    """Cancelling the caller while an attempt runs under the deadline cancels; nothing else."""
    import anyio

    stalling = Stalling(delay=10.0)
    transport = rs.RetryTransport(stalling, rs.Retry(deadline=30.0))
    outcome: list[str] = []

    async def call() -> None:
        try:
            await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/"))
        except BaseException as exc:
            outcome.append(type(exc).__name__)
            raise

    with anyio.move_on_after(0.1):
        await call()
    assert outcome == ["CancelledError"]
    assert stalling.calls == 1
