"""Events the kernel's outbox and relay tests write and publish."""

from decimal import Decimal

from billing_common.event_schemas import INVOICE_CREATED, InvoiceCreated
from billing_common.events import CloudEvent, new_event


def invoice_created(invoice_id: str) -> CloudEvent:
    return new_event(
        source="/billing/test",
        event_type=INVOICE_CREATED,
        subject=invoice_id,
        tenant="t1",
        data=InvoiceCreated(
            invoice_id=invoice_id,
            customer_id="c",
            currency="EUR",
            total=Decimal("1.00"),
            amount_due=Decimal("1.00"),
            status="draft",
        ),
    )
