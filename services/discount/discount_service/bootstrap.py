"""The composition root of the discount service: adapters for the runtime, the lifecycle,
the HTTP app. `uvicorn discount_service.bootstrap:create_app --factory` serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from loguru import logger

from billing_common.health import readiness_checks
from billing_common.runtime import (
    EmbeddedPlatform,
    close_context,
    open_context,
    select_adapters,
    start_context,
)
from billing_common.settings import ServiceSettings
from billing_common.web import create_service_app
from discount_service import samples
from discount_service.adapters.unit_of_work import uow_factory
from discount_service.domain.errors import (
    ConcurrentUpdate,
    CouponNotApplicable,
    CouponNotFound,
    DuplicateCouponCode,
    IdempotencyKeyReused,
    InvalidAmount,
    InvalidCoupon,
    InvalidDiscount,
    InvalidPolicy,
    InvalidStackingSettings,
    PolicyNotFound,
    RedemptionNotFound,
)
from discount_service.entrypoints.api import router
from discount_service.service_layer.dependencies import Dependencies, utcnow
from discount_service.service_layer.samples import ensure_samples

SERVICE = "discount"


def _migrations_dir() -> Path:
    """services/discount/migrations in a checkout; ./migrations in the container image,
    where the package is installed into site-packages and the scripts sit in WORKDIR."""
    beside_package = Path(__file__).resolve().parent.parent / "migrations"
    return beside_package if beside_package.is_dir() else Path.cwd() / "migrations"


MIGRATIONS_DIR = _migrations_dir()

DOMAIN_ERRORS: dict[type[Exception], int] = {
    InvalidDiscount: 422,
    InvalidCoupon: 422,
    InvalidPolicy: 422,
    InvalidStackingSettings: 422,
    InvalidAmount: 422,
    CouponNotFound: 404,
    PolicyNotFound: 404,
    RedemptionNotFound: 404,
    DuplicateCouponCode: 409,
    CouponNotApplicable: 422,
    IdempotencyKeyReused: 409,
    ConcurrentUpdate: 409,
}


def _version() -> str:
    try:
        return version("discount-service")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(
    settings: ServiceSettings | None = None, platform: EmbeddedPlatform | None = None
) -> FastAPI:
    settings = settings or ServiceSettings.for_service(SERVICE)
    adapters = select_adapters(settings, platform)
    log = logger.bind(service=SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await open_context(
            settings, adapters, migrations_dir=MIGRATIONS_DIR, metrics=app.state.metrics, app=app
        )
        app.state.ctx = ctx
        deps = Dependencies(uow=uow_factory(ctx.sessions, ctx.relay), clock=utcnow)
        app.state.deps = deps  # read by entrypoints/deps.py
        try:
            await start_context(ctx)  # no subscriptions: this service only publishes
            if settings.should_load_samples:
                added = await ensure_samples(
                    samples.SAMPLE_TENANT,
                    deps,
                    coupons=samples.SAMPLE_COUPONS,
                    policies=samples.SAMPLE_POLICIES,
                    settings=samples.SAMPLE_STACKING,
                )
                if added:
                    log.info("loaded {} sample records for tenant {}", added, samples.SAMPLE_TENANT)
            yield
        finally:
            await close_context(ctx)

    app = create_service_app(
        service=SERVICE,
        title="Discount service",
        description=(
            "Coupons, user-type and amount-threshold discounts, a stacking policy with a cap, "
            "quotes and idempotent, exactly-once redemptions with their history."
        ),
        version=_version(),
        routers=[router],
        lifespan=lifespan,
        domain_errors=DOMAIN_ERRORS,
        readiness_checks=readiness_checks,
        max_body_bytes=settings.max_body_bytes,
        openapi_tags=[
            {"name": "discounts", "description": "quotes and redemptions"},
            {"name": "coupons", "description": "coupon codes (admin)"},
            {"name": "policies", "description": "user-type and threshold discounts (admin)"},
            {"name": "settings", "description": "the stacking cap"},
            {"name": "history", "description": "every redemption with its lines"},
        ],
    )
    if platform is not None:
        platform.apps[SERVICE] = app
    return app
