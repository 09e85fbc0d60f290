"""billing.invoice.finalized.v1 gained `documents` (e-invoices): an optional, additive field.
A payload from before it still parses, a consumer written before it still reads the new
payload, and the documents cross the wire as plain JSON."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from billing_common.event_schemas import INVOICE_FINALIZED, DocumentLink, InvoiceFinalized
from billing_common.events import CloudEvent, new_event

OLD_PAYLOAD = {
    "invoice_id": "inv_1",
    "number": "INV-000001",
    "customer_id": "c1",
    "currency": "EUR",
    "total": "119.00",
    "amount_due": "119.00",
    "due_date": "2026-12-31",
    "version": 2,
}
DOCUMENTS = [
    {"kind": "pdf", "href": "/v1/invoices/inv_1/pdf", "media_type": "application/pdf"},
    {
        "kind": "einvoice",
        "format": "facturx",
        "href": "/v1/invoices/inv_1/einvoice?format=facturx",
        "media_type": "application/pdf",
    },
]


def test_a_payload_from_before_documents_still_parses() -> None:
    data = InvoiceFinalized.model_validate(OLD_PAYLOAD)
    assert data.documents is None
    assert data.total == Decimal("119.00")


def test_an_old_consumer_reads_the_new_payload() -> None:
    class FinalizedAsBefore(InvoiceFinalized.__base__):  # type: ignore[name-defined,misc]
        """The schema as consumers written before `documents` know it."""

        invoice_id: str
        number: str
        customer_id: str
        currency: str
        total: Decimal
        amount_due: Decimal
        due_date: str | None = None
        version: int | None = None

    old = FinalizedAsBefore.model_validate({**OLD_PAYLOAD, "documents": DOCUMENTS})
    assert old.number == "INV-000001"  # the new member is ignored, nothing fails


def test_documents_cross_the_wire() -> None:
    event = new_event(
        source="/billing/invoice",
        event_type=INVOICE_FINALIZED,
        data=InvoiceFinalized.model_validate({**OLD_PAYLOAD, "documents": DOCUMENTS}),
        subject="inv_1",
        tenant="acme",
    )
    wire = event.model_dump(mode="json")
    assert wire["data"]["documents"][1] == DOCUMENTS[1]
    assert wire["data"]["documents"][0]["format"] is None
    back = CloudEvent.from_json(event.to_json()).data_as(InvoiceFinalized)
    assert back.documents == [DocumentLink.model_validate(d) for d in DOCUMENTS]


def test_a_document_needs_its_kind_and_href() -> None:
    with pytest.raises(ValidationError):
        InvoiceFinalized.model_validate({**OLD_PAYLOAD, "documents": [{"kind": "pdf"}]})
