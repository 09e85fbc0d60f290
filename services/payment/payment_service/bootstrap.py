"""The composition root of the payment service: the one place adapters meet ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from loguru import logger

from billing_common.health import readiness_checks
from billing_common.ports import SecretStore
from billing_common.runtime import (
    EmbeddedPlatform,
    close_context,
    open_context,
    select_adapters,
    start_context,
)
from billing_common.settings import ServiceSettings
from billing_common.web import create_service_app
from payment_service.adapters.invoice_directory import InvokerInvoiceDirectory
from payment_service.adapters.sandbox import SANDBOX, SandboxGateway, SandboxWebhookBuilder
from payment_service.adapters.stripe_gateway import STRIPE, StripeGateway
from payment_service.adapters.unit_of_work import uow_factory
from payment_service.config import PaymentOptions
from payment_service.domain import errors
from payment_service.domain.gateway import PaymentGateway
from payment_service.entrypoints.api import router, sandbox_router, webhook_router
from payment_service.entrypoints.consumers import subscribe_all
from payment_service.service_layer.dependencies import Dependencies
from payment_service.service_layer.gateways import GatewayRegistry
from payment_service.service_layer.ports import ConcurrentWrite, WebhookSettings

SERVICE = "payment"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Development only: the embedded runtime signs and accepts sandbox webhooks with this when no
# webhook-secret-sandbox is configured. Every other runtime must configure the secret.
DEV_SANDBOX_WEBHOOK_SECRET = "whsec_dev_sandbox_only_not_for_production"

DOMAIN_ERRORS: dict[type[Exception], int] = {
    errors.InvoiceNotPayable: 409,
    errors.NothingOutstanding: 409,
    errors.InvalidAmount: 422,
    errors.AmountExceedsOutstanding: 422,
    errors.AmountExceedsRefundable: 422,
    errors.PaymentCurrencyMismatch: 422,
    errors.PaymentNotRefundable: 409,
    errors.InvalidStatusTransition: 409,
    errors.PaymentNotFound: 404,
    errors.PayableInvoiceNotFound: 404,
    errors.IdempotencyKeyReused: 409,
    errors.UnknownGateway: 422,
    errors.InvalidSignatureHeader: 400,
    errors.SignatureMismatch: 401,
    errors.SignatureExpired: 401,
    errors.MalformedWebhook: 400,
    ConcurrentWrite: 409,
}


async def _gateways(secrets: SecretStore, options: PaymentOptions) -> dict[str, PaymentGateway]:
    gateways: dict[str, PaymentGateway] = {SANDBOX: SandboxGateway()}
    api_key = await secrets.get_secret("stripe-api-key")
    if api_key:
        gateways[STRIPE] = StripeGateway(
            api_key,
            api_base=options.stripe_api_base,
            timeout_seconds=options.stripe_timeout_seconds,
            max_network_retries=options.stripe_max_network_retries,
        )
    else:
        logger.bind(service=SERVICE).info("no stripe-api-key secret: the stripe gateway is off")
    return gateways


async def _webhook_secrets(settings: ServiceSettings, secrets: SecretStore) -> dict[str, str]:
    found: dict[str, str] = {}
    for gateway in (SANDBOX, STRIPE):
        secret = await secrets.get_secret(f"webhook-secret-{gateway}")
        if secret:
            found[gateway] = secret
    if SANDBOX not in found:
        if settings.runtime == "embedded":
            logger.bind(service=SERVICE).warning(
                "no webhook-secret-sandbox secret: using the development secret"
            )
            found[SANDBOX] = DEV_SANDBOX_WEBHOOK_SECRET
        else:
            logger.bind(service=SERVICE).warning(
                "no webhook-secret-sandbox secret: sandbox webhooks are refused (503)"
            )
    return found


def create_app(
    settings: ServiceSettings | None = None,
    platform: EmbeddedPlatform | None = None,
    *,
    gateways: Mapping[str, PaymentGateway] | None = None,
    options: PaymentOptions | None = None,
) -> FastAPI:
    """`gateways` replaces the ones configured from secrets (tests inject a counting sandbox
    or a Stripe adapter pointed at recorded responses)."""
    settings = settings or ServiceSettings.for_service(SERVICE)
    options = options or PaymentOptions()
    adapters = select_adapters(settings, platform)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await open_context(
            settings, adapters, migrations_dir=MIGRATIONS_DIR, metrics=app.state.metrics, app=app
        )
        app.state.ctx = ctx
        owned = gateways is None
        registry = GatewayRegistry(
            gateways if gateways is not None else await _gateways(ctx.secrets, options)
        )
        deps = Dependencies(
            uow=uow_factory(ctx.sessions, ctx.relay),
            gateways=registry,
            invoices=InvokerInvoiceDirectory(ctx.invoker, ctx.tokens),
            webhooks=WebhookSettings(
                secrets=await _webhook_secrets(settings, ctx.secrets),
                tolerance_seconds=options.webhook_tolerance_seconds,
            ),
            sandbox=SandboxWebhookBuilder(),
        )
        app.state.deps = deps
        subscribe_all(ctx, deps)
        await start_context(ctx)
        try:
            yield
        finally:
            if owned:
                await registry.close()
            await close_context(ctx)

    app = create_service_app(
        service=SERVICE,
        title="Payment service",
        description=(
            "Idempotent payments and refunds of finalized invoices through a gateway port "
            "(deterministic sandbox by default, Stripe PaymentIntents), with signed webhooks. "
            "Learns about invoices from billing.invoice.* events."
        ),
        version="0.1.0",
        routers=[router, webhook_router, sandbox_router],
        lifespan=lifespan,
        domain_errors=DOMAIN_ERRORS,
        readiness_checks=readiness_checks,
        max_body_bytes=settings.max_body_bytes,
    )
    if platform is not None:
        platform.apps[SERVICE] = app
    return app
