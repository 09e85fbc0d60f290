"""HttpServiceInvoker against a real local HTTP server, and its circuit breaker."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from billing_common.adapters.circuit_breaker import CircuitBreaker
from billing_common.adapters.http_invoker import HttpServiceInvoker
from billing_common.ports import PeerUnavailable, ServiceInvoker
from billing_common.tracing import bind, new_traceparent, parse_trace_id


class Peer:
    """A tiny peer service that counts the hits on each path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.flaky_failures = 2
        self.healthy = False
        self.app = FastAPI()
        app = self.app

        @app.middleware("http")
        async def count(request: Request, call_next):  # type: ignore[no-untyped-def]
            self.hits[f"{request.method} {request.url.path}"] += 1
            return await call_next(request)

        @app.get("/items/{item_id}")
        async def item(item_id: str) -> dict[str, str]:
            return {"id": item_id, "amount": "12.30"}

        @app.post("/items")
        async def create(request: Request) -> JSONResponse:
            return JSONResponse(await request.json(), status_code=201)

        @app.get("/missing")
        async def missing() -> JSONResponse:
            return JSONResponse(
                {"type": "about:blank", "title": "Not found", "status": 404},
                status_code=404,
                media_type="application/problem+json",
            )

        @app.api_route("/broken", methods=["GET", "POST", "PUT"])
        async def broken() -> JSONResponse:
            return JSONResponse({"detail": "database down"}, status_code=500)

        @app.get("/flaky")
        async def flaky() -> JSONResponse:
            if self.flaky_failures > 0:
                self.flaky_failures -= 1
                return JSONResponse({}, status_code=503)
            return JSONResponse({"ok": True})

        @app.get("/slow")
        async def slow() -> dict[str, bool]:
            await asyncio.sleep(0.6)
            return {"ok": True}

        @app.post("/calc")
        async def calc() -> JSONResponse:
            return JSONResponse({}, status_code=200 if self.healthy else 503)

        @app.post("/unprocessable")
        async def unprocessable() -> JSONResponse:
            return JSONResponse({}, status_code=422)

        @app.get("/gzipped")
        async def gzipped() -> Response:
            # Our peers do not compress today; one that starts to must still be understood.
            return Response(
                gzip.compress(b'{"amount": "12.30"}'),
                media_type="application/json",
                headers={"content-encoding": "gzip"},
            )

        @app.get("/headers")
        async def headers(request: Request) -> dict[str, str]:
            return dict(request.headers)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    """The peer served by uvicorn on a free port of 127.0.0.1, for the duration of a test."""
    peer = Peer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(peer.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    yield peer, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    sock.close()


def invoker_for(url: str, **options: object) -> HttpServiceInvoker:
    defaults: dict[str, object] = {
        "timeout_seconds": 0.5,
        "retries": 2,
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.02,
        "breaker_failure_threshold": 100,
    }
    return HttpServiceInvoker({"tax": url}, **{**defaults, **options})  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_answers_and_client_errors_come_back_as_responses(peer) -> None:
    _, url = peer
    invoker = invoker_for(url)
    assert isinstance(invoker, ServiceInvoker)
    try:
        ok = await invoker.invoke("tax", "GET", "/items/a1")
        created = await invoker.invoke("tax", "POST", "items", json={"amount": "1.05"})
        missing = await invoker.invoke("tax", "GET", "/missing")
    finally:
        await invoker.close()
    assert (ok.status_code, ok.body) == (200, {"id": "a1", "amount": "12.30"})
    assert (created.status_code, created.body) == (201, {"amount": "1.05"})
    assert missing.status_code == 404
    assert not missing.ok
    assert missing.body["title"] == "Not found"
    assert missing.headers["content-type"] == "application/problem+json"


async def test_server_errors_raise_and_only_idempotent_calls_are_retried(peer) -> None:
    server, url = peer
    invoker = invoker_for(url, retries=2)
    try:
        for method, idempotent in [("POST", False), ("GET", False), ("PUT", False)]:
            with pytest.raises(PeerUnavailable) as raised:
                await invoker.invoke("tax", method, "/broken", idempotent=idempotent)
            assert raised.value.app_id == "tax"
            assert raised.value.reason == "answered 500"
        with pytest.raises(PeerUnavailable):
            await invoker.invoke("tax", "POST", "/broken", json={}, idempotent=True)
    finally:
        await invoker.close()
    # POST once; GET and PUT (idempotent by method) 1 + 2 retries; then POST flagged
    # idempotent (e.g. carrying an Idempotency-Key) 3 more.
    assert server.hits == Counter({"POST /broken": 1 + 3, "GET /broken": 3, "PUT /broken": 3})


async def test_a_retry_can_recover_an_idempotent_call(peer) -> None:
    server, url = peer
    invoker = invoker_for(url, retries=2)
    try:
        response = await invoker.invoke("tax", "GET", "/flaky")
    finally:
        await invoker.close()
    assert response.body == {"ok": True}
    assert server.hits["GET /flaky"] == 3


async def test_timeouts_raise_peer_unavailable(peer) -> None:
    server, url = peer
    invoker = invoker_for(url, timeout_seconds=0.2, retries=1)
    started = time.monotonic()
    try:
        with pytest.raises(PeerUnavailable) as raised:
            await invoker.invoke("tax", "GET", "/slow")
    finally:
        await invoker.close()
    assert raised.value.reason.startswith("ReadTimeout")
    assert server.hits["GET /slow"] == 2
    assert time.monotonic() - started < 1.5


async def test_unreachable_or_unknown_peers_raise_peer_unavailable() -> None:
    invoker = invoker_for(f"http://127.0.0.1:{closed_port()}", retries=1)
    try:
        with pytest.raises(PeerUnavailable) as refused:
            await invoker.invoke("tax", "GET", "/items/a1")
        with pytest.raises(PeerUnavailable) as unknown:
            await invoker.invoke("nobody", "GET", "/")
    finally:
        await invoker.close()
    assert refused.value.reason.startswith("ConnectError")
    assert unknown.value.app_id == "nobody"
    assert unknown.value.reason == "no URL configured for this service"


async def test_trace_context_and_caller_headers_travel_with_the_call(peer) -> None:
    _, url = peer
    traceparent = new_traceparent()
    bind(traceparent, request_id="req-42")
    invoker = invoker_for(url)
    try:
        response = await invoker.invoke(
            "tax", "GET", "/headers", headers={"Authorization": "Bearer t0k"}
        )
    finally:
        await invoker.close()
    seen = response.body
    assert parse_trace_id(seen["traceparent"]) == parse_trace_id(traceparent)
    assert seen["traceparent"] != traceparent  # same trace, a new span for this hop
    assert seen["x-request-id"] == "req-42"
    assert seen["authorization"] == "Bearer t0k"


async def test_a_compressed_answer_is_decompressed(peer) -> None:
    _, url = peer
    invoker = invoker_for(url)
    try:
        response = await invoker.invoke("tax", "GET", "/gzipped")
    finally:
        await invoker.close()
    assert (response.status_code, response.body) == (200, {"amount": "12.30"})


async def test_back_off_grows_exponentially_with_jitter() -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    invoker = HttpServiceInvoker(
        {"tax": f"http://127.0.0.1:{closed_port()}"},  # always refused
        retries=4,
        backoff_seconds=0.1,
        max_backoff_seconds=0.3,
        sleep=record,
    )
    with pytest.raises(PeerUnavailable):
        await invoker.invoke("tax", "GET", "/x")
    await invoker.close()
    ceilings = [0.1, 0.2, 0.3, 0.3]
    assert len(delays) == len(ceilings)
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_breaker_opens_after_consecutive_failures_and_half_opens_later(peer) -> None:
    server, url = peer
    clock = FakeClock()
    invoker = HttpServiceInvoker(
        {"tax": url, "discount": url},
        retries=0,
        breaker_failure_threshold=3,
        breaker_reset_seconds=10,
        clock=clock,
    )

    def hits() -> list[str]:
        return ["/calc"] * server.hits["POST /calc"]

    for _ in range(3):
        with pytest.raises(PeerUnavailable, match="answered 503"):
            await invoker.invoke("tax", "POST", "/calc")
    assert invoker.breaker("tax").state == "open"

    with pytest.raises(PeerUnavailable) as refused:
        await invoker.invoke("tax", "POST", "/calc")
    assert refused.value.reason == "circuit open"
    assert len(hits()) == 3  # refused without touching the peer
    assert invoker.breaker("discount").state == "closed"  # one breaker per peer

    clock.now += 10
    assert invoker.breaker("tax").state == "half-open"
    with pytest.raises(PeerUnavailable, match="answered 503"):  # the trial fails: open again
        await invoker.invoke("tax", "POST", "/calc")
    assert invoker.breaker("tax").state == "open"
    clock.now += 9
    with pytest.raises(PeerUnavailable, match="circuit open"):
        await invoker.invoke("tax", "POST", "/calc")

    clock.now += 1
    server.healthy = True
    assert (await invoker.invoke("tax", "POST", "/calc")).status_code == 200
    assert invoker.breaker("tax").state == "closed"
    assert len(hits()) == 5
    await invoker.close()


async def test_client_errors_do_not_trip_the_breaker(peer) -> None:
    _, url = peer
    invoker = HttpServiceInvoker({"tax": url}, breaker_failure_threshold=1)
    for _ in range(3):
        assert (await invoker.invoke("tax", "POST", "/unprocessable")).status_code == 422
    assert invoker.breaker("tax").state == "closed"
    await invoker.close()


async def test_retries_stop_as_soon_as_the_breaker_opens(peer) -> None:
    server, url = peer
    invoker = HttpServiceInvoker(
        {"tax": url}, retries=5, breaker_failure_threshold=2, backoff_seconds=0
    )
    with pytest.raises(PeerUnavailable, match="circuit open"):
        await invoker.invoke("tax", "GET", "/broken")  # always 500
    assert server.hits["GET /broken"] == 2
    await invoker.close()


def test_half_open_lets_exactly_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=5, clock=clock)
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_success()  # consecutive failures only
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()

    clock.now += 5
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # everyone else waits for its outcome
    breaker.release()  # the trial was cancelled: the next caller may probe
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, reset_seconds=1)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=1, reset_seconds=-1)
