"""The dapr runtime's adapters against the Dapr wire contract, with no sidecar binary.

A stand-in sidecar plays daprd's two faces: a real gRPC server built from the SDK's own service
stubs (`dapr_pb2_grpc.DaprServicer`: PublishEvent, SaveState/GetState/DeleteState with etags
and first-write concurrency, GetSecret) and a real HTTP server (uvicorn, in a thread, because
the SDK probes `/v1.0/healthz/outbound` with blocking urllib) that also forwards
`/v1.0/invoke/<app>/method/<path>` to a real FastAPI peer. The adapters find both through
DAPR_GRPC_PORT / DAPR_HTTP_PORT, as under daprd. The subscription side is tested by playing
the sidecar against the real payment service: GET /dapr/subscribe, then POST CloudEvents.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from dapr.proto.runtime.v1 import dapr_pb2_grpc, secret_pb2, state_pb2
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import empty_pb2
from sqlalchemy import func
from sqlmodel import select

from billing_common.adapters.dapr_bus import DaprEventBus
from billing_common.adapters.dapr_invoker import DaprServiceInvoker
from billing_common.adapters.dapr_secrets import DaprSecretStore
from billing_common.adapters.dapr_sidecar import DaprSidecar, DaprUnavailable
from billing_common.adapters.dapr_state import DaprStateStore
from billing_common.auth import ALL_SCOPES
from billing_common.db import create_engine
from billing_common.event_schemas import (
    CREDIT_NOTE_ISSUED,
    DISCOUNT_APPLIED,
    INVOICE_CREATED,
    INVOICE_FINALIZED,
    INVOICE_PAYMENT_REJECTED,
    INVOICE_STATUS_CHANGED,
    INVOICE_VOIDED,
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PAYMENT_REFUNDED,
    TAX_CALCULATED,
    InvoiceCreated,
    InvoiceFinalized,
)
from billing_common.events import CloudEvent, new_event
from billing_common.outbox import InboxRecord, OutboxMessage, OutboxRelay, utcnow
from billing_common.ports import EtagMismatch, PeerUnavailable
from billing_common.runtime import select_adapters
from billing_common.settings import ServiceSettings
from billing_common.tracing import bind

PUBSUB = "billing-pubsub"
STATE_STORE = "billing-state"
SECRET_STORE = "billing-secrets"
SIGNING_KEY = "dapr-test-signing-key-0123456789abcdef0123456789"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CE_HEADERS = {"content-type": "application/cloudevents+json"}


# -- the stand-in sidecar ----------------------------------------------------------------


@dataclass
class StoredState:
    value: bytes
    etag: str
    metadata: dict[str, str]


@dataclass
class FakeDapr(dapr_pb2_grpc.DaprServicer):  # type: ignore[misc]
    """daprd's gRPC API as far as the adapters use it, with PostgreSQL-like numeric etags."""

    published: list[Any] = field(default_factory=list)
    publish_error: grpc.StatusCode | None = None
    state: dict[tuple[str, str], StoredState] = field(default_factory=dict)
    saves: list[Any] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    secret_reads: int = 0
    _version: int = 0

    async def PublishEvent(self, request: Any, context: Any) -> empty_pb2.Empty:
        if self.publish_error is not None:
            await context.abort(self.publish_error, "pubsub billing-pubsub is not available")
        self.published.append(request)
        return empty_pb2.Empty()

    async def _check_etag(self, context: Any, slot: tuple[str, str], item: Any) -> None:
        if not item.HasField("etag"):
            return
        if not item.etag.value.isdigit():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid etag value")
        current = self.state.get(slot)
        if current is None or current.etag != item.etag.value:
            await context.abort(grpc.StatusCode.ABORTED, "possible etag mismatch")

    async def SaveState(self, request: Any, context: Any) -> empty_pb2.Empty:
        for item in request.states:
            slot = (request.store_name, item.key)
            await self._check_etag(context, slot, item)
            self.saves.append(item)
            self._version += 1
            self.state[slot] = StoredState(item.value, str(self._version), dict(item.metadata))
        return empty_pb2.Empty()

    async def GetState(self, request: Any, context: Any) -> state_pb2.GetStateResponse:
        stored = self.state.get((request.store_name, request.key))
        if stored is None:
            return state_pb2.GetStateResponse()
        return state_pb2.GetStateResponse(data=stored.value, etag=stored.etag)

    async def DeleteState(self, request: Any, context: Any) -> empty_pb2.Empty:
        slot = (request.store_name, request.key)
        await self._check_etag(context, slot, request)
        self.state.pop(slot, None)
        return empty_pb2.Empty()

    async def GetSecret(self, request: Any, context: Any) -> secret_pb2.GetSecretResponse:
        self.secret_reads += 1
        if request.store_name != SECRET_STORE:  # daprd's ErrSecretStoreNotFound
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"failed finding secret store with key {request.store_name}",
            )
        found = self.secrets.get(request.key)
        if found is None:
            # What daprd answers when the Kubernetes secret store cannot find the Secret.
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"failed getting secret with key {request.key} from secret store "
                f'{request.store_name}: secrets "{request.key}" not found',
            )
        return secret_pb2.GetSecretResponse(data=found)


