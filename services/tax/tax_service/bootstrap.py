"""The composition root of the tax service: its error map, routers and wiring; the kernel
(billing_common.lifecycle) runs it. `uvicorn tax_service.bootstrap:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from billing_common.clock import utcnow
from billing_common.lifecycle import ServiceSpec, Wiring, build_app, migrations_beside
from billing_common.runtime import EmbeddedPlatform, ServiceContext
from billing_common.settings import ServiceSettings
from tax_service import samples
from tax_service.adapters.held_connections import HeldConnections
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.unit_of_work import uow_factory
from tax_service.config import TaxOptions
from tax_service.domain.errors import (
    CalculationNotFound,
    DuplicateRuleKey,
    ExemptionNotConfirmed,
    InvalidCalculationRequest,
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
MIGRATIONS_DIR = migrations_beside(__file__)

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
    RuleNotFound: 404,
    CalculationNotFound: 404,
    DuplicateRuleKey: 409,
}


async def _load_samples(ctx: ServiceContext, deps: Dependencies) -> int:
    return await rules.ensure_samples(
        samples.SAMPLE_TENANT,
        samples.SAMPLE_RULES,
        deps,
        state=ctx.state,
        marker=samples.SAMPLE_MARKER,
    )


def service_spec(options: TaxOptions | None = None) -> ServiceSpec[Dependencies]:
    options = options or TaxOptions()
    # This app's copy of each tenant's rules, checked against the database's rules version in
    # every calculation's transaction (see RuleCache); one per app, kept across restarts.
    rule_cache = RuleCache()

    async def wire(wiring: Wiring) -> Dependencies:
        ctx = wiring.ctx
        vat_ids = options.vat_id_checker(ctx.settings.development.sandbox_registers, utcnow)
        if vat_ids is not None:
            wiring.on_close(vat_ids.close)
        held = HeldConnections.for_engine(ctx.engine)
        if held is not None:
            wiring.on_close(held.close)
        return Dependencies(
            uow=uow_factory(ctx.sessions, ctx.relay, rule_cache, held),
            clock=utcnow,
            vat_ids=vat_ids,
        )

    return ServiceSpec(
        name=SERVICE,
        title="Tax service",
        description=(
            "Tax rules by jurisdiction (country, region) and product category with validity "
            "dates; calculations with exclusive or inclusive prices, several and compound "
            "taxes per line, exempt customers, zero-rated categories, and the VAT treatment "
            "(reverse charge, intra-community supply, export, out of scope) decided from the "
            "seller and the customer; every calculation kept in the history."
        ),
        package="tax-service",
        routers=[router],
        domain_errors=DOMAIN_ERRORS,
        migrations_dir=MIGRATIONS_DIR,
        wire=wire,
        load_samples=_load_samples,  # no subscriptions: this service only publishes
        openapi_tags=[
            {"name": "calculations", "description": "tax calculations and their history"},
            {"name": "rules", "description": "tax rules (admin scope to change)"},
        ],
    )


def create_app(
    settings: ServiceSettings | None = None,
    platform: EmbeddedPlatform | None = None,
    options: TaxOptions | None = None,
) -> FastAPI:
    return build_app(service_spec(options), settings, platform)
