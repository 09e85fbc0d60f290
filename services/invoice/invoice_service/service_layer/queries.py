"""Read use cases: one invoice with everything about it, and the paginated list."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from datetime import datetime

from billing_common.wire import parse_aware_timestamp
from invoice_service.domain.errors import InvoiceError, InvoiceNotFound
from invoice_service.domain.model import Invoice, InvoiceSummary
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import InvoiceQuery, ReceivedEvent

MAX_PAGE_SIZE = 100


class InvalidCursor(InvoiceError):
    """The pagination cursor was not issued by this service (or was altered)."""

    def __init__(self) -> None:
        super().__init__("the cursor is not valid: pass next_cursor from a previous page as is")


@dataclass(frozen=True, slots=True)
class InvoiceDetails:
    invoice: Invoice
    received_events: list[ReceivedEvent]


@dataclass(frozen=True, slots=True)
class InvoicePage:
    items: list[InvoiceSummary]
    next_cursor: str | None


def encode_cursor(created_at: datetime, invoice_id: str) -> str:
    raw = json.dumps({"c": created_at.isoformat(), "i": invoice_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Opaque to clients: base64url JSON of the last row's (created_at, id)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at = parse_aware_timestamp(payload["c"])
        invoice_id = payload["i"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidCursor from exc
    if not isinstance(invoice_id, str):
        raise InvalidCursor
    return created_at, invoice_id


async def get_invoice(tenant: str, invoice_id: str, deps: Dependencies) -> InvoiceDetails:
    async with deps.uow(tenant) as unit:
        invoice = await unit.invoices.get(invoice_id)
        if invoice is None:
            raise InvoiceNotFound(invoice_id)
        received = await unit.received.for_reference(invoice_id)
    return InvoiceDetails(invoice, received)


async def list_invoices(tenant: str, query: InvoiceQuery, deps: Dependencies) -> InvoicePage:
    if not 1 <= query.limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    # One row more than asked tells whether another page exists.
    probe = replace(query, limit=query.limit + 1)
    async with deps.uow(tenant) as unit:
        rows = await unit.invoices.list(probe)
    items = rows[: query.limit]
    more = len(rows) > query.limit
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
    return InvoicePage(items, next_cursor)
