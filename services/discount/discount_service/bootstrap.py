"""The composition root of the discount service: its error map, routers and wiring; the
kernel (billing_common.lifecycle) runs it. `uvicorn discount_service.bootstrap:create_app
--factory` serves it."""

from __future__ import annotations

from fastapi import FastAPI

from billing_common.clock import utcnow
from billing_common.lifecycle import ServiceSpec, Wiring, build_app, migrations_beside
from billing_common.runtime import EmbeddedPlatform, ServiceContext
from billing_common.settings import ServiceSettings
from discount_service import samples
from discount_service.adapters.config_cache import ConfigCache
from discount_service.adapters.read_view import read_views
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
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.samples import ensure_samples

SERVICE = "discount"
MIGRATIONS_DIR = migrations_beside(__file__)

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


async def _wire(wiring: Wiring) -> Dependencies:
    ctx = wiring.ctx
    cache = ConfigCache()  # one per process: the units of work's and the read views'
    # On PostgreSQL a quote reads outside any Session or transaction (the read view);
    # SQLite (the embedded runtime's one connection) keeps the unit of work for it.
    reads = read_views(ctx.engine, cache) if ctx.engine.dialect.name == "postgresql" else None
    return Dependencies(uow=uow_factory(ctx.sessions, ctx.relay, cache), clock=utcnow, reads=reads)


async def _load_samples(ctx: ServiceContext, deps: Dependencies) -> int:
    return await ensure_samples(
        samples.SAMPLE_TENANT,
        deps,
        coupons=samples.SAMPLE_COUPONS,
        policies=samples.SAMPLE_POLICIES,
        settings=samples.SAMPLE_STACKING,
    )


def service_spec() -> ServiceSpec[Dependencies]:
    return ServiceSpec(
        name=SERVICE,
        title="Discount service",
        description=(
            "Coupons, user-type and amount-threshold discounts, a stacking policy with a cap, "
            "quotes and idempotent, exactly-once redemptions with their history."
        ),
        package="discount-service",
        routers=[router],
        domain_errors=DOMAIN_ERRORS,
        migrations_dir=MIGRATIONS_DIR,
        wire=_wire,
        load_samples=_load_samples,  # no subscriptions: this service only publishes
        openapi_tags=[
            {"name": "discounts", "description": "quotes and redemptions"},
            {"name": "coupons", "description": "coupon codes (admin)"},
            {"name": "policies", "description": "user-type and threshold discounts (admin)"},
            {"name": "settings", "description": "the stacking cap"},
            {"name": "history", "description": "every redemption with its lines"},
        ],
    )


def create_app(
    settings: ServiceSettings | None = None, platform: EmbeddedPlatform | None = None
) -> FastAPI:
    return build_app(service_spec(), settings, platform)
