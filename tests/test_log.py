"""Log and LogTransport: one event per request and per attempt, request ids, redaction, cost."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import CapturingLogger
from structlog.typing import EventDict, WrappedLogger

import resilience as rs
from resilience import _log
from resilience._transports.log import RECORD
from resilience.testing import FakeClock, FaultServer, Respond

from .conftest import Driver, free_port


class Sink:
    """A user's structlog logger that renders every event to JSON into a list, in memory."""

    def __init__(self, level: int = logging.DEBUG) -> None:
        self.output = CapturingLogger()
        self.events: list[dict[str, Any]] = []

        def keep(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
            self.events.append({**event_dict, "level": method})
            return event_dict

        self.logger = structlog.wrap_logger(
            self.output,
            processors=[
                structlog.contextvars.merge_contextvars,
                keep,
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(level),
        )

    @property
    def text(self) -> str:
        """Everything rendered, as one string."""
        return "\n".join(str(arg) for call in self.output.calls for arg in call.args)

    def named(self, event: str) -> list[dict[str, Any]]:
        """The events called ``event``, oldest first."""
        return [e for e in self.events if e["event"] == event]


def stack(log: rs.Log, retry: rs.Retry | None = None) -> Any:
    """log(request) -> retry -> log(attempt) -> network, for ``Driver.client``."""
    retry = retry or rs.Retry(clock=FakeClock())
    return lambda inner: rs.LogTransport(
        rs.RetryTransport(rs.LogTransport(inner, log, scope="attempt"), retry), log
    )


@pytest.fixture
def sink() -> Sink:
    """A fresh in-memory structlog logger at DEBUG."""
    return Sink()


# --------------------------------------------------------------------------- events


def test_one_request_event_and_one_attempt_event_per_attempt(
    server: FaultServer, driver: Driver, sink: Sink
) -> None:
    """503, 503, 200 through retry: attempts 1..3 logged, then one request event, attempts=3."""
    server.script("/r", Respond(503), Respond(503), Respond(200, b"hello"))
    client = driver.client(stack(rs.Log(sink.logger)))
    assert client.request("GET", f"{server.url}/r?page=2").status_code == 200

    attempts = sink.named("http.attempt")
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert [a["outcome"] for a in attempts] == ["http_error", "http_error", "ok"]
    assert [a["level"] for a in attempts] == ["warning", "warning", "info"]
    assert attempts[2]["bytes"] == 5
    (request,) = sink.named("http.request")
    assert request["attempts"] == 3
    assert request["status"] == 200
    assert request["outcome"] == "ok"
    assert request["level"] == "info"
    assert request["cache"] is None
    assert request["method"] == "GET"
    assert request["url"] == f"{server.url}/r?page=2"
    assert request["elapsed_ms"] >= max(a["elapsed_ms"] for a in attempts) > 0
    assert len({e["request_id"] for e in sink.events}) == 1
    assert sink.events[-1] is not attempts[-1]  # the request event comes last


def test_attempt_layer_alone_counts_on_its_own_record(
    server: FaultServer, driver: Driver, sink: Sink
) -> None:
    """Without a request-scope layer above, the attempt layer still numbers 1, 2, 3."""
    server.script("/r", Respond(503), Respond(503), Respond(200))
    log = rs.Log(sink.logger)
    retry = rs.Retry(clock=FakeClock())
    client = driver.client(
        lambda inner: rs.RetryTransport(rs.LogTransport(inner, log, scope="attempt"), retry)
    )
    client.request("GET", f"{server.url}/r")
    client.request("GET", f"{server.url}/r")
    attempts = sink.named("http.attempt")
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 1]
    assert len({a["request_id"] for a in attempts[:3]}) == 1
    assert attempts[3]["request_id"] != attempts[0]["request_id"]
    assert sink.named("http.request") == []


def test_a_quiet_request_layer_silences_only_its_own_policy(
    server: FaultServer, driver: Driver, sink: Sink
) -> None:
    """A request layer that logs nothing leaves an attempt layer with another policy logging."""
    server.script("/r", Respond(503), Respond(200))
    quiet = rs.Log(Sink(level=logging.ERROR).logger)
    retry = rs.Retry(clock=FakeClock())
    seen: list[object] = []
    sent: list[httpx.Request] = []

    class Spy(httpx.BaseTransport, httpx.AsyncBaseTransport):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.extensions.get(RECORD))
            sent.append(request)
            return self.inner.handle_request(request)  # type: ignore[no-any-return]

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.extensions.get(RECORD))
            sent.append(request)
            return await self.inner.handle_async_request(request)  # type: ignore[no-any-return]

        def close(self) -> None:
            self.inner.close()

        async def aclose(self) -> None:
            await self.inner.aclose()

    def layers(inner: Any) -> Any:
        attempt = rs.LogTransport(Spy(inner), rs.Log(sink.logger), scope="attempt")
        return rs.LogTransport(rs.RetryTransport(attempt, retry), quiet)

    client = driver.client(layers)
    assert client.request("GET", f"{server.url}/r").status_code == 200
    assert [a["attempt"] for a in sink.named("http.attempt")] == [1, 2]
    assert len(seen) == 2
    assert quiet not in seen  # the attempt layer kept its own record
    assert sent[0] is sent[1]
    assert sent[0].extensions.get(RECORD) is not quiet  # the quiet mark is taken away after


