"""CacheTransport against the real loopback server, with a sync and an async client."""

from __future__ import annotations

import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

import resilience as rs
from resilience.testing import FakeClock, FaultServer, RecordedRequest, Respond

from .conftest import Driver

CACHE = "resilience.cache"


def cached(policy: rs.Cache) -> Any:
    return lambda inner: rs.CacheTransport(inner, policy)


def served(response: httpx.Response) -> str | None:
    value = response.extensions.get(CACHE)
    return None if value is None else str(value)


def test_max_age_hit_sends_one_request_for_ten_gets(server: FaultServer, driver: Driver) -> None:
    server.script("/a", then=Respond(200, b"payload", {"cache-control": "max-age=60"}))
    client = driver.client(cached(rs.Cache()))
    responses = [client.request("GET", f"{server.url}/a") for _ in range(10)]
    assert server.count("/a") == 1
    assert [r.content for r in responses] == [b"payload"] * 10
    assert [served(r) for r in responses] == ["miss"] + ["hit"] * 9
    assert all("age" in r.headers for r in responses[1:])
    assert int(responses[-1].headers["age"]) <= 5


def test_age_grows_with_the_clock(server: FaultServer, driver: Driver) -> None:
    clock = FakeClock()
    server.script("/a", then=Respond(200, b"x", {"cache-control": "max-age=600"}))
    client = driver.client(cached(rs.Cache(clock=clock)))
    client.request("GET", f"{server.url}/a")
    clock.advance(42)
    response = client.request("GET", f"{server.url}/a")
    assert served(response) == "hit"
    assert response.headers["age"] == "42"
    assert server.count("/a") == 1


def etag_route(body: bytes, etag: str, extra: dict[str, str] | None = None) -> Any:
    """A handler answering 304 to a matching If-None-Match, else 200 with the ETag."""

    def handle(request: RecordedRequest) -> Respond:
        headers = {"etag": etag, "cache-control": "no-cache", **(extra or {})}
        if request.header("if-none-match") == etag:
            return Respond(304, b"", headers)
        return Respond(200, body, headers)

    return handle


def test_etag_revalidation_serves_the_stored_body_on_304(
    server: FaultServer, driver: Driver
) -> None:
    server.route("/e", etag_route(b"stored body", '"v1"', {"x-version": "1"}))
    client = driver.client(cached(rs.Cache()))
    first = client.request("GET", f"{server.url}/e")
    second = client.request("GET", f"{server.url}/e")
    assert served(first) == "miss"
    assert served(second) == "revalidated"
    assert second.status_code == 200
    assert second.content == b"stored body"
    assert second.headers["x-version"] == "1"
    sent = server.requests_for("/e")
    assert len(sent) == 2
    assert sent[0].header("if-none-match") is None
    assert sent[1].header("if-none-match") == '"v1"'


def test_a_304_freshens_the_stored_headers(server: FaultServer, driver: Driver) -> None:
    clock = FakeClock()
    versions = iter(["1", "2"])

    def handle(request: RecordedRequest) -> Respond:
        headers = {"etag": '"v"', "cache-control": "max-age=10", "x-seen": next(versions, "3")}
        if request.header("if-none-match") == '"v"':
            return Respond(304, b"", headers)
        return Respond(200, b"body", headers)

    server.route("/f", handle)
    client = driver.client(cached(rs.Cache(clock=clock)))
    client.request("GET", f"{server.url}/f")
    clock.advance(11)
    revalidated = client.request("GET", f"{server.url}/f")
    assert served(revalidated) == "revalidated"
    assert revalidated.headers["x-seen"] == "2"  # section 4.3.4: headers from the 304
    assert revalidated.content == b"body"
    hit = client.request("GET", f"{server.url}/f")  # fresh again for 10 s
    assert served(hit) == "hit"
    assert hit.headers["x-seen"] == "2"
    assert server.count("/f") == 2


