"""E-invoices over HTTP: GET /v1/invoices/{id}/einvoice and /v1/credit-notes/{id}/einvoice
(the document as Factur-X, XRechnung or Peppol UBL), and the customer's default format
(GET /v1/customers/{id}/einvoice-settings; PUT with `invoice:admin`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from billing_common.web import StrictJsonRoute
from invoice_service.domain.einvoicing import DefaultEInvoiceFormat
from invoice_service.entrypoints.deps import Admin, Deps, EInvoices, Reader
from invoice_service.entrypoints.einvoice_schemas import (
    CustomerEInvoiceSettingsIn,
    CustomerEInvoiceSettingsOut,
)
from invoice_service.service_layer.einvoices import (
    EInvoiceDocument,
    EInvoiceFormat,
    credit_note_einvoice,
    customer_settings,
    einvoice,
    set_customer_settings,
)

router = APIRouter(tags=["invoices"], route_class=StrictJsonRoute)

FORMATS = (
    "`facturx`: PDF/A-3b with `factur-x.xml` embedded (CII, Factur-X 1.0 profile EN 16931; "
    "`application/pdf`). `xrechnung`: XRechnung 3.0 CII XML (needs the buyer reference "
    "BT-10, the buyer's postal city and postcode, the seller's contact and bank account; "
    "`application/xml`). `ubl`: Peppol BIS Billing 3.0 UBL XML (needs the buyer reference "
    "and both parties' e-mail; `application/xml`)."
)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the e-invoice (a file download)",
        "content": {
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            "application/xml": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    401: {"description": "missing or invalid bearer token"},
    403: {"description": "the token lacks the scope"},
    422: {
        "description": "the document lacks data the format requires: `missing` lists each "
        "field with its business term and rule, `rules` the rule ids "
        "(/problems/e-invoice-data-missing); or an unknown format"
    },
    503: {"description": "PDF rendering is not available on this host (facturx)"},
}
FormatQuery = Annotated[EInvoiceFormat, Query(description="the e-invoice format")]
BuyerReferenceQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="BT-10 for this download; default: the buyer reference the invoice keeps",
    ),
]


def _download(document: EInvoiceDocument) -> Response:
    return Response(
        document.content,
        media_type=document.media_type,
        headers={"Content-Disposition": f'attachment; filename="{document.filename}"'},
    )


@router.get(
    "/v1/invoices/{invoice_id}/einvoice",
    response_class=Response,
    summary="The finalized invoice as an EN 16931 e-invoice (Factur-X, XRechnung, Peppol UBL)",
    description=FORMATS,
    responses={
        **_RESPONSES,
        404: {"description": "no such invoice for this tenant"},
        409: {"description": "the invoice is a draft or void: no e-invoice exists for it"},
    },
)
async def invoice_einvoice(
    invoice_id: Annotated[str, Path(min_length=1, max_length=64, description="invoice id")],
    principal: Reader,
    deps: Deps,
    writer: EInvoices,
    format: FormatQuery,
    buyer_reference: BuyerReferenceQuery = None,
) -> Response:
    document = await einvoice(
        principal.tenant, invoice_id, format, deps, writer, buyer_reference=buyer_reference
    )
    return _download(document)


@router.get(
    "/v1/credit-notes/{credit_note_id}/einvoice",
    response_class=Response,
    tags=["credit notes"],
    summary="The credit note as an EN 16931 e-invoice (type 381, BT-25 its invoice)",
    description=FORMATS
    + " For `ubl` the document is a UBL 2.1 **CreditNote**; for the CII formats a "
    "CrossIndustryInvoice with type code 381.",
    responses={**_RESPONSES, 404: {"description": "no such credit note for this tenant"}},
)
async def credit_note_einvoice_download(
    credit_note_id: Annotated[str, Path(min_length=1, max_length=64, description="credit note id")],
    principal: Reader,
    deps: Deps,
    writer: EInvoices,
    format: FormatQuery,
    buyer_reference: BuyerReferenceQuery = None,
) -> Response:
    document = await credit_note_einvoice(
        principal.tenant, credit_note_id, format, deps, writer, buyer_reference=buyer_reference
    )
    return _download(document)


CustomerId = Annotated[str, Path(min_length=1, max_length=128, description="customer id")]
_SETTINGS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    403: {"description": "the token lacks the scope"},
}


@router.get(
    "/v1/customers/{customer_id}/einvoice-settings",
    response_model=CustomerEInvoiceSettingsOut,
    tags=["customers"],
    summary="The customer's default e-invoice format (none when never set)",
    responses=_SETTINGS_RESPONSES,
)
async def get_customer_einvoice_settings(
    customer_id: CustomerId, principal: Reader, deps: Deps
) -> CustomerEInvoiceSettingsOut:
    return CustomerEInvoiceSettingsOut.of(
        await customer_settings(principal.tenant, customer_id, deps)
    )


@router.put(
    "/v1/customers/{customer_id}/einvoice-settings",
    response_model=CustomerEInvoiceSettingsOut,
    tags=["customers"],
    summary="Set the customer's default e-invoice format (admin)",
    description=(
        "Every invoice finalized for the customer afterwards is offered with an e-invoice in "
        "this format besides its PDF, if it has what the format needs; the invoice's "
        "`documents` and the billing.invoice.finalized.v1 event name it. Invoices issued "
        "before keep what they were offered with."
    ),
    responses={**_SETTINGS_RESPONSES, 422: {"description": "unknown format"}},
)
async def put_customer_einvoice_settings(
    customer_id: CustomerId, body: CustomerEInvoiceSettingsIn, principal: Admin, deps: Deps
) -> CustomerEInvoiceSettingsOut:
    settings = await set_customer_settings(
        principal.tenant,
        customer_id,
        DefaultEInvoiceFormat(body.default_format),
        principal.subject,
        deps,
    )
    return CustomerEInvoiceSettingsOut.of(settings)