def test_failure_statuses_use_the_failure_level(server: FaultServer, driver: Driver) -> None:
    """A 404 is an http_error at failure_level; level and failure_level are configurable."""
    sink = Sink()
    server.script("/missing", Respond(404))
    log = rs.Log(sink.logger, level="debug", failure_level="error")
    client = driver.client(lambda inner: rs.LogTransport(inner, log))
    client.request("GET", f"{server.url}/missing")
    client.request("GET", f"{server.url}/ok")
    assert [(e["status"], e["outcome"], e["level"]) for e in sink.events] == [
        (404, "http_error", "error"),
        (200, "ok", "debug"),
    ]


def test_cache_status_is_reported() -> None:
    """The request event reports what the cache layer put in response.extensions."""
    sink = Sink()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, extensions={"resilience.cache": "revalidated"})

    transport = rs.LogTransport(httpx.MockTransport(handler), rs.Log(sink.logger))
    with httpx.Client(transport=transport) as client:
        client.get("http://127.0.0.1:9/")
    assert sink.named("http.request")[0]["cache"] == "revalidated"


def test_cache_hit_makes_no_attempt(server: FaultServer, driver: Driver, sink: Sink) -> None:
    """In the documented order, a cache hit logs cache="hit", attempts=0 and no http.attempt."""
    server.script("/c", Respond(200, b"cached", headers={"Cache-Control": "max-age=60"}))
    log = rs.Log(sink.logger)
    cache = rs.Cache(storage=rs.MemoryCacheStorage())
    retry = rs.Retry(clock=FakeClock())
    client = driver.client(
        lambda inner: rs.LogTransport(
            rs.CacheTransport(
                rs.RetryTransport(rs.LogTransport(inner, log, scope="attempt"), retry), cache
            ),
            log,
        )
    )
    assert client.request("GET", f"{server.url}/c").text == "cached"
    assert client.request("GET", f"{server.url}/c").text == "cached"
    assert server.count("/c") == 1
    assert [(e["event"], e.get("cache"), e.get("attempts")) for e in sink.events] == [
        ("http.attempt", None, None),
        ("http.request", "miss", 1),
        ("http.request", "hit", 0),
    ]


@pytest.mark.parametrize("length", ["garbage", "-1", "9" * 40, "1e3"])
def test_garbage_content_length_gives_no_bytes(length: str) -> None:
    """An unreadable Content-Length is reported as unknown, never as a crash."""
    sink = Sink()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": length})

    log = rs.Log(sink.logger)
    transport = rs.LogTransport(httpx.MockTransport(handler), log, scope="attempt")
    with httpx.Client(transport=transport) as client:
        client.get("http://127.0.0.1:9/")
    assert sink.named("http.attempt")[0]["bytes"] is None


def test_redirect_hops_share_the_request_id(
    server: FaultServer, driver: Driver, sink: Sink
) -> None:
    """Each redirect hop is its own http.request event, under the first hop's request id."""
    server.script("/old", Respond(302, headers={"Location": "/new"}))
    client = driver.client(stack(rs.Log(sink.logger)), follow_redirects=True)
    assert client.request("GET", f"{server.url}/old").status_code == 200
    hops = sink.named("http.request")
    assert [h["status"] for h in hops] == [302, 200]
    assert [h["attempts"] for h in hops] == [1, 1]
    assert hops[0]["request_id"] == hops[1]["request_id"]


# --------------------------------------------------------------------------- request ids


def test_request_id_from_the_header_is_reused(
    server: FaultServer, driver: Driver, sink: Sink
) -> None:
    """A request carrying X-Request-ID is logged under that id, and the header is unchanged."""
    server.script("/r", Respond(503), Respond(200))
    client = driver.client(stack(rs.Log(sink.logger, send_request_id=True)))
    client.request("GET", f"{server.url}/r", headers={"X-Request-ID": "req-from-app-7"})
    assert {e["request_id"] for e in sink.events} == {"req-from-app-7"}
    assert [r.header("x-request-id") for r in server.requests_for("/r")] == ["req-from-app-7"] * 2


