"""Fixtures of the payment service's tests: the real app (lifespan, migrations, in-process
bus) on SQLite and PostgreSQL, a counting sandbox gateway, and helpers to feed invoice events
and sign webhooks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import select

from billing_common.auth import ALL_SCOPES
from billing_common.event_schemas import (
    INVOICE_CREATED,
    INVOICE_FINALIZED,
    INVOICE_VOIDED,
    InvoiceCreated,
    InvoiceFinalized,
    InvoiceVoided,
)
from billing_common.events import CloudEvent, new_event
from billing_common.outbox import OutboxMessage
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_common.testing import ServiceMigrations
from payment_service.adapters.sandbox import SandboxGateway
from payment_service.bootstrap import MIGRATIONS_DIR, create_app
from payment_service.domain.gateway import PaymentGateway
from payment_service.domain.signatures import sign

SANDBOX_SECRET = "whsec_test_sandbox_0123456789"
STRIPE_SECRET = "whsec_test_stripe_0123456789"


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    platform: EmbeddedPlatform
    sandbox: SandboxGateway
    tenant: str = "acme"
    _counter: int = field(default=0)

    def token(self, tenant: str | None = None, scopes: frozenset[str] = ALL_SCOPES) -> str:
        return str(
            self.app.state.ctx.tokens.mint(
                subject="test", tenant=tenant or self.tenant, scopes=scopes
            )
        )

    def headers(
        self,
        *,
        tenant: str | None = None,
        key: str | None = None,
        scopes: frozenset[str] = ALL_SCOPES,
    ) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self.token(tenant, scopes)}"}
        if key is not None:
            headers["idempotency-key"] = key
        return headers

    async def publish(self, event: CloudEvent) -> None:
        await self.platform.bus.publish(event)
        await self.platform.bus.wait_idle()

    async def invoice_event(
        self,
        event_type: str,
        invoice_id: str,
        *,
        amount_due: str = "100.00",
        currency: str = "EUR",
        tenant: str | None = None,
    ) -> CloudEvent:
        data: Any
        if event_type == INVOICE_CREATED:
            data = InvoiceCreated(
                invoice_id=invoice_id,
                customer_id="cust-1",
                currency=currency,
                total=Decimal(amount_due),
                amount_due=Decimal(amount_due),
                status="draft",
            )
        elif event_type == INVOICE_FINALIZED:
            data = InvoiceFinalized(
                invoice_id=invoice_id,
                number=f"INV-{invoice_id}",
                customer_id="cust-1",
                currency=currency,
                total=Decimal(amount_due),
                amount_due=Decimal(amount_due),
            )
        else:
            assert event_type == INVOICE_VOIDED
            data = InvoiceVoided(invoice_id=invoice_id, number=None, reason="test")
        event = new_event(
            source="/billing/invoice",
            event_type=event_type,
            data=data,
            subject=invoice_id,
            tenant=tenant or self.tenant,
        )
        await self.publish(event)
        return event

    async def open_invoice(
        self,
        invoice_id: str | None = None,
        *,
        amount_due: str = "100.00",
        currency: str = "EUR",
        tenant: str | None = None,
    ) -> str:
        invoice_id = invoice_id or f"inv-{uuid.uuid4().hex[:10]}"
        for event_type in (INVOICE_CREATED, INVOICE_FINALIZED):
            await self.invoice_event(
                event_type, invoice_id, amount_due=amount_due, currency=currency, tenant=tenant
            )
        return invoice_id

    async def pay(
        self,
        invoice_id: str,
        *,
        token: str = "tok_visa",
        amount: str | None = None,
        key: str | None = None,
        tenant: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"invoice_id": invoice_id, "payment_method": token}
        if amount is not None:
            body["amount"] = amount
        body.update(extra or {})
        return await self.client.post(
            "/v1/payments",
            json=body,
            headers=self.headers(tenant=tenant, key=key or uuid.uuid4().hex),
        )

    async def refund(
        self, payment_id: str, *, amount: str | None = None, key: str | None = None
    ) -> httpx.Response:
        body = {"amount": amount} if amount is not None else {}
        return await self.client.post(
            f"/v1/payments/{payment_id}/refunds",
            json=body,
            headers=self.headers(key=key or uuid.uuid4().hex),
        )

    async def webhook(
        self,
        gateway: str,
        event: Mapping[str, Any],
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        header: str = "Billing-Signature",
    ) -> httpx.Response:
        raw = json.dumps(event).encode()
        secret = secret or (STRIPE_SECRET if gateway == "stripe" else SANDBOX_SECRET)
        signature = sign(secret, raw, int(time.time()) if timestamp is None else timestamp)
        return await self.client.post(
            f"/v1/webhooks/{gateway}",
            content=raw,
            headers={"content-type": "application/json", header: signature},
        )

    async def outbox(self) -> list[CloudEvent]:
        async with self.app.state.ctx.sessions() as session:
            rows = (await session.exec(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        return [CloudEvent.from_json(row.payload) for row in rows]

    async def outbox_types(self) -> list[str]:
        return [event.type for event in await self.outbox()]


HarnessFactory = Callable[..., Any]


@asynccontextmanager
async def running_app(
    database_url: str,
    platform: EmbeddedPlatform,
    tmp_path: Path,
    gateways: Mapping[str, PaymentGateway] | None = None,
) -> AsyncIterator[Harness]:
    secrets = tmp_path / f"secrets-{uuid.uuid4().hex[:6]}.json"
    secrets.write_text(
        json.dumps(
            {"webhook-secret-sandbox": SANDBOX_SECRET, "webhook-secret-stripe": STRIPE_SECRET}
        )
    )
    sandbox = SandboxGateway()
    settings = ServiceSettings.for_service(
        "payment",
        runtime="embedded",
        database_url=database_url,
        secrets_file=secrets,
        outbox_poll_seconds=0.1,
        max_body_bytes=65_536,
    )
    app = create_app(settings, platform, gateways=gateways or {"sandbox": sandbox})
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payment") as c,
    ):
        yield Harness(app=app, client=c, platform=platform, sandbox=sandbox)


@pytest.fixture(scope="session")
def service_migrations() -> ServiceMigrations:
    """What the kernel's `migrated_database_url` copies from its once-per-session template."""
    return ServiceMigrations(MIGRATIONS_DIR, "alembic_version_payment")


@pytest.fixture
async def harness(
    migrated_database_url: str, embedded_platform: EmbeddedPlatform, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The app on SQLite and on PostgreSQL."""
    async with running_app(migrated_database_url, embedded_platform, tmp_path) as h:
        yield h


@pytest.fixture
async def sqlite_harness(
    migrated_sqlite_url: str, embedded_platform: EmbeddedPlatform, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The app on SQLite only, for API behaviour that does not depend on the database."""
    async with running_app(migrated_sqlite_url, embedded_platform, tmp_path) as h:
        yield h


@pytest.fixture
def app_factory(
    embedded_platform: EmbeddedPlatform, tmp_path: Path
) -> Callable[..., Awaitable[Any]]:
    def factory(database_url: str, gateways: Mapping[str, PaymentGateway] | None = None) -> Any:
        return running_app(database_url, embedded_platform, tmp_path, gateways)

    return factory  # type: ignore[return-value]
