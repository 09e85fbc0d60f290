"""HTTP API: /v1/invoices. Tenant and actor come from the bearer token, never the body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from billing_common.api_auth import requires
from billing_common.cursors import decode_timestamp_and_id
from billing_common.idempotency import IDEMPOTENCY_KEY, check_idempotency_key
from billing_common.openapi import idempotency_key_header
from billing_common.web import (
    DirectJsonRoute,
    StrictJsonRoute,
    accepted,
    first_header,
)
from billing_common.wire import DateTimeFilter
from invoice_service.domain.model import InvoiceStatus
from invoice_service.entrypoints.deps import Deps, Documents, Reader, Writer
from invoice_service.entrypoints.invoice_json import invoice_json
from invoice_service.entrypoints.invoice_request_schemas import InvoiceCreate, ReasonIn
from invoice_service.entrypoints.invoice_response_schemas import (
    InvoiceOut,
    InvoicePageOut,
    InvoiceSummaryOut,
)
from invoice_service.service_layer import creation, documents, queries, status_changes
from invoice_service.service_layer.documents import Document
from invoice_service.service_layer.ports import InvoiceQuery

router = APIRouter(prefix="/v1/invoices", tags=["invoices"], route_class=StrictJsonRoute)

# The kernel's rule, 128 characters at most: the key is reused inside the discount
# redemption's key ("invoice:<tenant>:<key>"), which allows 255.
IDEMPOTENCY_KEY_MAX = 128

InvoiceId = Annotated[str, Path(min_length=1, max_length=64, description="invoice id")]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    403: {"description": "the token lacks the scope"},
    404: {"description": "no such invoice for this tenant"},
}
_CHANGE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **_PROBLEMS,
    409: {"description": "invalid status transition"},
}


def _utc(value: datetime | None) -> datetime | None:
    """Query datetimes without an offset are taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_WRITER = requires("invoice:write")
_IDEMPOTENCY_HEADER = IDEMPOTENCY_KEY.lower().encode("latin-1")


class _CreationRoute(DirectJsonRoute):
    """The creation, answered directly (billing_common.web.DirectJsonRoute) when the token
    has the scope and the schema accepts the body; anything else is left to the route's
    FastAPI handler, which gets the body again, so every 4xx problem is the one it always
    gave. The Idempotency-Key is read as FastAPI reads the header (Starlette's Headers.get:
    the first raw header of the lower-case name) and checked in the endpoint as before,
    after the token and the body, so a missing or malformed key is the same 400 problem."""

    async def answer_well_formed(self, request: Request, document: Any) -> Response | None:
        if (found := await accepted(request, document, _WRITER, InvoiceCreate)) is None:
            return None
        principal, body = found
        key = first_header(request, _IDEMPOTENCY_HEADER)
        return await create_invoice(body, principal, request.app.state.deps, key)


async def create_invoice(
    body: InvoiceCreate,
    principal: Writer,
    deps: Deps,
    idempotency_key: Annotated[
        str | None,
        idempotency_key_header(
            "Required: an invoice is created once per key", max_length=IDEMPOTENCY_KEY_MAX
        ),
    ] = None,
) -> Response:
    idempotency_key = check_idempotency_key(
        idempotency_key, max_length=IDEMPOTENCY_KEY_MAX, why="an invoice is created once per key"
    )
    command = body.to_command(
        tenant=principal.tenant, actor=principal.subject, idempotency_key=idempotency_key
    )
    result = await creation.create_invoice(command, deps)
    # The hot path: written from the invoice, the bytes of InvoiceOut (`response_model`).
    # The headers in the order FastAPI gave them from the endpoint's `Response` parameter.
    answer = Response(
        invoice_json(result.invoice),
        status_code=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        media_type="application/json",
    )
    if not result.created:
        answer.headers["Idempotent-Replayed"] = "true"
    answer.headers["Location"] = f"/v1/invoices/{result.invoice.id}"
    return answer


router.add_api_route(
    "",
    create_invoice,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=InvoiceOut,
    summary="Create a draft invoice (discount, then tax on the discounted lines)",
    responses={
        200: {"model": InvoiceOut, "description": "replay: this key was seen with this body"},
        409: {"description": "Idempotency-Key reused with another body"},
        422: {
            "description": "invalid request, unknown jurisdiction, coupon not applicable, "
            "unsupported language (the problem lists `supported_languages`)"
        },
        502: {"description": "a peer service answered outside its contract"},
        503: {"description": "the tax or discount service is unavailable; nothing was written"},
        **_PROBLEMS,
    },
    route_class_override=_CreationRoute,
)