def test_a_200_on_revalidation_replaces_the_entry(server: FaultServer, driver: Driver) -> None:
    server.script(
        "/r",
        Respond(200, b"old", {"etag": '"1"', "cache-control": "no-cache"}),
        Respond(200, b"new", {"etag": '"2"', "cache-control": "max-age=60"}),
    )
    client = driver.client(cached(rs.Cache()))
    assert client.request("GET", f"{server.url}/r").content == b"old"
    replaced = client.request("GET", f"{server.url}/r")
    assert (replaced.content, served(replaced)) == (b"new", "miss")
    hit = client.request("GET", f"{server.url}/r")
    assert (hit.content, served(hit)) == (b"new", "hit")
    assert server.count("/r") == 2


def test_last_modified_heuristic(server: FaultServer, driver: Driver) -> None:
    clock = FakeClock()
    ten_days_ago = formatdate(clock.time() - 10 * 86_400, usegmt=True)
    server.route(
        "/lm",
        lambda request: Respond(
            304 if request.header("if-modified-since") == ten_days_ago else 200,
            b"doc",
            {"last-modified": ten_days_ago, "date": formatdate(clock.time(), usegmt=True)},
        ),
    )
    client = driver.client(cached(rs.Cache(clock=clock)))
    client.request("GET", f"{server.url}/lm")
    clock.advance(3600)  # 10% of 10 days is a day: still fresh an hour later
    assert served(client.request("GET", f"{server.url}/lm")) == "hit"
    assert server.count("/lm") == 1
    clock.advance(2 * 86_400)  # past the heuristic lifetime: revalidated
    late = client.request("GET", f"{server.url}/lm")
    assert (served(late), late.content) == ("revalidated", b"doc")
    assert server.requests_for("/lm")[-1].header("if-modified-since") == ten_days_ago


def test_vary_keeps_one_entry_per_language(server: FaultServer, driver: Driver) -> None:
    server.route(
        "/v",
        lambda request: Respond(
            200,
            f"hello in {request.header('accept-language')}".encode(),
            {"cache-control": "max-age=60", "vary": "Accept-Language"},
        ),
    )
    client = driver.client(cached(rs.Cache()))
    bodies = [
        client.request("GET", f"{server.url}/v", headers={"accept-language": lang}).content
        for lang in ("en", "fr", "en", "fr", "en")
    ]
    assert bodies == [
        b"hello in en",
        b"hello in fr",
        b"hello in en",
        b"hello in fr",
        b"hello in en",
    ]
    assert server.count("/v") == 2


def test_vary_star_is_never_served(server: FaultServer, driver: Driver) -> None:
    server.script("/s", then=Respond(200, b"x", {"cache-control": "max-age=60", "vary": "*"}))
    client = driver.client(cached(rs.Cache()))
    for _ in range(3):
        client.request("GET", f"{server.url}/s")
    assert server.count("/s") == 3


@pytest.mark.parametrize("where", ["response", "request"])
def test_no_store_is_never_stored(server: FaultServer, driver: Driver, where: str) -> None:
    directive = "no-store" if where == "response" else "max-age=60"
    server.script("/n", then=Respond(200, b"x", {"cache-control": directive}))
    client = driver.client(cached(rs.Cache()))
    headers = {"cache-control": "no-store"} if where == "request" else {}
    for _ in range(3):
        response = client.request("GET", f"{server.url}/n", headers=headers)
        assert served(response) == "miss"
    assert server.count("/n") == 3


def test_post_invalidates_the_stored_get(server: FaultServer, driver: Driver) -> None:
    server.script("/item", then=Respond(200, b"v", {"cache-control": "max-age=600"}), method="GET")
    server.script(
        "/item",
        then=Respond(201, b"", {"location": "/other"}),
        method="POST",
    )
    server.script("/other", then=Respond(200, b"o", {"cache-control": "max-age=600"}))
    client = driver.client(cached(rs.Cache()))
    client.request("GET", f"{server.url}/item")
    client.request("GET", f"{server.url}/other")
    assert served(client.request("GET", f"{server.url}/item")) == "hit"
    client.request("POST", f"{server.url}/item", content=b"change")
    assert served(client.request("GET", f"{server.url}/item")) == "miss"
    assert served(client.request("GET", f"{server.url}/other")) == "miss"  # same-origin Location
    assert server.count("/item", method="GET") == 2
    assert server.count("/item", method="POST") == 1


