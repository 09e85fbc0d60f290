"""GET /v1/invoices/{id}/einvoice: the finalized invoice as a structured e-invoice."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from billing_common.web import StrictJsonRoute
from invoice_service.entrypoints.deps import Deps, EInvoices, Reader
from invoice_service.service_layer.einvoices import EInvoiceFormat, einvoice

router = APIRouter(prefix="/v1/invoices", tags=["invoices"], route_class=StrictJsonRoute)


@router.get(
    "/{invoice_id}/einvoice",
    response_class=Response,
    summary="The finalized invoice as an EN 16931 e-invoice (Factur-X, XRechnung, Peppol UBL)",
    description=(
        "`facturx`: PDF/A-3b with `factur-x.xml` embedded (CII, Factur-X 1.0 profile "
        "EN 16931). `xrechnung`: XRechnung 3.0 CII XML (needs `buyer_reference`, the "
        "Leitweg-ID). `ubl`: Peppol BIS Billing 3.0 UBL XML (needs `buyer_reference`)."
    ),
    responses={
        200: {"content": {"application/pdf": {}, "application/xml": {}}},
        401: {"description": "missing or invalid bearer token"},
        403: {"description": "the token lacks the scope"},
        404: {"description": "no such invoice for this tenant"},
        409: {"description": "the invoice is a draft or void: no e-invoice exists for it"},
        422: {"description": "the invoice lacks data the format requires (`missing` lists it)"},
        503: {"description": "PDF rendering is not available on this host (facturx)"},
    },
)
async def invoice_einvoice(
    invoice_id: Annotated[str, Path(min_length=1, max_length=64, description="invoice id")],
    principal: Reader,
    deps: Deps,
    writer: EInvoices,
    format: Annotated[EInvoiceFormat, Query(description="the e-invoice format")],
    buyer_reference: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="BT-10: the buyer's reference"),
    ] = None,
) -> Response:
    document = await einvoice(
        principal.tenant, invoice_id, format, deps, writer, buyer_reference=buyer_reference
    )
    return Response(
        document.content,
        media_type=document.media_type,
        headers={"Content-Disposition": f'attachment; filename="{document.filename}"'},
    )
