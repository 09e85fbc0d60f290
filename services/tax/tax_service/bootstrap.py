"""The composition root of the tax service: adapters for the runtime, the lifecycle, the HTTP
app. `uvicorn tax_service.bootstrap:create_app --factory` serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
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
from tax_service import samples
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.unit_of_work import uow_factory
from tax_service.config import TaxOptions
from tax_service.domain.errors import (
    CalculationNotFound,
    DuplicateRuleKey,
    ExemptionNotConfirmed,
    InvalidCalculationRequest,
    InvalidCursor,
    InvalidJurisdiction,
    InvalidRule,
    InvalidVatId,
    ReverseChargeNotConfirmed,
    RuleNotFound,
    TaxIdRequired,
    UnknownCategory,
    UnknownJurisdiction,
)
from tax_service.entrypoints.api import router
from tax_service.service_layer import rules
from tax_service.service_layer.dependencies import Dependencies

SERVICE = "tax"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

DOMAIN_ERRORS: dict[type[Exception], int] = {
    InvalidRule: 422,
    InvalidJurisdiction: 422,
    InvalidCalculationRequest: 422,
    TaxIdRequired: 422,
    UnknownJurisdiction: 422,
    UnknownCategory: 422,
    InvalidVatId: 422,
    ReverseChargeNotConfirmed: 422,
    ExemptionNotConfirmed: 422,
    InvalidCursor: 400,
    RuleNotFound: 404,
    CalculationNotFound: 404,
    DuplicateRuleKey: 409,
}


def _version() -> str:
    try:
        return version("tax-service")
    except PackageNotFoundError:
        return "0.0.0"


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: ServiceSettings | None = None,
    platform: EmbeddedPlatform | None = None,
    options: TaxOptions | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings.for_service(SERVICE)
    options = options or TaxOptions()
    adapters = select_adapters(settings, platform)
    log = logger.bind(service=SERVICE)
    # This process's copy of each tenant's rules, checked against the database's rules
    # version in every calculation's transaction (see RuleCache).
    rule_cache = RuleCache()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await open_context(
            settings, adapters, migrations_dir=MIGRATIONS_DIR, metrics=app.state.metrics, app=app
        )
        app.state.ctx = ctx
        vat_ids = options.vat_id_checker(settings.runtime, utcnow)
        deps = Dependencies(
            uow=uow_factory(ctx.sessions, ctx.relay, rule_cache), clock=utcnow, vat_ids=vat_ids
        )
        app.state.deps = deps  # read by entrypoints.deps, and nowhere else
        try:
            await start_context(ctx)  # no subscriptions: this service only publishes
            if settings.should_load_samples:
                added = await rules.ensure_samples(
                    samples.SAMPLE_TENANT,
                    samples.SAMPLE_RULES,
                    deps,
                    state=ctx.state,
                    marker=samples.SAMPLE_MARKER,
                )
                if added:
                    log.info(
                        "loaded {} sample tax rules for tenant {}", added, samples.SAMPLE_TENANT
                    )
            yield
        finally:
            if vat_ids is not None:
                await vat_ids.close()
            await close_context(ctx)

    app = create_service_app(
        service=SERVICE,
        title="Tax service",
        description=(
            "Tax rules by jurisdiction (country, region) and product category with validity "
            "dates; calculations with exclusive or inclusive prices, several and compound "
            "taxes per line, exempt customers, zero-rated categories, and the VAT treatment "
            "(reverse charge, intra-community supply, export, out of scope) decided from the "
            "seller and the customer; every calculation kept in the history."
        ),
        version=_version(),
        routers=[router],
        lifespan=lifespan,
        domain_errors=DOMAIN_ERRORS,
        readiness_checks=readiness_checks,
        max_body_bytes=settings.max_body_bytes,
        openapi_tags=[
            {"name": "calculations", "description": "tax calculations and their history"},
            {"name": "rules", "description": "tax rules (admin scope to change)"},
        ],
    )
    if platform is not None:
        platform.apps[SERVICE] = app
    return app