def test_a_failed_unsafe_request_invalidates_nothing(server: FaultServer, driver: Driver) -> None:
    server.script("/k", then=Respond(200, b"v", {"cache-control": "max-age=600"}), method="GET")
    server.script("/k", then=Respond(500), method="DELETE")
    client = driver.client(cached(rs.Cache()))
    client.request("GET", f"{server.url}/k")
    client.request("DELETE", f"{server.url}/k")
    assert served(client.request("GET", f"{server.url}/k")) == "hit"


def test_only_if_cached(server: FaultServer, driver: Driver) -> None:
    server.script("/o", then=Respond(200, b"x", {"cache-control": "max-age=60"}))
    client = driver.client(cached(rs.Cache()))
    only = {"cache-control": "only-if-cached"}
    missing = client.request("GET", f"{server.url}/o", headers=only)
    assert missing.status_code == 504
    assert server.count("/o") == 0
    client.request("GET", f"{server.url}/o")
    present = client.request("GET", f"{server.url}/o", headers=only)
    assert (present.status_code, present.content, served(present)) == (200, b"x", "hit")
    assert server.count("/o") == 1


def test_stale_if_error_on_503(server: FaultServer, driver: Driver) -> None:
    clock = FakeClock()
    server.script(
        "/sie",
        Respond(200, b"good", {"cache-control": "max-age=1, stale-if-error=60"}),
        then=Respond(503, b"down"),
    )
    client = driver.client(cached(rs.Cache(clock=clock)))
    client.request("GET", f"{server.url}/sie")
    clock.advance(5)
    stale = client.request("GET", f"{server.url}/sie")
    assert (stale.status_code, stale.content, served(stale)) == (200, b"good", "stale")
    assert server.count("/sie") == 2
    clock.advance(120)  # beyond stale-if-error: the error comes through
    failed = client.request("GET", f"{server.url}/sie")
    assert (failed.status_code, failed.content) == (503, b"down")


def test_stale_if_error_when_the_server_is_down(server: FaultServer, driver: Driver) -> None:
    clock = FakeClock()
    server.script("/d", then=Respond(200, b"kept", {"cache-control": "max-age=1"}))
    client = driver.client(cached(rs.Cache(clock=clock, stale_if_error=300)))
    client.request("GET", f"{server.url}/d")
    server.stop()
    clock.advance(60)
    stale = client.request("GET", f"{server.url}/d")
    assert (stale.content, served(stale)) == (b"kept", "stale")
    with pytest.raises(httpx.ConnectError):
        client.request("GET", f"{server.url}/never-cached")


def test_no_stale_if_error_without_permission(server: FaultServer, driver: Driver) -> None:
    clock = FakeClock()
    server.script(
        "/p", Respond(200, b"old", {"cache-control": "max-age=1"}), then=Respond(502, b"bad")
    )
    client = driver.client(cached(rs.Cache(clock=clock)))
    client.request("GET", f"{server.url}/p")
    clock.advance(5)
    assert client.request("GET", f"{server.url}/p").status_code == 502


