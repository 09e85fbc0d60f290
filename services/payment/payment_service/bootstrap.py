"""The composition root of the payment service: the one place adapters meet ports."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from datetime import timedelta

from fastapi import FastAPI
from loguru import logger

from billing_common.lifecycle import ServiceSpec, Wiring, build_app, migrations_beside
from billing_common.ports import SecretStore
from billing_common.runtime import EmbeddedPlatform, ServiceContext
from billing_common.settings import ServiceSettings
from payment_service.adapters.invoice_directory import InvokerInvoiceDirectory
from payment_service.adapters.sandbox import SANDBOX, SandboxGateway, SandboxWebhookBuilder
from payment_service.adapters.stalled_attempts import SqlStalledAttempts
from payment_service.adapters.stripe_name import STRIPE
from payment_service.adapters.unit_of_work import uow_factory
from payment_service.config import PaymentOptions
from payment_service.domain import errors
from payment_service.domain.gateway import PaymentGateway
from payment_service.entrypoints.api import router, sandbox_router, webhook_router
from payment_service.entrypoints.consumers import subscribe_all
from payment_service.service_layer.dependencies import Dependencies
from payment_service.service_layer.gateways import GatewayRegistry
from payment_service.service_layer.ports import ConcurrentWrite, WebhookSettings
from payment_service.service_layer.recovery import resume_stalled

SERVICE = "payment"
MIGRATIONS_DIR = migrations_beside(__file__)
# Development only (DevelopmentPolicy.development_secrets): sandbox webhooks are signed and
# accepted with this when no webhook-secret-sandbox is configured; deployments configure it.
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
        from payment_service.adapters.stripe_gateway import StripeGateway

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
        if settings.development.development_secrets:
            logger.bind(service=SERVICE).warning(
                "no webhook-secret-sandbox secret: using the development secret"
            )
            found[SANDBOX] = DEV_SANDBOX_WEBHOOK_SECRET
        else:
            logger.bind(service=SERVICE).warning(
                "no webhook-secret-sandbox secret: sandbox webhooks are refused (503)"
            )
    return found


async def _recover_stalled_attempts(
    options: PaymentOptions, ctx: ServiceContext, deps: Dependencies
) -> None:
    stalled = SqlStalledAttempts(ctx.sessions)
    while True:
        await asyncio.sleep(options.recovery_sweep_seconds)
        try:
            await resume_stalled(deps, stalled)
        except Exception as exc:  # noqa: BLE001 - the sweep must outlive any failure
            logger.bind(service=SERVICE).warning("recovering stalled attempts failed: {}", exc)


def service_spec(
    gateways: Mapping[str, PaymentGateway] | None = None, options: PaymentOptions | None = None
) -> ServiceSpec[Dependencies]:
    """`gateways` replaces the ones configured from secrets (tests inject a counting sandbox
    or a Stripe adapter pointed at recorded responses); the caller then owns them."""
    options = options or PaymentOptions()

    async def wire(wiring: Wiring) -> Dependencies:
        ctx = wiring.ctx
        if gateways is None:
            registry = GatewayRegistry(await _gateways(ctx.secrets, options))
            wiring.on_close(registry.close)
        else:
            registry = GatewayRegistry(gateways)
        return Dependencies(
            uow=uow_factory(ctx.sessions, ctx.relay),
            record_outcome_within=timedelta(seconds=options.record_outcome_seconds),
            gateways=registry,
            invoices=InvokerInvoiceDirectory(ctx.invoker, ctx.tokens),
            webhooks=WebhookSettings(
                secrets=await _webhook_secrets(ctx.settings, ctx.secrets),
                tolerance_seconds=options.webhook_tolerance_seconds,
            ),
            sandbox=SandboxWebhookBuilder(),
        )

    return ServiceSpec(
        name=SERVICE,
        title="Payment service",
        description=(
            "Idempotent payments and refunds of finalized invoices through a gateway port "
            "(deterministic sandbox by default, Stripe PaymentIntents), with signed webhooks. "
            "Learns about invoices from billing.invoice.* events."
        ),
        package="payment-service",
        routers=[router, webhook_router, sandbox_router],
        domain_errors=DOMAIN_ERRORS,
        migrations_dir=MIGRATIONS_DIR,
        wire=wire,
        subscribe=subscribe_all,
        background=[functools.partial(_recover_stalled_attempts, options)],
    )


def create_app(
    settings: ServiceSettings | None = None,
    platform: EmbeddedPlatform | None = None,
    *,
    gateways: Mapping[str, PaymentGateway] | None = None,
    options: PaymentOptions | None = None,
) -> FastAPI:
    return build_app(service_spec(gateways, options), settings, platform)
