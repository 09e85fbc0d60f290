"""HTTP API of credit notes: issue one for an invoice, read them, render one as PDF, and the
customer balance they credit. Tenant and actor come from the bearer token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Response, status

from billing_common.idempotency import check_idempotency_key
from billing_common.openapi import idempotency_key_header
from billing_common.web import StrictJsonRoute
from invoice_service.entrypoints.api import IDEMPOTENCY_KEY_MAX
from invoice_service.entrypoints.credit_note_schemas import (
    CreditNoteCreate,
    CreditNoteListOut,
    CreditNoteOut,
    CustomerBalanceOut,
)
from invoice_service.entrypoints.deps import CreditNoteDocuments, Deps, Documents, Reader, Writer
from invoice_service.service_layer import credit_notes
from invoice_service.service_layer.credit_note_documents import credit_note_pdf

router = APIRouter(tags=["credit notes"], route_class=StrictJsonRoute)

InvoiceId = Annotated[str, Path(min_length=1, max_length=64, description="invoice id")]
CreditNoteId = Annotated[str, Path(min_length=1, max_length=64, description="credit note id")]
CustomerId = Annotated[str, Path(min_length=1, max_length=128, description="customer id")]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    403: {"description": "the token lacks the scope"},
    404: {"description": "no such invoice or credit note for this tenant"},
}


@router.post(
    "/v1/invoices/{invoice_id}/credit-notes",
    status_code=status.HTTP_201_CREATED,
    response_model=CreditNoteOut,
    summary="Credit an issued invoice, in full or in part (by line, quantity or amount)",
    responses={
        200: {"model": CreditNoteOut, "description": "replay: this key was seen with this body"},
        409: {
            "description": "the invoice is a draft or void (invoice-not-creditable), or the "
            "Idempotency-Key was used with another body"
        },
        422: {
            "description": "more than was invoiced and not yet credited, or more than can be "
            "applied or refunded (credit-exceeds-invoiced)"
        },
        **_PROBLEMS,
    },
)
async def issue_credit_note(
    invoice_id: InvoiceId,
    body: CreditNoteCreate,
    response: Response,
    principal: Writer,
    deps: Deps,
    idempotency_key: Annotated[
        str | None,
        idempotency_key_header(
            "Required: a credit note is issued once per key", max_length=IDEMPOTENCY_KEY_MAX
        ),
    ] = None,
) -> CreditNoteOut:
    command = body.to_command(
        tenant=principal.tenant,
        actor=principal.subject,
        invoice_id=invoice_id,
        idempotency_key=check_idempotency_key(
            idempotency_key,
            max_length=IDEMPOTENCY_KEY_MAX,
            why="a credit note is issued once per key",
        ),
    )
    result = await credit_notes.issue_credit_note(command, deps)
    if not result.created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/credit-notes/{result.credit_note.id}"
    return CreditNoteOut.of(result.credit_note)


@router.get(
    "/v1/invoices/{invoice_id}/credit-notes",
    response_model=CreditNoteListOut,
    summary="The invoice's credit notes, oldest first",
    responses=_PROBLEMS,
)
async def list_credit_notes(
    invoice_id: InvoiceId, principal: Reader, deps: Deps
) -> CreditNoteListOut:
    notes = await credit_notes.credit_notes_of(principal.tenant, invoice_id, deps)
    return CreditNoteListOut(items=[CreditNoteOut.of(note) for note in notes])


@router.get(
    "/v1/credit-notes/{credit_note_id}",
    response_model=CreditNoteOut,
    summary="One credit note with its lines and taxes",
    responses=_PROBLEMS,
)
async def get_credit_note(
    credit_note_id: CreditNoteId, principal: Reader, deps: Deps
) -> CreditNoteOut:
    note = await credit_notes.get_credit_note(principal.tenant, credit_note_id, deps)
    return CreditNoteOut.of(note)


@router.get(
    "/v1/credit-notes/{credit_note_id}/pdf",
    response_class=Response,
    summary="The credit note as PDF (the invoices' renderer), with ETag",
    responses={
        200: {"content": {"application/pdf": {}}},
        304: {"description": "If-None-Match matched the current ETag"},
        503: {"description": "PDF rendering is unavailable or busy (Retry-After)"},
        **_PROBLEMS,
    },
)
async def get_credit_note_pdf(
    credit_note_id: CreditNoteId,
    principal: Reader,
    deps: Deps,
    documents: Documents,
    html: CreditNoteDocuments,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    etag, stem, pdf = await credit_note_pdf(
        principal.tenant, credit_note_id, deps, documents, html, if_none_match=if_none_match
    )
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if pdf is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    headers["Content-Disposition"] = f'inline; filename="{stem}.pdf"'
    return Response(pdf, media_type="application/pdf", headers=headers)


@router.get(
    "/v1/customers/{customer_id}/balance",
    response_model=CustomerBalanceOut,
    summary="The customer's balance from credit notes credited to it, per currency",
    responses=_PROBLEMS,
)
async def customer_balance(
    customer_id: CustomerId, principal: Reader, deps: Deps
) -> CustomerBalanceOut:
    balances = await credit_notes.customer_balance(principal.tenant, customer_id, deps)
    return CustomerBalanceOut(customer_id=customer_id, balances=balances)