def test_stale_if_error_when_the_circuit_is_open(server: FaultServer, driver: Driver) -> None:
    clock = FakeClock()
    server.script(
        "/c",
        Respond(200, b"cached", {"cache-control": "max-age=1, stale-if-error=600"}),
        then=Respond(503),
    )
    breaker = rs.CircuitBreaker(fail_max=1, reset_timeout=60, clock=clock)
    policy = rs.Cache(clock=clock)
    client = driver.client(
        lambda inner: rs.CacheTransport(rs.CircuitBreakerTransport(inner, breaker), policy)
    )
    client.request("GET", f"{server.url}/c")
    clock.advance(5)
    first = client.request("GET", f"{server.url}/c")  # 503: opens the breaker, stale served
    assert (first.content, served(first)) == (b"cached", "stale")
    assert breaker.state(server.url.rstrip("/")) == "open"
    second = client.request("GET", f"{server.url}/c")  # CircuitOpenError: stale served
    assert (second.content, served(second)) == (b"cached", "stale")
    assert server.count("/c") == 2


def test_stale_while_revalidate_refreshes_once_in_the_background(
    server: FaultServer, driver: Driver
) -> None:
    clock = FakeClock()
    server.script(
        "/swr",
        Respond(200, b"v1", {"cache-control": "max-age=1, stale-while-revalidate=60"}),
        then=Respond(200, b"v2", {"cache-control": "max-age=600"}, delay=0.3),
    )
    client = driver.client(cached(rs.Cache(clock=clock)))
    client.request("GET", f"{server.url}/swr")
    clock.advance(5)
    started = time.monotonic()
    stale = [client.request("GET", f"{server.url}/swr") for _ in range(5)]
    assert time.monotonic() - started < 0.3  # served at once, not after the 0.3 s refresh
    assert [(r.content, served(r)) for r in stale] == [(b"v1", "stale")] * 5
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = client.request("GET", f"{server.url}/swr")
        if fresh.content == b"v2":
            break
        time.sleep(0.05)
    assert (fresh.content, served(fresh)) == (b"v2", "hit")
    assert server.count("/swr") == 2  # exactly one background refresh


def test_per_request_cache_false_bypasses(server: FaultServer, driver: Driver) -> None:
    server.script("/b", then=Respond(200, b"x", {"cache-control": "max-age=60"}))
    client = driver.client(cached(rs.Cache()))
    client.request("GET", f"{server.url}/b")
    off = {"resilience": {"cache": False}}
    bypassed = client.request("GET", f"{server.url}/b", extensions=off)
    assert served(bypassed) is None
    assert server.count("/b") == 2
    assert served(client.request("GET", f"{server.url}/b")) == "hit"


def test_users_never_share_entries(server: FaultServer, driver: Driver) -> None:
    server.route(
        "/me",
        lambda request: Respond(
            200,
            (request.header("authorization") or "anonymous").encode(),
            {"cache-control": "private, max-age=60", "set-cookie": "session=s3cr3t"},
        ),
    )
    client = driver.client(cached(rs.Cache()))
    # an explicit Cookie header, so the client's cookie jar (which learns the Set-Cookie and
    # would otherwise change the credentials of later requests) keeps out of the way
    alice = {"authorization": "Bearer alice", "cookie": "session=s3cr3t"}
    bob = {"authorization": "Bearer bob", "cookie": "session=s3cr3t"}
    assert client.request("GET", f"{server.url}/me", headers=alice).content == b"Bearer alice"
    assert client.request("GET", f"{server.url}/me", headers=bob).content == b"Bearer bob"
    again = client.request("GET", f"{server.url}/me", headers=alice)
    assert (again.content, served(again)) == (b"Bearer alice", "hit")
    assert "set-cookie" not in again.headers  # never replayed from the cache
    assert client.request("GET", f"{server.url}/me").content == b"anonymous"
    assert server.count("/me") == 3


def test_an_aborted_read_stores_nothing(server: FaultServer, driver: Driver) -> None:
    body = b"z" * 300_000
    server.script("/big", then=Respond(200, body, {"cache-control": "max-age=60"}))
    client = driver.client(cached(rs.Cache()))

    if driver.mode == "sync":
        assert isinstance(client.httpx, httpx.Client)
        with client.httpx.stream("GET", f"{server.url}/big") as response:
            next(response.iter_raw())
    else:
        aclient = client.httpx
        assert isinstance(aclient, httpx.AsyncClient)

        async def partial() -> None:
            async with aclient.stream("GET", f"{server.url}/big") as response:
                async for _ in response.aiter_raw():
                    break

        driver.run(partial)
    full = client.request("GET", f"{server.url}/big")
    assert (served(full), full.content) == ("miss", body)
    assert served(client.request("GET", f"{server.url}/big")) == "hit"
    assert server.count("/big") == 2