@dataclass
class Forwarded:
    app_id: str
    method: str
    path: str
    headers: dict[str, str]


def sidecar_http_app(peers: dict[str, FastAPI], calls: list[Forwarded]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1.0/healthz/outbound")
    async def healthz() -> Response:
        return Response(status_code=204)

    @app.api_route(
        "/v1.0/invoke/{app_id}/method/{path:path}", methods=["GET", "POST", "PUT", "DELETE"]
    )
    async def invoke(app_id: str, path: str, request: Request) -> Response:
        calls.append(Forwarded(app_id, request.method, path, dict(request.headers)))
        peer = peers.get(app_id)
        if peer is None:  # daprd: ERR_DIRECT_INVOKE when the app id cannot be resolved
            return JSONResponse({"errorCode": "ERR_DIRECT_INVOKE"}, status_code=500)
        transport = httpx.ASGITransport(app=peer)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{app_id}") as http:
            answer = await http.request(
                request.method,
                f"/{path}",
                params=request.query_params,
                content=await request.body(),
                headers={"content-type": request.headers.get("content-type", "")},
            )
        return Response(
            answer.content, status_code=answer.status_code, media_type="application/json"
        )

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def peers() -> dict[str, FastAPI]:
    return {}


@pytest.fixture
def forwarded() -> list[Forwarded]:
    return []


@pytest.fixture
def sidecar_http(peers: dict[str, FastAPI], forwarded: list[Forwarded]) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            sidecar_http_app(peers, forwarded), log_level="warning", lifespan="off", ws="none"
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the stand-in sidecar did not start"
        time.sleep(0.01)
    yield int(sock.getsockname()[1])
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
async def fake_dapr(sidecar_http: int, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDapr]:
    servicer = FakeDapr(
        secrets={
            "jwt-signing-key": {"jwt-signing-key": SIGNING_KEY},
            "webhook-secret-sandbox": {"webhook-secret-sandbox": "whsec_dapr_test"},
            "several-keys": {"other": "x", "several-keys": "the-value"},
        }
    )
    server = grpc.aio.server()
    dapr_pb2_grpc.add_DaprServicer_to_server(servicer, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    monkeypatch.setenv("DAPR_GRPC_PORT", str(grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar_http))
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "5")
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    monkeypatch.delenv("APP_API_TOKEN", raising=False)
    try:
        yield servicer
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def sidecar(fake_dapr: FakeDapr) -> AsyncIterator[DaprSidecar]:
    connection = DaprSidecar()
    yield connection
    await connection.close()


# -- publishing --------------------------------------------------------------------------


def payment_event(tenant: str = "acme") -> CloudEvent:
    return CloudEvent(
        source="/billing/payment",
        type=PAYMENT_RECEIVED,
        subject="pay-1",
        tenant=tenant,
        traceparent=TRACEPARENT,
        data={"payment_id": "pay-1", "amount": "12.30"},
    )


async def test_publish_passes_our_cloudevent_through_on_the_event_type_topic(
    fake_dapr: FakeDapr, sidecar: DaprSidecar
) -> None:
    bus = DaprEventBus(sidecar, pubsub_name=PUBSUB, app_id="payment")
    event = payment_event()

    await bus.publish(event)

    [request] = fake_dapr.published
    assert request.pubsub_name == PUBSUB
    assert request.topic == PAYMENT_RECEIVED
    assert request.data_content_type == "application/cloudevents+json"
    published = json.loads(request.data)
    # daprd keeps the envelope's trace context only when it has `traceid` (else it sets both
    # to its own span): components-contrib pubsub.FromCloudEvent.
    assert published.pop("traceid") == published["traceparent"] == TRACEPARENT
    assert CloudEvent.model_validate(published) == event


async def test_a_refused_publish_raises_and_the_outbox_keeps_the_row(
    fake_dapr: FakeDapr, sidecar: DaprSidecar, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(OutboxMessage.metadata.create_all, tables=[_outbox_table()])
    event = payment_event()
    async with engine.begin() as connection:
        await connection.execute(
            _outbox_table()
            .insert()
            .values(
                event_id=event.id,
                aggregate="payment:pay-1",
                event_type=event.type,
                payload=event.to_json().decode(),
                created_at=utcnow(),
                attempts=0,
            )
        )
    relay = OutboxRelay(engine, DaprEventBus(sidecar, pubsub_name=PUBSUB, app_id="payment"))

    fake_dapr.publish_error = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(DaprUnavailable, match="refused event"):
        await relay.publish_pending()
    assert await relay.pending_count() == 1
    assert fake_dapr.published == []

    fake_dapr.publish_error = None
    assert await relay.publish_pending() == 1
    assert await relay.pending_count() == 0
    assert _without_traceid(fake_dapr.published[0].data) == event
    await engine.dispose()


def _without_traceid(data: bytes) -> CloudEvent:
    body = json.loads(data)
    body.pop("traceid", None)
    return CloudEvent.model_validate(body)


def _outbox_table() -> Any:
    return OutboxMessage.__table__  # type: ignore[attr-defined]


async def test_publish_fails_fast_when_no_sidecar_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAPR_HTTP_PORT", str(free_port()))
    monkeypatch.setenv("DAPR_GRPC_PORT", str(free_port()))
    bus = DaprEventBus(
        DaprSidecar(health_timeout_seconds=0.3, health_poll_seconds=0.05),
        pubsub_name=PUBSUB,
        app_id="payment",
    )
    started = time.monotonic()
    with pytest.raises(DaprUnavailable, match="not ready"):
        await bus.publish(payment_event())
    assert time.monotonic() - started < 3


# -- state -------------------------------------------------------------------------------


async def test_state_round_trip_with_etags(fake_dapr: FakeDapr, sidecar: DaprSidecar) -> None:
    store = DaprStateStore(sidecar, STATE_STORE)
    assert await store.get("pdf:inv-1") is None

    first = await store.set("pdf:inv-1", {"etag": "v1", "amount": "10.00"})
    item = await store.get("pdf:inv-1")
    assert item is not None
    assert item.value == {"etag": "v1", "amount": "10.00"}
    assert item.etag == first
    assert not fake_dapr.saves[0].HasField("etag")  # an unconditional write is an upsert

    second = await store.set("pdf:inv-1", {"etag": "v2"}, etag=first)
    assert second != first
    conditional = fake_dapr.saves[-1]
    assert conditional.etag.value == first
    assert conditional.options.concurrency == 1  # CONCURRENCY_FIRST_WRITE

    with pytest.raises(EtagMismatch):  # lost the race: written since it was read
        await store.set("pdf:inv-1", {"etag": "v3"}, etag=first)
    with pytest.raises(EtagMismatch):  # the store cannot even parse it
        await store.set("pdf:inv-1", {"etag": "v3"}, etag="not-a-version")
    with pytest.raises(EtagMismatch):
        await store.delete("pdf:inv-1", etag=first)
    current = await store.get("pdf:inv-1")
    assert current is not None and current.value == {"etag": "v2"}

    await store.delete("pdf:inv-1", etag=second)
    assert await store.get("pdf:inv-1") is None
    await store.delete("pdf:inv-1")  # unconditional delete of a missing key is fine


async def test_state_ttl_is_sent_as_metadata(fake_dapr: FakeDapr, sidecar: DaprSidecar) -> None:
    store = DaprStateStore(sidecar, STATE_STORE)
    await store.set("idem:1", {"done": True}, ttl_seconds=3600)
    await store.set("idem:2", {"done": True})
    assert dict(fake_dapr.saves[0].metadata) == {"ttlInSeconds": "3600"}
    assert dict(fake_dapr.saves[1].metadata) == {}
    with pytest.raises(ValueError):
        await store.set("idem:3", {}, ttl_seconds=0)


# -- secrets -----------------------------------------------------------------------------


async def test_secrets_found_missing_and_cached(fake_dapr: FakeDapr, sidecar: DaprSidecar) -> None:
    now = [100.0]
    secrets = DaprSecretStore(sidecar, SECRET_STORE, cache_seconds=30, clock=lambda: now[0])

    assert await secrets.get_secret("jwt-signing-key") == SIGNING_KEY
    assert await secrets.get_secret("several-keys") == "the-value"  # the key named like it
    assert await secrets.get_secret("stripe-api-key") is None
    reads = fake_dapr.secret_reads

    assert await secrets.get_secret("jwt-signing-key") == SIGNING_KEY
    assert fake_dapr.secret_reads == reads  # served from the cache

    fake_dapr.secrets["jwt-signing-key"] = {"jwt-signing-key": "rotated"}
    now[0] += 31
    assert await secrets.get_secret("jwt-signing-key") == "rotated"


async def test_an_unreachable_secret_store_raises_instead_of_answering_none(
    fake_dapr: FakeDapr, sidecar: DaprSidecar
) -> None:
    # A store the sidecar does not have: an error that is not "not found" must not read as
    # "no such secret", or a service would start as if an optional secret were absent.
    secrets = DaprSecretStore(sidecar, "no-such-store")
    with pytest.raises(DaprUnavailable, match="failed finding secret store"):
        await secrets.get_secret("jwt-signing-key")


# -- service invocation ------------------------------------------------------------------


def peer_app(seen: list[dict[str, str]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/tax/calculations")
    async def calculate(request: Request) -> dict[str, Any]:
        seen.append(dict(request.headers))
        return {"echo": await request.json(), "query": dict(request.query_params)}

    @app.get("/v1/rules/{rule_id}")
    async def rule(rule_id: str) -> JSONResponse:
        return JSONResponse(
            {"type": "/problems/rule-not-found", "title": "Not found", "status": 404},
            status_code=404,
        )

    @app.get("/v1/broken")
    async def broken() -> JSONResponse:
        return JSONResponse({"detail": "database down"}, status_code=503)

    return app


async def test_invocation_through_the_sidecar(
    fake_dapr: FakeDapr,
    peers: dict[str, FastAPI],
    forwarded: list[Forwarded],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, str]] = []
    peers["tax"] = peer_app(seen)
    monkeypatch.setenv("DAPR_API_TOKEN", "sidecar-token")
    invoker = DaprServiceInvoker(timeout_seconds=5)
    bind(TRACEPARENT, "req-42")
    try:
        ok = await invoker.invoke(
            "tax",
            "post",
            "/v1/tax/calculations?preview=true",
            json={"amount": "10.00"},
            headers={"Authorization": "Bearer t"},
        )
        assert ok.status_code == 200
        assert ok.body == {"echo": {"amount": "10.00"}, "query": {"preview": "true"}}
        call = forwarded[0]
        assert (call.app_id, call.method, call.path) == ("tax", "POST", "v1/tax/calculations")
        assert call.headers["dapr-api-token"] == "sidecar-token"
        assert call.headers["authorization"] == "Bearer t"
        assert call.headers["x-request-id"] == "req-42"
        # A child span of the caller's trace: same trace id, new parent id.
        trace_id = TRACEPARENT.split("-")[1]
        assert call.headers["traceparent"].split("-")[1] == trace_id
        assert call.headers["traceparent"] != TRACEPARENT

        missing = await invoker.invoke("tax", "GET", "v1/rules/r-9")
        assert missing.status_code == 404
        assert missing.body["type"] == "/problems/rule-not-found"

        with pytest.raises(PeerUnavailable, match="answered 503"):
            await invoker.invoke("tax", "GET", "/v1/broken")
        with pytest.raises(PeerUnavailable, match="answered 500"):  # unknown app id
            await invoker.invoke("ledger", "GET", "/v1/anything")
        # No retries here (the sidecar's Resiliency policy does them): one call each.
        assert [c.path for c in forwarded].count("v1/broken") == 1
    finally:
        bind(None, None)
        await invoker.close()


def test_the_sidecar_address_is_read_once_per_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's settings read the environment on every access; the invoker reads the sidecar's
    address at its first call to a peer and keeps it, since the sidecar does not move."""
    monkeypatch.delenv("DAPR_HTTP_ENDPOINT", raising=False)
    monkeypatch.setenv("DAPR_HTTP_PORT", "3511")
    invoker = DaprServiceInvoker(token="t")
    assert invoker.url("tax", "/v1/tax/calculations") == (
        "http://127.0.0.1:3511/v1.0/invoke/tax/method/v1/tax/calculations"
    )
    monkeypatch.setenv("DAPR_HTTP_PORT", "3999")
    assert invoker.url("tax", "v1/tax/calculations?reference=a%2Fb") == (
        "http://127.0.0.1:3511/v1.0/invoke/tax/method/v1/tax/calculations?reference=a%2Fb"
    )
    assert (
        invoker.url("disc ount", "/x") == "http://127.0.0.1:3999/v1.0/invoke/disc%20ount/method/x"
    )


async def test_invocation_without_a_sidecar_is_peer_unavailable() -> None:
    invoker = DaprServiceInvoker(sidecar_url=f"http://127.0.0.1:{free_port()}/v1.0")
    try:
        with pytest.raises(PeerUnavailable, match="ConnectError"):
            await invoker.invoke("tax", "GET", "/v1/rules")
    finally:
        await invoker.close()


# -- subscriptions, against the real payment service -------------------------------------


@dataclass
class PaymentHarness:
    app: FastAPI
    client: httpx.AsyncClient
    dapr: FakeDapr

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        token = self.app.state.ctx.tokens.mint(subject="test", tenant=tenant, scopes=ALL_SCOPES)
        return {"authorization": f"Bearer {token}"}

    async def deliver(self, event: CloudEvent | bytes, topic: str | None = None) -> httpx.Response:
        """POST an event to its route, as the sidecar does."""
        body = event if isinstance(event, bytes) else event.to_json()
        if topic is None:
            assert isinstance(event, CloudEvent)
            topic = event.type
        return await self.client.post(f"/dapr/events/{topic}", content=body, headers=CE_HEADERS)

    async def inbox_count(self) -> int:
        async with self.app.state.ctx.sessions() as session:
            return int((await session.exec(select(func.count()).select_from(InboxRecord))).one())


@asynccontextmanager
async def running_payment(fake_dapr: FakeDapr, tmp_path: Path) -> AsyncIterator[PaymentHarness]:
    """The real payment service in the dapr runtime, on SQLite, beside the stand-in sidecar."""
    from payment_service.bootstrap import create_app

    settings = ServiceSettings.for_service(
        "payment",
        runtime="dapr",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'payment.db'}",
        migrate_on_start=True,
        secrets_file=None,
        dapr_pubsub_name=PUBSUB,
        dapr_secret_store=SECRET_STORE,
        dapr_state_store=STATE_STORE,
        outbox_poll_seconds=0.05,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payment") as c,
    ):
        yield PaymentHarness(app, c, fake_dapr)


@pytest.fixture
async def payment(fake_dapr: FakeDapr, tmp_path: Path) -> AsyncIterator[PaymentHarness]:
    async with running_payment(fake_dapr, tmp_path) as harness:
        yield harness


def invoice_created(invoice_id: str, amount: str = "100.00") -> CloudEvent:
    return new_event(
        source="/billing/invoice",
        event_type=INVOICE_CREATED,
        data=InvoiceCreated(
            invoice_id=invoice_id,
            customer_id="cust-1",
            currency="EUR",
            total=Decimal(amount),
            amount_due=Decimal(amount),
            status="draft",
        ),
        subject=invoice_id,
        tenant="acme",
    )


def invoice_finalized(invoice_id: str, amount: str = "100.00") -> CloudEvent:
    return new_event(
        source="/billing/invoice",
        event_type=INVOICE_FINALIZED,
        data=InvoiceFinalized(
            invoice_id=invoice_id,
            number=f"INV-{invoice_id}",
            customer_id="cust-1",
            currency="EUR",
            total=Decimal(amount),
            amount_due=Decimal(amount),
        ),
        subject=invoice_id,
        tenant="acme",
    )


def test_select_adapters_builds_the_dapr_runtime() -> None:
    adapters = select_adapters(ServiceSettings.for_service("invoice", runtime="dapr"))
    assert isinstance(adapters.bus, DaprEventBus)
    assert isinstance(adapters.invoker, DaprServiceInvoker)
    assert isinstance(adapters.secrets, DaprSecretStore)
    assert adapters.owns_bus is True
    assert adapters.install_routes is not None


async def test_the_sidecar_reads_the_subscriptions(payment: PaymentHarness) -> None:
    response = await payment.client.get("/dapr/subscribe")
    assert response.status_code == 200
    listed = response.json()
    assert [entry["topic"] for entry in listed] == sorted(
        [
            INVOICE_CREATED,
            INVOICE_FINALIZED,
            INVOICE_VOIDED,
            INVOICE_STATUS_CHANGED,
            INVOICE_PAYMENT_REJECTED,
            CREDIT_NOTE_ISSUED,
        ]
    )
    for entry in listed:
        assert entry["pubsubname"] == PUBSUB
        assert entry["route"] == f"/dapr/events/{entry['topic']}"
        # Dead letters go to the component's dlq-<app>-<topic> queue, not to a topic: daprd
        # publishes to a dead-letter topic non-mandatory, lost unless something consumes it.
        assert "deadLetterTopic" not in entry
    # The routes are the sidecar's, not part of the public API description.
    paths = (await payment.client.get("/openapi.json")).json()["paths"]
    assert not any(path.startswith("/dapr") for path in paths)


async def test_delivered_events_take_effect_once(payment: PaymentHarness) -> None:
    invoice_id = f"inv-{uuid.uuid4().hex[:8]}"
    created = invoice_created(invoice_id)
    # Dapr adds its own attributes to a CloudEvent it passes through.
    routed = json.loads(created.to_json())
    routed.update(pubsubname=PUBSUB, topic=INVOICE_CREATED, traceid=TRACEPARENT)
    answer = await payment.deliver(json.dumps(routed).encode(), INVOICE_CREATED)
    assert (answer.status_code, answer.json()) == (200, {"status": "SUCCESS"})

    for event in (invoice_finalized(invoice_id),):
        answer = await payment.deliver(event)
        assert answer.json() == {"status": "SUCCESS"}
    seen = await payment.client.get(f"/v1/payable-invoices/{invoice_id}", headers=payment.headers())
    assert seen.status_code == 200, seen.text
    before = seen.json()
    assert Decimal(before["amount_due"]) == Decimal("100.00")
    inbox = await payment.inbox_count()
    assert inbox == 2

    # At-least-once: Dapr delivers the same event again. The inbox makes it a no-op.
    again = await payment.deliver(created)
    assert again.json() == {"status": "SUCCESS"}
    assert await payment.inbox_count() == inbox
    after = await payment.client.get(
        f"/v1/payable-invoices/{invoice_id}", headers=payment.headers()
    )
    assert after.json() == before


async def test_bad_events_are_refused_and_failures_retried(
    fake_dapr: FakeDapr, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payment_service.entrypoints import consumers
    from payment_service.service_layer import invoice_events
    from payment_service.service_layer.dependencies import Dependencies

    original = invoice_events.on_invoice_created
    failures = [RuntimeError("database restarting")]

    async def flaky(event: CloudEvent, deps: Dependencies) -> None:
        if failures:
            raise failures.pop()
        await original(event, deps)

    monkeypatch.setitem(consumers.SUBSCRIPTIONS, INVOICE_CREATED, flaky)
    async with running_payment(fake_dapr, tmp_path) as h:
        invoice_id = f"inv-{uuid.uuid4().hex[:8]}"
        event = invoice_created(invoice_id)
        first = await h.deliver(event)
        assert (first.status_code, first.json()) == (200, {"status": "RETRY"})
        assert await h.inbox_count() == 0  # the failed attempt left nothing behind

        redelivered = await h.deliver(event)
        assert redelivered.json() == {"status": "SUCCESS"}
        assert await h.inbox_count() == 1

        # Not JSON at all, not a CloudEvent, a schema the handler can never accept, and an
        # event on a topic it does not belong to: refused with 422, which the delivery policy
        # does not retry, so the component dead-letters them (never DROP: daprd acks a DROP).
        broken = CloudEvent(
            source="/billing/invoice", type=INVOICE_CREATED, tenant="acme", data={"x": 1}
        )
        for refused in (
            await h.deliver(b"\x00not json", INVOICE_CREATED),
            await h.deliver(b'{"data": {}}', INVOICE_CREATED),
            await h.deliver(broken),
            await h.deliver(event, INVOICE_VOIDED),
            await h.deliver(event, "billing.unknown.v1"),
        ):
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["status"] == 422
        assert await h.inbox_count() == 1


async def test_outbox_events_reach_the_sidecar(payment: PaymentHarness) -> None:
    invoice_id = f"inv-{uuid.uuid4().hex[:8]}"
    for event in (invoice_created(invoice_id), invoice_finalized(invoice_id)):
        assert (await payment.deliver(event)).json() == {"status": "SUCCESS"}
    paid = await payment.client.post(
        "/v1/payments",
        json={"invoice_id": invoice_id, "payment_method": "tok_visa"},
        headers={**payment.headers(), "idempotency-key": uuid.uuid4().hex},
    )
    assert paid.status_code in (200, 201), paid.text

    async with asyncio.timeout(10):
        while not any(r.topic == PAYMENT_RECEIVED for r in payment.dapr.published):
            await asyncio.sleep(0.02)
    request = next(r for r in payment.dapr.published if r.topic == PAYMENT_RECEIVED)
    assert request.pubsub_name == PUBSUB
    assert request.data_content_type == "application/cloudevents+json"
    published = _without_traceid(request.data)
    async with payment.app.state.ctx.sessions() as session:
        row = (
            await session.exec(select(OutboxMessage).where(OutboxMessage.event_id == published.id))
        ).one()
    assert published == CloudEvent.from_json(row.payload)
    assert published.data["invoice_id"] == invoice_id


async def test_only_the_sidecar_may_deliver_when_an_app_token_is_set(
    fake_dapr: FakeDapr, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_API_TOKEN", "app-token-from-dapr")
    async with running_payment(fake_dapr, tmp_path) as h:
        event = invoice_created(f"inv-{uuid.uuid4().hex[:8]}")
        assert (await h.client.get("/dapr/subscribe")).status_code == 401
        assert (await h.deliver(event)).status_code == 401
        answer = await h.client.post(
            f"/dapr/events/{event.type}",
            content=event.to_json(),
            headers={**CE_HEADERS, "dapr-api-token": "app-token-from-dapr"},
        )
        assert answer.json() == {"status": "SUCCESS"}
        assert await h.inbox_count() == 1


async def test_subscriptions_without_the_routes_fail_at_start(sidecar: DaprSidecar) -> None:
    bus = DaprEventBus(sidecar, pubsub_name=PUBSUB, app_id="payment")

    async def handler(event: CloudEvent) -> None:
        return None

    bus.subscribe("payment", INVOICE_CREATED, handler)
    with pytest.raises(ValueError, match="cannot consume as"):
        bus.subscribe("invoice", INVOICE_CREATED, handler)
    with pytest.raises(RuntimeError, match="app=app"):
        await bus.start()
    bus.install(FastAPI())
    await bus.start()
    with pytest.raises(RuntimeError, match="before starting"):
        bus.subscribe("payment", INVOICE_VOIDED, handler)
    await bus.stop()


@pytest.mark.parametrize(
    ("service", "topics"),
    [
        ("tax", []),
        ("discount", []),
        (
            "invoice",
            sorted(
                [
                    PAYMENT_RECEIVED,
                    PAYMENT_FAILED,
                    PAYMENT_REFUNDED,
                    TAX_CALCULATED,
                    DISCOUNT_APPLIED,
                ]
            ),
        ),
        (
            "payment",
            sorted(
                [
                    INVOICE_CREATED,
                    INVOICE_FINALIZED,
                    INVOICE_VOIDED,
                    INVOICE_STATUS_CHANGED,
                    INVOICE_PAYMENT_REJECTED,
                    CREDIT_NOTE_ISSUED,
                ]
            ),
        ),
    ],
)
async def test_every_service_starts_in_the_dapr_runtime(
    fake_dapr: FakeDapr, tmp_path: Path, service: str, topics: list[str]
) -> None:
    """Each composition root hands its app to the runtime: the sidecar finds the routes, and
    the signing key comes from Dapr's secret store."""
    module = __import__(f"{service}_service.bootstrap", fromlist=["create_app"])
    settings = ServiceSettings.for_service(
        service,
        runtime="dapr",
        database_url=f"sqlite+aiosqlite:///{tmp_path / (service + '.db')}",
        migrate_on_start=True,
        secrets_file=None,
        dapr_pubsub_name=PUBSUB,
        dapr_secret_store=SECRET_STORE,
        dapr_state_store=STATE_STORE,
    )
    app = module.create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c,
    ):
        listed = (await c.get("/dapr/subscribe")).json()
        assert [entry["topic"] for entry in listed] == topics
        assert app.state.ctx.tokens is not None
        assert (await c.get("/readyz")).status_code == 200
