"""Only the Dapr sidecar may deliver events to the invoice service: with an app API token set
(APP_API_TOKEN, which the chart fills from the Secret that `dapr.io/app-token-secret` names and
daprd sends as `dapr-api-token` on every call to the app), a `payment.received` CloudEvent
forged by another pod is refused and changes nothing; the sidecar's delivery is applied."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, secret_pb2
from loguru import logger
from sqlalchemy import func
from sqlmodel import select

from billing_common.event_schemas import PAYMENT_RECEIVED, PaymentReceived
from billing_common.events import CloudEvent, new_event
from billing_common.outbox import InboxRecord
from billing_common.runtime import select_adapters
from billing_common.settings import ServiceSettings
from invoice_service.bootstrap import create_app

APP_TOKEN = "app-token-from-the-dapr-secret"  # daprd -> app (APP_API_TOKEN)
SIDECAR_TOKEN = "sidecar-api-token"  # app -> daprd (DAPR_API_TOKEN, read by the SDK)
CE_HEADERS = {"content-type": "application/cloudevents+json"}


class SidecarSecrets(dapr_pb2_grpc.DaprServicer):  # type: ignore[misc]
    """daprd's gRPC secret API, the one call the invoice service makes at start-up; like daprd
    with `dapr.io/api-token-secret`, it refuses calls without the sidecar's own token."""

    async def GetSecret(self, request: Any, context: Any) -> secret_pb2.GetSecretResponse:
        metadata = dict(context.invocation_metadata())
        if metadata.get("dapr-api-token") != SIDECAR_TOKEN:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication error")
        values = {"jwt-signing-key": "sidecar-token-tests-signing-key-0123456789abcdef"}
        if request.key not in values:
            await context.abort(grpc.StatusCode.INTERNAL, f"secret {request.key} not found")
        return secret_pb2.GetSecretResponse(data={request.key: values[request.key]})


class _OutboundHealth(BaseHTTPRequestHandler):
    """The SDK's blocking wait for `/v1.0/healthz/outbound` before its first call."""

    def do_GET(self) -> None:
        self.send_response(204 if self.path == "/v1.0/healthz/outbound" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def sidecar_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OutboundHealth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DAPR_HTTP_PORT", str(server.server_address[1]))
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "5")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def sidecar(sidecar_http: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    server = grpc.aio.server()
    dapr_pb2_grpc.add_DaprServicer_to_server(SidecarSecrets(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    monkeypatch.setenv("DAPR_GRPC_PORT", str(port))
    monkeypatch.setenv("DAPR_API_TOKEN", SIDECAR_TOKEN)
    try:
        yield
    finally:
        await server.stop(grace=None)


def payment_received(invoice_id: str, amount: str) -> CloudEvent:
    return new_event(
        source="/billing/payment",
        event_type=PAYMENT_RECEIVED,
        data=PaymentReceived(
            payment_id=uuid.uuid4().hex,
            invoice_id=invoice_id,
            currency="EUR",
            amount=Decimal(amount),
            gateway="sandbox",
        ),
        subject=invoice_id,
        tenant="acme",
    )


async def test_a_forged_payment_is_refused_and_the_sidecars_delivery_applied(
    api_any_db: Any, make_body: Any, sidecar: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_any_db
    # An invoice awaiting payment, issued through the API (test peers for tax and discount).
    body = make_body(lines=[{"description": "Widget", "quantity": "1", "unit_price": "100.00"}])
    created = (await api.create(body)).json()
    issued = await api.client.post(f"/v1/invoices/{created['id']}/finalize", headers=api.headers())
    assert issued.json()["status"] == "issued"
    invoice_id = created["id"]

    # The same database, served by the invoice service on the dapr runtime, tokens set (it
    # starts only if the SDK sends DAPR_API_TOKEN with the signing-key read).
    monkeypatch.setenv("APP_API_TOKEN", APP_TOKEN)
    settings = ServiceSettings.for_service(
        "invoice", runtime="dapr", database_url=api.database_url, secrets_file=None
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://invoice") as c,
    ):

        async def inbox() -> int:
            async with app.state.ctx.sessions() as session:
                count = select(func.count()).select_from(InboxRecord)
                return int((await session.exec(count)).one())

        async def status() -> tuple[str, str]:
            answer = await api.client.get(f"/v1/invoices/{invoice_id}", headers=api.headers())
            state = answer.json()
            return state["status"], state["amount_due"]

        route = f"/dapr/events/{PAYMENT_RECEIVED}"
        forged = payment_received(invoice_id, "119.00")
        for headers in (CE_HEADERS, {**CE_HEADERS, "dapr-api-token": "a-guess"}):
            refused = await c.post(route, content=forged.to_json(), headers=headers)
            assert refused.status_code == 401
            assert refused.headers["content-type"].startswith("application/problem+json")
        # Nor can another pod read which events the app takes.
        assert (await c.get("/dapr/subscribe")).status_code == 401
        assert await inbox() == 0
        assert await status() == ("issued", "119.00")

        # Probes and metrics stay open: the kubelet and Prometheus carry no token.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await c.get(path)).status_code == 200, path

        delivered = await c.post(
            route, content=forged.to_json(), headers={**CE_HEADERS, "dapr-api-token": APP_TOKEN}
        )
        assert delivered.json() == {"status": "SUCCESS"}
        assert await inbox() == 1
        assert await status() == ("paid", "0.00")


def test_the_dapr_runtime_warns_when_no_app_token_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APP_API_TOKEN", raising=False)
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(str(message)), level="WARNING")
    try:
        select_adapters(ServiceSettings.for_service("invoice", runtime="dapr", secrets_file=None))
        monkeypatch.setenv("APP_API_TOKEN", APP_TOKEN)
        select_adapters(ServiceSettings.for_service("invoice", runtime="dapr", secrets_file=None))
    finally:
        logger.remove(sink)
    assert len([m for m in messages if "APP_API_TOKEN is not set" in m]) == 1
