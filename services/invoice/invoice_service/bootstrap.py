"""The composition root: the one place that chooses adapters and wires them to the use cases.

uvicorn invoice_service.bootstrap:create_app --factory --port 8003
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing_common.lifecycle import ServiceSpec, Wiring, build_app, migrations_beside
from billing_common.problems import problem_response
from billing_common.runtime import EmbeddedPlatform, ServiceContext
from billing_common.settings import ServiceSettings
from invoice_service.adapters.einvoice.writer import EN16931Writer
from invoice_service.adapters.html import Seller
from invoice_service.adapters.pdf import LocalDocuments, ProcessPoolRenderer, local_documents
from invoice_service.adapters.peers import InvokerDiscountClient, InvokerTaxClient
from invoice_service.adapters.pending_creations_repository import SqlAbandonedCreations
from invoice_service.adapters.settlement_units_of_work import SettlementUnitsOfWork
from invoice_service.adapters.unit_of_work import uow_factory
from invoice_service.domain.errors import (
    ConcurrentModification,
    CouponNotApplicable,
    CreationAbandoned,
    CreditExceedsInvoiced,
    CreditNoteNotFound,
    IdempotencyConflict,
    InvalidInvoice,
    InvalidSeller,
    InvalidTransition,
    InvoiceNotCreditable,
    InvoiceNotFound,
    PdfRenderBusy,
    PdfRenderTimeout,
    PdfUnavailable,
    PeerContractViolation,
    PeerRejected,
    SellerInactive,
    SellerInUse,
    SellerNotFound,
    UnsupportedLanguage,
)
from invoice_service.entrypoints.api import router
from invoice_service.entrypoints.consumers import subscribe_all
from invoice_service.entrypoints.credit_notes_api import router as credit_notes_router
from invoice_service.entrypoints.einvoice_api import router as einvoice_router
from invoice_service.entrypoints.sellers_api import router as sellers_router
from invoice_service.service_layer.creation import release_abandoned
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.documents import DocumentServices, TenantRenderSlots
from invoice_service.service_layer.einvoices import EInvoiceDataMissing, EInvoiceNotAvailable
from invoice_service.service_layer.sellers import ensure_sample_seller

SERVICE = "invoice"
MIGRATIONS_DIR = migrations_beside(__file__)

DOMAIN_ERRORS: dict[type[Exception], int] = {
    InvoiceNotFound: 404,
    InvalidTransition: 409,
    IdempotencyConflict: 409,
    ConcurrentModification: 409,
    CreationAbandoned: 409,
    InvalidInvoice: 422,
    UnsupportedLanguage: 422,
    CouponNotApplicable: 422,
    PeerRejected: 422,
    PeerContractViolation: 502,
    PdfUnavailable: 503,
    PdfRenderTimeout: 503,
    PdfRenderBusy: 503,
    SellerNotFound: 404,
    SellerInUse: 409,
    SellerInactive: 422,
    InvalidSeller: 422,
    CreditNoteNotFound: 404,
    InvoiceNotCreditable: 409,
    CreditExceedsInvoiced: 422,
    EInvoiceNotAvailable: 409,
    EInvoiceDataMissing: 422,
}


class SellerSettings(BaseSettings):
    """Who issues the invoices (printed on every document): INVOICE_SELLER_NAME etc."""

    model_config = SettingsConfigDict(env_prefix="INVOICE_SELLER_", extra="ignore")

    name: str = "Billing Platform Demo Ltd."
    address: str = "1 Example Street\n10115 Berlin\nGermany"
    tax_id: str | None = "DE000000000"
    email: str | None = "billing@example.com"

    def to_seller(self) -> Seller:
        return Seller(self.name, self.address.replace("\\n", "\n"), self.tax_id, self.email)


class PdfSettings(BaseSettings):
    """How PDFs are rendered: INVOICE_PDF_WORKERS etc."""

    model_config = SettingsConfigDict(env_prefix="INVOICE_PDF_", extra="ignore")

    # Worker processes rendering PDFs; 0 renders in this process (in a thread, one at a time).
    workers: int = Field(default=2, ge=0, le=32)
    # A render running longer is stopped (its worker replaced) and answered 503.
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Renders of one tenant at once; a further request waits for a slot up to the timeout.
    per_tenant: int = Field(default=1, ge=1, le=32)

    def renderer(
        self, local: LocalDocuments, seller: Seller
    ) -> LocalDocuments | ProcessPoolRenderer:
        if self.workers == 0:
            return local
        # The workers write the documents from the same template files and catalogs.
        return ProcessPoolRenderer(
            local.invoices.stylesheet,
            seller=seller,
            workers=self.workers,
            timeout_seconds=self.timeout_seconds,
        )


class CreationSettings(BaseSettings):
    """INVOICE_ABANDON_CREATION_AFTER_SECONDS: how old a creation that redeemed a discount
    but stored no invoice must be before its redemption is given back (well above the
    longest a request can take); INVOICE_SWEEP_SECONDS: how often that is checked."""

    model_config = SettingsConfigDict(env_prefix="INVOICE_", extra="ignore")

    abandon_creation_after_seconds: float = 600.0
    sweep_seconds: float = 60.0


async def _sweep_abandoned_creations(ctx: ServiceContext, deps: Dependencies) -> None:
    abandoned = SqlAbandonedCreations(ctx.sessions)
    options = CreationSettings()
    while True:
        await asyncio.sleep(options.sweep_seconds)
        try:
            await release_abandoned(
                deps,
                abandoned,
                older_than=timedelta(seconds=options.abandon_creation_after_seconds),
            )
        except Exception as exc:  # noqa: BLE001 - the sweeper must outlive any failure
            logger.bind(service=SERVICE).warning("sweeping abandoned creations failed: {}", exc)


async def _load_samples(ctx: ServiceContext, deps: Dependencies) -> int:
    """The demo tenant's sample seller, so the seed invoices name who issued them."""
    from invoice_service import samples  # deferred: its seller's IBAN check loads schwifty

    added = await ensure_sample_seller(samples.SAMPLE_TENANT, samples.SAMPLE_SELLER, deps)
    return 1 if added else 0