@router.get(
    "",
    response_model=InvoicePageOut,
    summary="List invoices, newest first, with filters and cursor pagination",
    responses={422: {"description": "invalid filter"}, **_PROBLEMS},
)
async def list_invoices(
    principal: Reader,
    deps: Deps,
    status_filter: Annotated[InvoiceStatus | None, Query(alias="status")] = None,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
    created_from: Annotated[DateTimeFilter | None, Query(description="inclusive")] = None,
    created_to: Annotated[DateTimeFilter | None, Query(description="exclusive")] = None,
    issued_from: Annotated[DateTimeFilter | None, Query(description="inclusive")] = None,
    issued_to: Annotated[DateTimeFilter | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> InvoicePageOut:
    query = InvoiceQuery(
        status=status_filter,
        customer_id=customer_id,
        created_from=_utc(created_from),
        created_to=_utc(created_to),
        issued_from=_utc(issued_from),
        issued_to=_utc(issued_to),
        limit=limit,
        after=decode_timestamp_and_id(cursor) if cursor else None,
    )
    page = await queries.list_invoices(principal.tenant, query, deps)
    return InvoicePageOut(
        items=[InvoiceSummaryOut.of(item) for item in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{invoice_id}",
    response_model=InvoiceOut,
    summary="One invoice with lines, taxes, discounts, payments and history",
    responses=_PROBLEMS,
)
async def get_invoice(invoice_id: InvoiceId, principal: Reader, deps: Deps) -> InvoiceOut:
    details = await queries.get_invoice(principal.tenant, invoice_id, deps)
    return InvoiceOut.of_details(details)


@router.post(
    "/{invoice_id}/finalize",
    response_model=InvoiceOut,
    summary="Issue a draft: assigns the next number of its series",
    responses=_CHANGE_PROBLEMS,
)
async def finalize_invoice(invoice_id: InvoiceId, principal: Writer, deps: Deps) -> InvoiceOut:
    invoice = await status_changes.finalize_invoice(
        principal.tenant, invoice_id, principal.subject, deps
    )
    return InvoiceOut.of(invoice)


@router.post(
    "/{invoice_id}/void",
    response_model=InvoiceOut,
    summary="Void a draft, or an issued invoice on which nothing is paid",
    responses=_CHANGE_PROBLEMS,
)
async def void_invoice(
    invoice_id: InvoiceId, principal: Writer, deps: Deps, body: ReasonIn | None = None
) -> InvoiceOut:
    invoice = await status_changes.void_invoice(
        principal.tenant, invoice_id, body.reason if body else None, principal.subject, deps
    )
    return InvoiceOut.of(invoice)


@router.post(
    "/{invoice_id}/mark-uncollectible",
    response_model=InvoiceOut,
    summary="Write off an issued or partially paid invoice",
    responses=_CHANGE_PROBLEMS,
)
async def mark_uncollectible(
    invoice_id: InvoiceId, principal: Writer, deps: Deps, body: ReasonIn | None = None
) -> InvoiceOut:
    invoice = await status_changes.mark_uncollectible(
        principal.tenant, invoice_id, body.reason if body else None, principal.subject, deps
    )
    return InvoiceOut.of(invoice)


def _document_response(document: Document, media_type: str, filename: str) -> Response:
    headers = {"ETag": document.etag, "Cache-Control": "private, no-cache"}
    if document.content is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    headers["Content-Disposition"] = f'inline; filename="{filename}"'
    return Response(document.content, media_type=media_type, headers=headers)


def _filename(document: Document, extension: str) -> str:
    return f"{document.file_stem}.{extension}"


@router.get(
    "/{invoice_id}/html",
    response_class=Response,
    summary="The invoice document as HTML (the PDF's source)",
    responses={
        200: {"content": {"text/html": {}}},
        304: {"description": "If-None-Match matched the current ETag"},
        **_PROBLEMS,
    },
)
async def invoice_html(
    invoice_id: InvoiceId,
    principal: Reader,
    deps: Deps,
    services: Documents,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    document = await documents.invoice_html(
        principal.tenant, invoice_id, deps, services, if_none_match=if_none_match
    )
    return _document_response(document, "text/html; charset=utf-8", _filename(document, "html"))


@router.get(
    "/{invoice_id}/pdf",
    response_class=Response,
    summary="The invoice as PDF (WeasyPrint), cached per invoice version, with ETag",
    responses={
        200: {"content": {"application/pdf": {}}},
        304: {"description": "If-None-Match matched the current ETag"},
        503: {
            "description": "PDF rendering is not available on this host, ran past its time "
            "limit, or this tenant's renders are all busy (Retry-After says when to retry)"
        },
        **_PROBLEMS,
    },
)
async def invoice_pdf(
    invoice_id: InvoiceId,
    principal: Reader,
    deps: Deps,
    services: Documents,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    document = await documents.invoice_pdf(
        principal.tenant, invoice_id, deps, services, if_none_match=if_none_match
    )
    return _document_response(document, "application/pdf", _filename(document, "pdf"))