def test_request_id_is_generated_and_not_sent_by_default(
    server: FaultServer, driver: Driver, sink: Sink
) -> None:
    """Without the header, a uuid4 hex id is generated, and the server does not see it."""
    client = driver.client(stack(rs.Log(sink.logger)))
    client.request("GET", f"{server.url}/a")
    client.request("GET", f"{server.url}/a")
    first, second = (e["request_id"] for e in sink.named("http.request"))
    assert uuid.UUID(hex=first).version == 4
    assert uuid.UUID(hex=first).hex == first
    assert first != second
    assert [r.header("x-request-id") for r in server.requests_for("/a")] == [None, None]


def test_generated_request_id_is_sent_when_asked(
    server: FaultServer, driver: Driver, sink: Sink
) -> None:
    """send_request_id=True puts the generated id on every attempt, under the configured name."""
    server.script("/r", Respond(503), Respond(503), Respond(200))
    log = rs.Log(sink.logger, send_request_id=True, request_id_header="X-Correlation-ID")
    client = driver.client(stack(log))
    client.request("GET", f"{server.url}/r")
    (request_id,) = {e["request_id"] for e in sink.events}
    sent = [r.header("x-correlation-id") for r in server.requests_for("/r")]
    assert sent == [request_id] * 3


def test_request_id_is_sent_even_when_logging_is_off(server: FaultServer, driver: Driver) -> None:
    """Sending the id is behaviour, not logging: a filtered logger still sends it."""
    quiet = Sink(level=logging.CRITICAL)
    client = driver.client(stack(rs.Log(quiet.logger, send_request_id=True)))
    client.request("GET", f"{server.url}/a")
    assert quiet.events == []
    sent = server.requests_for("/a")[0].header("x-request-id")
    assert sent is not None
    assert len(sent) == 32


def test_hostile_request_id_header_is_bounded(server: FaultServer, sink: Sink) -> None:
    """A huge X-Request-ID is logged cut to 128 characters; the request goes through untouched."""
    huge = "r" * 8000
    with httpx.Client(
        transport=rs.LogTransport(httpx.HTTPTransport(), rs.Log(sink.logger))
    ) as client:
        assert client.get(f"{server.url}/a", headers={"X-Request-ID": huge}).status_code == 200
    assert sink.events[0]["request_id"] == "r" * 128
    assert server.requests_for("/a")[0].header("x-request-id") == huge