async def _on_peer_rejected(request: Request, exc: Exception) -> JSONResponse:
    """Pass a peer's refusal on as 422 under the peer's own problem type (for example
    /problems/unknown-jurisdiction), with its detail."""
    assert isinstance(exc, PeerRejected)
    slug = (exc.peer_problem_type or "").rsplit("/", 1)[-1] or "peer-rejected"
    if slug == "about:blank":
        slug = "peer-rejected"
    return problem_response(
        request,
        422,
        slug.replace("-", " ").capitalize(),
        str(exc),
        problem_type=slug,
        extensions=exc.problem_extensions,
    )


def service_spec() -> ServiceSpec[Dependencies]:
    seller = SellerSettings().to_seller()
    pdf_settings = PdfSettings()

    async def wire(wiring: Wiring) -> Dependencies:
        ctx = wiring.ctx
        # Both templates over one set of catalogs. With workers, the templates here only name
        # their version (ETags); the documents, Factur-X PDFs included, are written in the
        # worker processes (INVOICE_PDF_WORKERS=0: by these, in this process).
        local = local_documents(seller)
        html, credit_note_html = local.invoices, local.credit_notes
        renderer = pdf_settings.renderer(local, seller)
        if isinstance(renderer, ProcessPoolRenderer):
            wiring.on_close(lambda: asyncio.to_thread(renderer.close))
        einvoice_writer = EN16931Writer(renderer)
        wiring.state.credit_note_html = credit_note_html
        wiring.state.einvoice_writer = einvoice_writer
        wiring.state.documents = DocumentServices(  # read by entrypoints/deps.py
            html=html,
            renderer=renderer,
            cache=ctx.state,
            slots=TenantRenderSlots(pdf_settings.per_tenant, pdf_settings.timeout_seconds),
        )
        uow = uow_factory(ctx.sessions, ctx.relay)
        settlement = SettlementUnitsOfWork.for_engine(ctx.engine, ctx.relay, uow)
        if settlement is not None:
            wiring.on_close(settlement.close)
            await settlement.warm()
        return Dependencies(
            uow=uow,
            tax=InvokerTaxClient(ctx.invoker, ctx.tokens),
            discounts=InvokerDiscountClient(ctx.invoker, ctx.tokens),
            einvoices=einvoice_writer,
            settlement_uow=settlement,
        )

    return ServiceSpec(
        name=SERVICE,
        title="Invoice service",
        description=(
            "Invoices priced by the discount and tax services (discount before tax), a "
            "checked status machine with history, gapless numbers per series, payments "
            "applied from events, and PDF documents."
        ),
        package="invoice-service",
        routers=[router, sellers_router, credit_notes_router, einvoice_router],
        domain_errors=DOMAIN_ERRORS,
        migrations_dir=MIGRATIONS_DIR,
        wire=wire,
        subscribe=subscribe_all,
        load_samples=_load_samples,
        background=[_sweep_abandoned_creations],
        openapi_tags=[
            {"name": "invoices", "description": "create, read, change, render"},
            {"name": "sellers", "description": "the tenant's legal entities that issue invoices"},
            {"name": "credit notes", "description": "corrections of issued invoices"},
            {"name": "customers", "description": "balances and e-invoice settings"},
        ],
        exception_handlers={PeerRejected: _on_peer_rejected},
    )


def create_app(
    settings: ServiceSettings | None = None, platform: EmbeddedPlatform | None = None
) -> FastAPI:
    return build_app(service_spec(), settings, platform)