def test_a_large_body_is_served_while_it_is_stored(
    server: FaultServer, driver: Driver, tmp_path: Path
) -> None:
    """100 MB: the caller gets the first half while the server still holds the second."""
    size = 100 * 2**20
    body = bytes(range(256)) * (size // 256)
    server.script("/huge", then=Respond(200, body, {"cache-control": "max-age=60"}, body_delay=1.0))
    storage = rs.FileCacheStorage(tmp_path / "cache", max_body_bytes=2 * size)
    client = driver.client(cached(rs.Cache(storage=storage)))
    url = f"{server.url}/huge"

    def consume_sync() -> tuple[float, int]:
        assert isinstance(client.httpx, httpx.Client)
        first, total = 0.0, 0
        started = time.monotonic()
        with client.httpx.stream("GET", url) as response:
            for chunk in response.iter_raw():
                if not total:
                    first = time.monotonic() - started
                total += len(chunk)
        return first, total

    async def consume_async() -> tuple[float, int]:
        aclient = client.httpx
        assert isinstance(aclient, httpx.AsyncClient)
        first, total = 0.0, 0
        started = time.monotonic()
        async with aclient.stream("GET", url) as response:
            async for chunk in response.aiter_raw():
                if not total:
                    first = time.monotonic() - started
                total += len(chunk)
        return first, total

    first_byte, total = consume_sync() if driver.mode == "sync" else driver.run(consume_async)
    assert total == size
    assert first_byte < 1.0  # the first half arrived before the server's pause ended
    hit = client.request("GET", url)
    assert served(hit) == "hit"
    assert len(hit.content) == size
    assert hit.content == body
    assert server.count("/huge") == 1


def test_bodies_over_max_body_bytes_pass_through_unstored(
    server: FaultServer, driver: Driver
) -> None:
    server.script("/l", then=Respond(200, b"q" * 5000, {"cache-control": "max-age=60"}))
    policy = rs.Cache(storage=rs.MemoryCacheStorage(max_body_bytes=1000))
    client = driver.client(cached(policy))
    assert client.request("GET", f"{server.url}/l").content == b"q" * 5000
    assert client.request("GET", f"{server.url}/l").content == b"q" * 5000
    assert server.count("/l") == 2


def test_post_is_cached_only_when_opted_in_by_body(server: FaultServer, driver: Driver) -> None:
    server.route(
        "/q",
        lambda request: Respond(200, b"answer to " + request.body, {"cache-control": "max-age=60"}),
    )
    default = driver.client(cached(rs.Cache()))
    default.request("POST", f"{server.url}/q", content=b"a")
    default.request("POST", f"{server.url}/q", content=b"a")
    assert server.count("/q") == 2
    opted = driver.client(cached(rs.Cache(methods={"GET", "HEAD", "POST"})))
    assert opted.request("POST", f"{server.url}/q", content=b"a").content == b"answer to a"
    hit = opted.request("POST", f"{server.url}/q", content=b"a")
    assert (hit.content, served(hit)) == (b"answer to a", "hit")
    other = opted.request("POST", f"{server.url}/q", content=b"b")
    assert (other.content, served(other)) == (b"answer to b", "miss")
    assert server.count("/q") == 4


def test_caller_validators_bypass_the_cache(server: FaultServer, driver: Driver) -> None:
    server.route("/cv", etag_route(b"body", '"e"'))
    client = driver.client(cached(rs.Cache()))
    client.request("GET", f"{server.url}/cv")
    mine = client.request("GET", f"{server.url}/cv", headers={"if-none-match": '"e"'})
    assert mine.status_code == 304  # the caller's own conditional request, answered as is
    assert served(mine) is None


def test_one_policy_serves_sync_and_async_clients(server: FaultServer) -> None:
    import anyio

    server.script("/shared", then=Respond(200, b"x", {"cache-control": "max-age=60"}))
    policy = rs.Cache()
    with httpx.Client(transport=rs.CacheTransport(httpx.HTTPTransport(), policy)) as client:
        client.get(f"{server.url}/shared")

    async def main() -> str | None:
        transport = rs.CacheTransport(httpx.AsyncHTTPTransport(), policy)
        async with httpx.AsyncClient(transport=transport) as aclient:
            return served(await aclient.get(f"{server.url}/shared"))

    assert anyio.run(main) == "hit"
    assert server.count("/shared") == 1


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Cache\.methods"):
        rs.Cache(methods={"PUT"})
    with pytest.raises(ValueError, match=r"Cache\.stale_if_error"):
        rs.Cache(stale_if_error=-1)
    with pytest.raises(ValueError, match=r"Cache\.heuristic_fraction"):
        rs.Cache(heuristic_fraction=2)
    with pytest.raises(TypeError, match=r"Cache\.storage"):
        rs.Cache(storage="memory://")
    with pytest.raises(TypeError, match=r"CacheTransport\.cache"):
        rs.CacheTransport(httpx.HTTPTransport(), rs.Retry())  # type: ignore[arg-type]
    transport = rs.CacheTransport(httpx.MockTransport(lambda r: httpx.Response(200)), rs.Cache())
    bad = httpx.Request("GET", "http://127.0.0.1/", extensions={"resilience": {"cache": 1}})
    with pytest.raises(TypeError, match=r'extensions\["resilience"\]\["cache"\]'):
        transport.handle_request(bad)


def test_concurrent_misses_on_one_key_leave_a_whole_entry(server: FaultServer) -> None:
    """Ten threads miss at once; whichever commit wins, the entry's headers match its body."""
    import itertools
    import threading

    counter = itertools.count()

    def handle(request: RecordedRequest) -> Respond:
        n = next(counter)
        return Respond(
            200, f"body {n} ".encode() * 5000, {"cache-control": "max-age=60", "x-n": str(n)}
        )

    server.route("/race", handle)
    policy = rs.Cache()
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []
    statuses: list[str | None] = []

    def miss() -> None:
        try:
            with httpx.Client(transport=rs.CacheTransport(httpx.HTTPTransport(), policy)) as c:
                barrier.wait()
                response = c.get(f"{server.url}/race")
                assert response.content == f"body {response.headers['x-n']} ".encode() * 5000
                statuses.append(served(response))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=miss) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with httpx.Client(transport=rs.CacheTransport(httpx.HTTPTransport(), policy)) as client:
        hit = client.get(f"{server.url}/race")
    assert served(hit) == "hit"
    assert hit.content == f"body {hit.headers['x-n']} ".encode() * 5000
    # a thread scheduled late may find an entry already stored: then it did not reach the origin
    assert len(statuses) == 10
    assert server.count("/race") == statuses.count("miss") >= 1


def test_useless_responses_are_not_stored(server: FaultServer, driver: Driver) -> None:
    """No freshness, no validator, no stale permission: storing it could never pay off."""
    server.script("/plain", then=Respond(200, b"x"))
    server.script("/tagged", then=Respond(200, b"x", {"etag": '"1"'}))
    storage = rs.MemoryCacheStorage()
    client = driver.client(cached(rs.Cache(storage=storage)))
    client.request("GET", f"{server.url}/plain")
    assert len(storage) == 0
    client.request("GET", f"{server.url}/tagged")  # a validator: worth revalidating later
    assert len(storage) == 1
    keeper = driver.client(cached(rs.Cache(storage=storage, stale_if_error=60)))
    keeper.request("GET", f"{server.url}/plain")  # may be served stale on error: kept
    assert len(storage) == 2