def test_other_layers_events_carry_the_request_id(
    server: FaultServer, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """retry.scheduled (emitted by the retry layer) carries the logical request's id."""
    caplog.set_level(logging.INFO, logger="resilience")
    server.script("/r", Respond(503), Respond(503), Respond(200))
    client = driver.client(stack(rs.Log()))
    client.request("GET", f"{server.url}/r", headers={"X-Request-ID": "abc-123"})
    scheduled = [r for r in caplog.records if r.getMessage() == "retry.scheduled"]
    assert len(scheduled) == 2
    assert {getattr(r, "request_id", None) for r in scheduled} == {"abc-123"}
    (request,) = [r for r in caplog.records if r.getMessage() == "http.request"]
    assert getattr(request, "request_id", None) == "abc-123"


def test_request_ids_stay_apart_across_threads(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight threads retry concurrently: each retry.scheduled event has its own request's id."""
    caplog.set_level(logging.INFO, logger="resilience")
    for n in range(8):
        server.script(f"/t{n}", Respond(503), Respond(200))
    retry = rs.Retry(backoff=rs.Backoff(base=0.01, cap=0.05))
    errors: list[BaseException] = []
    with httpx.Client(transport=stack(rs.Log(), retry)(httpx.HTTPTransport())) as client:

        def one(n: int) -> None:
            try:
                client.get(f"{server.url}/t{n}", headers={"X-Request-ID": f"thread-{n}"})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    scheduled = [r for r in caplog.records if r.getMessage() == "retry.scheduled"]
    assert len(scheduled) == 8
    for record in scheduled:
        path = str(getattr(record, "url", "")).rsplit("/", 1)[1]
        assert getattr(record, "request_id", None) == f"thread-{path[1:]}"


@pytest.mark.anyio
async def test_request_ids_stay_apart_across_tasks(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight asyncio tasks retry concurrently: each event has its own request's id."""
    caplog.set_level(logging.INFO, logger="resilience")
    for n in range(8):
        server.script(f"/t{n}", Respond(503), Respond(200))
    retry = rs.Retry(backoff=rs.Backoff(base=0.01, cap=0.05))
    async with httpx.AsyncClient(
        transport=stack(rs.Log(), retry)(httpx.AsyncHTTPTransport())
    ) as client:
        await asyncio.gather(
            *(
                client.get(f"{server.url}/t{n}", headers={"X-Request-ID": f"task-{n}"})
                for n in range(8)
            )
        )
    records = [r for r in caplog.records if r.getMessage() in ("retry.scheduled", "http.attempt")]
    assert len(records) == 8 + 16
    for record in records:
        path = str(getattr(record, "url", "")).rsplit("/", 1)[1]
        assert getattr(record, "request_id", None) == f"task-{path[1:]}"


# --------------------------------------------------------------------------- redaction

SECRETS = {
    "userinfo": "hunter2-secret-0",
    "query": "tok-secret-1",
    "authorization": "bearer-secret-2",
    "proxy": "proxy-secret-3",
    "cookie": "cookie-secret-4",
    "api_key": "apikey-secret-5",
    "set_cookie": "setcookie-secret-6",
    "json_password": "password-secret-7",
    "fragment": "fragment-secret-8",
}
BASIC = base64.b64encode(f"alice:{SECRETS['userinfo']}".encode()).decode()


def send_every_secret(server: FaultServer, client: Any) -> None:
    """Two requests carrying every kind of secret; the response sets a cookie."""
    server.script(
        "/login",
        Respond(
            200,
            b'{"ok": true}',
            headers={
                "Set-Cookie": f"sid={SECRETS['set_cookie']}; HttpOnly",
                "Content-Type": "application/json",
            },
        ),
    )
    base = server.url.replace("http://", f"http://alice:{SECRETS['userinfo']}@")
    client.request("GET", f"{base}/login?token={SECRETS['query']}&page=2")
    client.request(
        "POST",
        f"{server.url}/login?page=3",
        json={"user": "ada", "password": SECRETS["json_password"]},
        headers={
            "Authorization": f"Bearer {SECRETS['authorization']}",
            "Proxy-Authorization": f"Basic {SECRETS['proxy']}",
            "Cookie": f"session={SECRETS['cookie']}",
            "X-API-Key": SECRETS["api_key"],
        },
    )
    # every secret was really on the wire, so its absence from the logs means something
    wire = repr(server.requests)
    for name, secret in SECRETS.items():
        if name not in ("userinfo", "set_cookie", "fragment"):
            assert secret in wire, name
    assert BASIC in wire


def assert_redacted(text: str, marker: str = "[REDACTED]") -> None:
    """No secret in ``text``; the marker is there."""
    for name, secret in SECRETS.items():
        assert secret not in text, name
    assert BASIC not in text
    assert marker in text


def test_no_secret_reaches_a_user_logger(server: FaultServer, driver: Driver, sink: Sink) -> None:
    """Every secret kind, headers and bodies on: the rendered JSON holds only the marker."""
    log = rs.Log(sink.logger, log_headers=True, log_bodies=True)
    send_every_secret(server, driver.client(stack(log)))
    assert len(sink.named("http.request")) == 2
    assert len(sink.named("http.attempt")) == 2
    assert_redacted(sink.text)
    posted = sink.named("http.request")[1]
    assert posted["request_headers"]["x-api-key"] == "[REDACTED]"
    assert json.loads(posted["request_body"]) == {"user": "ada", "password": "[REDACTED]"}
    first = sink.named("http.request")[0]
    assert first["response_headers"]["set-cookie"] == "[REDACTED]"
    assert first["url"].endswith("/login?token=[REDACTED]&page=2")


def test_no_secret_reaches_capture_logs(server: FaultServer, driver: Driver) -> None:
    """The same through structlog.get_logger() (a lazy proxy), captured by capture_logs()."""
    log = rs.Log(structlog.get_logger(), log_headers=True, log_bodies=True)
    with structlog.testing.capture_logs() as captured:
        send_every_secret(server, driver.client(stack(log)))
    assert len(captured) == 4
    assert_redacted(repr(captured))


def test_no_secret_reaches_stdlib_records(
    server: FaultServer, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """logger=None: the records on "resilience.http" hold no secret either."""
    caplog.set_level(logging.DEBUG, logger="resilience")
    send_every_secret(server, driver.client(stack(rs.Log(log_headers=True, log_bodies=True))))
    records = [r for r in caplog.records if r.name == "resilience.http"]
    assert len(records) == 4
    assert_redacted("\n".join(repr(vars(record)) for record in records))


def test_custom_marker_and_extended_lists(server: FaultServer, sink: Sink) -> None:
    """A user's marker and names: extra header and parameter redacted, defaults still on."""
    redact = rs.DEFAULT_REDACTIONS.extend(headers={"X-Tenant"}, query_params={"otp"}).replace(
        marker="***"
    )
    log = rs.Log(sink.logger, redact=redact, log_headers=True)
    with httpx.Client(transport=rs.LogTransport(httpx.HTTPTransport(), log)) as client:
        client.get(
            f"{server.url}/a?otp=123456&token=tok-xyz&page=1",
            headers={"X-Tenant": "tenant-secret", "Authorization": "Bearer auth-xyz"},
        )
    (event,) = sink.events
    assert event["url"] == f"{server.url}/a?otp=***&token=***&page=1"
    assert event["request_headers"]["x-tenant"] == "***"
    assert event["request_headers"]["authorization"] == "***"
    for secret in ("123456", "tok-xyz", "tenant-secret", "auth-xyz", "[REDACTED]"):
        assert secret not in sink.text


def test_error_messages_are_redacted_and_the_error_re_raised(sink: Sink) -> None:
    """An httpx error naming the URL and a header value is logged redacted, raised unchanged."""
    raised = httpx.ConnectError("placeholder")

    def handler(request: httpx.Request) -> httpx.Response:
        raised.args = (
            f"cannot reach {request.url} with {request.headers['authorization']} "
            f"for {SECRETS['userinfo']}",
        )
        raise raised

    log = rs.Log(sink.logger)
    transport = rs.LogTransport(
        rs.LogTransport(httpx.MockTransport(handler), log, scope="attempt"), log
    )
    url = f"http://alice:{SECRETS['userinfo']}@127.0.0.1:9/x?api_key={SECRETS['api_key']}"
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError) as caught:
        client.get(url, headers={"Authorization": f"Bearer {SECRETS['authorization']}"})
    assert caught.value is raised
    attempt, request = sink.events
    for event in (attempt, request):
        assert event["outcome"] == "error"
        assert event["error"] == "ConnectError"
        assert event["status"] is None
        assert event["level"] == "warning"
        assert (
            "cannot reach http://alice:[REDACTED]@127.0.0.1:9/x?api_key=[REDACTED]"
            in (event["error_message"])
        )
    assert_redacted(sink.text)


def test_bodies_are_off_by_default_and_truncated_when_on(server: FaultServer, sink: Sink) -> None:
    """No body unless log_bodies; then at most body_limit bytes; a stream is never read."""
    quiet, loud = Sink(), Sink()
    for log in (rs.Log(quiet.logger), rs.Log(loud.logger, log_bodies=True, body_limit=10)):
        with httpx.Client(transport=rs.LogTransport(httpx.HTTPTransport(), log)) as client:
            client.post(f"{server.url}/b", content=b"0123456789abcdefghij")

            def chunks() -> Iterator[bytes]:
                yield b"streamed-"
                yield b"body"

            client.post(f"{server.url}/s", content=chunks())
    assert all("request_body" not in e for e in quiet.events)
    fixed, streamed = loud.events
    assert fixed["request_body"] == "0123456789...[10 more bytes]"
    assert "request_body" not in streamed
    assert "response_body" not in fixed  # the response is a stream at this layer: not read
    assert [r.body for r in server.requests] == [b"0123456789abcdefghij", b"streamed-body"] * 2


def test_form_bodies_are_redacted_and_broken_json_is_not_shown(sink: Sink) -> None:
    """A form body's secret fields are redacted; JSON that cannot be parsed is not shown."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=b'{"token": "resp-tok", "broken', headers={"content-type": "text/json"}
        )

    log = rs.Log(sink.logger, log_bodies=True)
    with httpx.Client(transport=rs.LogTransport(httpx.MockTransport(handler), log)) as client:
        client.post("http://127.0.0.1:9/f", data={"user": "ada", "client_secret": "form-secret"})
        client.post(
            "http://127.0.0.1:9/j",
            content=b'{"password": "json-secret", "broken',
            headers={"content-type": "application/json"},
        )
    form, broken = sink.events
    assert form["request_body"] == "user=ada&client_secret=[REDACTED]"
    assert broken["request_body"] == "[35 bytes of JSON not shown: it could not be redacted]"
    assert broken["response_body"] == "[29 bytes of JSON not shown: it could not be redacted]"
    assert "form-secret" not in sink.text
    assert "json-secret" not in sink.text
    assert "resp-tok" not in sink.text


# --------------------------------------------------------------------------- stdlib and cost


def test_unconfigured_application_sees_nothing(tmp_path: Any) -> None:
    """No logging configuration: successes, 503s and connection errors print nothing at all."""
    code = f"""
import httpx, structlog, resilience as rs
from resilience.testing import FakeClock, FaultServer, Respond
log = rs.Log()
retry = rs.Retry(attempts=2, clock=FakeClock())
transport = rs.LogTransport(rs.RetryTransport(rs.LogTransport(
    httpx.HTTPTransport(), log, scope="attempt"), retry), log)
with FaultServer() as server, httpx.Client(transport=transport) as client:
    server.script("/r", Respond(503), Respond(503), Respond(404))
    client.get(server.url + "/ok")
    client.get(server.url + "/r")
    client.get(server.url + "/r")
    try:
        client.get("http://127.0.0.1:{free_port()}/")
    except httpx.ConnectError:
        pass
    else:
        raise SystemExit("expected a connection error")
assert not structlog.is_configured()
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == ""
    assert done.stderr == ""


def test_stdlib_events_arrive_on_resilience_http(
    server: FaultServer, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """With caplog at INFO: http.attempt and http.request records, fields as attributes."""
    caplog.set_level(logging.INFO, logger="resilience.http")
    server.script("/r", Respond(503), Respond(200))
    client = driver.client(stack(rs.Log()))
    client.request("GET", f"{server.url}/r")
    records = [r for r in caplog.records if r.name == "resilience.http"]
    assert [(r.getMessage(), r.levelname) for r in records] == [
        ("http.attempt", "WARNING"),
        ("http.attempt", "INFO"),
        ("http.request", "INFO"),
    ]
    assert [getattr(r, "attempt", None) for r in records[:2]] == [1, 2]
    assert getattr(records[2], "attempts", None) == 2
    assert getattr(records[2], "status", None) == 200


def test_stdlib_level_above_info_logs_only_failures(
    server: FaultServer, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """At WARNING only the failed attempt is logged."""
    caplog.set_level(logging.WARNING, logger="resilience")
    server.script("/r", Respond(503), Respond(200))
    client = driver.client(stack(rs.Log()))
    client.request("GET", f"{server.url}/r")
    records = [r for r in caplog.records if r.name == "resilience.http"]
    assert [(r.getMessage(), getattr(r, "status", None)) for r in records] == [
        ("http.attempt", 503)
    ]


def boom(*args: object, **kwargs: object) -> str:
    """A redactor that must never run."""
    raise AssertionError("a field was computed for a filtered event")


def test_filtered_level_computes_nothing(
    server: FaultServer, driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the level off, redaction never runs (it would raise); with it on, it does."""
    monkeypatch.setattr(_log, "redact_url", boom)
    filtered = Sink(level=logging.WARNING)
    for log in (rs.Log(), rs.Log(filtered.logger)):  # stdlib at WARNING (pytest's default)
        client = driver.client(stack(log))
        assert client.request("GET", f"{server.url}/ok").status_code == 200
    assert filtered.events == []
    enabled = driver.client(stack(rs.Log(Sink().logger)))
    with pytest.raises(AssertionError, match="filtered event"):
        enabled.request("GET", f"{server.url}/ok")


def test_filtering_logger_methods_are_detected() -> None:
    """Log.sink: None for no-op levels and is_enabled_for() refusals; any other logger decides."""
    warning_only = rs.Log(Sink(level=logging.WARNING).logger)
    assert warning_only.sink(logging.INFO) is None
    assert warning_only.sink(logging.WARNING) is not None
    assert warning_only.active()
    assert not rs.Log(Sink(level=logging.CRITICAL).logger).active()

    stdlib = logging.getLogger("test_log.stdlib_bound")
    stdlib.setLevel(logging.ERROR)
    bound = rs.Log(structlog.stdlib.BoundLogger(stdlib, [], {}))
    assert bound.sink(logging.WARNING) is None
    assert bound.sink(logging.ERROR) is not None

    class Duck:
        """A logger with no level introspection: it filters for itself."""

        def debug(self, event: str, **fields: Any) -> None: ...
        def info(self, event: str, **fields: Any) -> None: ...
        def warning(self, event: str, **fields: Any) -> None: ...

    class Picky(Duck):
        def is_enabled_for(self, level: int) -> bool:
            return level >= logging.ERROR

    assert rs.Log(Duck()).sink(logging.DEBUG) is not None
    assert rs.Log(Picky()).sink(logging.WARNING) is None
    assert not rs.Log(Picky()).active()


def test_a_broken_logger_never_breaks_a_request(server: FaultServer, driver: Driver) -> None:
    """A logger that raises is ignored: the response still comes back."""

    class Broken:
        def __getattr__(self, name: str) -> Any:
            def method(event: str, **fields: Any) -> None:
                raise RuntimeError("logging backend down")

            return method

    client = driver.client(stack(rs.Log(Broken())))
    assert client.request("GET", f"{server.url}/ok").status_code == 200


def test_connection_error_is_logged_and_re_raised(driver: Driver, sink: Sink) -> None:
    """A refused connection: ConnectError as raised by httpx, logged once per attempt."""
    client = driver.client(stack(rs.Log(sink.logger), rs.Retry(attempts=2, clock=FakeClock())))
    with pytest.raises(httpx.ConnectError):
        client.request("GET", f"http://127.0.0.1:{free_port()}/x")
    assert [(e["event"], e["outcome"], e["error"]) for e in sink.events] == [
        ("http.attempt", "error", "ConnectError"),
        ("http.attempt", "error", "ConnectError"),
        ("http.request", "error", "ConnectError"),
    ]
    assert sink.events[-1]["attempts"] == 2


@pytest.mark.anyio
async def test_cancellation_is_logged_at_debug_and_re_raised(server: FaultServer) -> None:
    """A request cancelled while waiting: "cancelled" at debug, and the cancellation goes on."""
    sink = Sink()
    server.script("/slow", Respond(200, delay=5.0))
    async with httpx.AsyncClient(
        transport=stack(rs.Log(sink.logger))(httpx.AsyncHTTPTransport())
    ) as client:
        with anyio.move_on_after(0.3) as scope:
            await client.get(f"{server.url}/slow")
    assert scope.cancelled_caught
    assert [(e["event"], e["outcome"], e["level"], e["error"]) for e in sink.events] == [
        ("http.attempt", "cancelled", "debug", "CancelledError"),
        ("http.request", "cancelled", "debug", "CancelledError"),
    ]


def test_per_request_override(server: FaultServer, driver: Driver, sink: Sink) -> None:
    """extensions can turn logging off for one request, or send it to another policy."""
    other = Sink()
    client = driver.client(stack(rs.Log(sink.logger)))
    client.request("GET", f"{server.url}/a", extensions={"resilience": {"log": None}})
    assert sink.events == []
    client.request(
        "GET", f"{server.url}/a", extensions={"resilience": {"log": rs.Log(other.logger)}}
    )
    assert sink.events == []
    assert [e["event"] for e in other.events] == ["http.attempt", "http.request"]
    with pytest.raises(TypeError, match='extensions\\["resilience"\\]\\["log"\\]'):
        client.request("GET", f"{server.url}/a", extensions={"resilience": {"log": "loud"}})


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"level": "verbose"}, ValueError, "Log.level must be one of .*'verbose'"),
        ({"failure_level": 5}, ValueError, "Log.failure_level .* got 5"),
        ({"level": True}, ValueError, "Log.level .* got True"),
        ({"request_id_header": "X Request"}, ValueError, "Log.request_id_header .*'X Request'"),
        ({"request_id_header": ""}, ValueError, "Log.request_id_header"),
        ({"body_limit": -1}, ValueError, "Log.body_limit must be >= 0, got -1"),
        ({"body_limit": 10**12}, ValueError, "Log.body_limit must be <= .*"),
        ({"body_limit": 1.5}, TypeError, "Log.body_limit must be an int, got 1.5"),
        ({"send_request_id": "yes"}, TypeError, "Log.send_request_id must be bool, got 'yes'"),
        ({"log_headers": 1}, TypeError, "Log.log_headers must be bool, got 1"),
        ({"log_bodies": None}, TypeError, "Log.log_bodies must be bool, got None"),
        ({"redact": {"authorization"}}, TypeError, "Log.redact must be Redactions"),
        ({"logger": logging.getLogger("x")}, TypeError, "Log.logger must be a structlog-style"),
        ({"logger": object()}, TypeError, "Log.logger must have a callable"),
    ],
)
def test_bad_log_configuration(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Every bad value fails at construction, naming the field and the value."""
    with pytest.raises(error, match=message):
        rs.Log(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"headers": "authorization"}, TypeError, "Redactions.headers must be a collection"),
        ({"headers": {"bad name"}}, ValueError, "Redactions.headers holds 'bad name'"),
        ({"query_params": {1}}, ValueError, "Redactions.query_params holds 1"),
        ({"query_params": {""}}, ValueError, "Redactions.query_params holds ''"),
        ({"header_patterns": None}, TypeError, "Redactions.header_patterns must be"),
        ({"marker": ""}, ValueError, "Redactions.marker must be 1 to 100 printable"),
        ({"marker": "a\nb"}, ValueError, "Redactions.marker"),
        ({"marker": 7}, TypeError, "Redactions.marker must be a string, got 7"),
    ],
)
def test_bad_redactions(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """Bad names and markers fail at construction, naming the field and the value."""
    with pytest.raises(error, match=message):
        rs.Redactions(**kwargs)


def test_bad_transport_configuration() -> None:
    """LogTransport checks its transport, policy and scope."""
    inner = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(TypeError, match="needs an httpx transport"):
        rs.LogTransport(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"LogTransport.log must be a Log, got 'x'"):
        rs.LogTransport(inner, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"LogTransport.scope must be one of .* got 'both'"):
        rs.LogTransport(inner, rs.Log(), scope="both")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"use it with httpx\.AsyncClient"):
        rs.LogTransport(_AsyncOnly()).handle_request(httpx.Request("GET", "http://127.0.0.1:9/"))


class _AsyncOnly(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)


def test_policies_are_values() -> None:
    """Log and Redactions are frozen, comparable, and changed with replace()."""
    log = rs.Log()
    assert log == rs.Log()
    assert log.replace(level="DEBUG").level == "debug"
    assert log.replace(level=logging.ERROR).level == "error"
    with pytest.raises(AttributeError):
        log.level = "debug"  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"Log\.level"):
        log.replace(level="loud")
    mine = rs.Redactions(headers={"X-Mine"}, query_params=frozenset(), header_patterns=set())
    both = rs.DEFAULT_REDACTIONS | mine
    assert both.is_secret_header("X-MINE")
    assert both.is_secret_header("Authorization")
    assert not mine.is_secret_header("Authorization")
    assert rs.DEFAULT_REDACTIONS.is_secret_header("X-Hub-Signature-256")
    assert rs.DEFAULT_REDACTIONS.is_secret_header("X-Upstream-Session-Id")
    assert not rs.DEFAULT_REDACTIONS.is_secret_header("Content-Type")
    assert "X-Mine" not in mine.headers
    assert "x-mine" in mine.headers


# --------------------------------------------------------------------------- properties

SECRET_TEXT = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&=#%+[]"),
    min_size=8,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(secret=SECRET_TEXT, noise=st.text(max_size=50))
def test_messages_never_keep_a_known_secret(secret: str, noise: str) -> None:
    """Whatever surrounds it, a secret the request carried never survives in a message."""
    redact = rs.DEFAULT_REDACTIONS
    message = f"{noise} failed https://h.test/p?token={secret} with {secret}{noise}"
    assert secret not in redact.message(message, [secret])


@settings(max_examples=300, deadline=None)
@given(message=st.text(max_size=20_000), secrets=st.lists(st.text(max_size=30), max_size=5))
def test_any_message_is_bounded_and_never_crashes(message: str, secrets: list[str]) -> None:
    """Any text (broken URLs, brackets, huge) comes back bounded, whatever the secrets."""
    shown = rs.DEFAULT_REDACTIONS.message(message, secrets)
    assert len(shown) <= 1003


@settings(max_examples=200, deadline=None)
@given(
    secret=st.from_regex(r"s3cr3t-[A-Za-z0-9_.~ \\\"-]{1,30}", fullmatch=True),
    key=st.sampled_from(["password", "Client_Secret", "access_token", "X-Api-Key", "sessionId"]),
    depth=st.integers(min_value=0, max_value=5),
    others=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(), max_size=3),
)
def test_json_secret_fields_never_survive(
    secret: str, key: str, depth: int, others: dict[str, int]
) -> None:
    """A secret field at any depth of a JSON body is replaced; the other fields are kept."""
    document: Any = {key: secret, **others}
    for _ in range(depth):
        document = {"data": [document]}
    shown = rs.DEFAULT_REDACTIONS.body(json.dumps(document).encode(), "application/json", 10_000)
    assert json.dumps(secret)[1:-1] not in shown
    assert "[REDACTED]" in shown


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(["authorization", "cookie", "x-api-key", "accept", "x-trace"]),
            SECRET_TEXT,
        ),
        max_size=8,
    )
)
def test_secret_headers_never_survive(headers: list[tuple[str, str]]) -> None:
    """Secret values become the marker, others are kept, repeated names become lists."""
    shown = rs.DEFAULT_REDACTIONS.header_items(headers)
    expected: dict[str, list[str]] = {}
    for name, value in headers:
        secret = name in ("authorization", "cookie", "x-api-key")
        expected.setdefault(name, []).append("[REDACTED]" if secret else value)
    assert {k: v if isinstance(v, list) else [v] for k, v in shown.items()} == expected
