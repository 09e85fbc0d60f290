from decimal import Decimal

import pytest
from pydantic import ValidationError

from billing_common import tracing
from billing_common.event_schemas import INVOICE_CREATED, InvoiceCreated, TaxCalculated
from billing_common.events import CloudEvent, new_event, registered_event_types


def _created() -> InvoiceCreated:
    return InvoiceCreated(
        invoice_id="inv_1",
        customer_id="c1",
        currency="EUR",
        total=Decimal("119.00"),
        amount_due=Decimal("119.00"),
        status="draft",
    )


def test_envelope_is_cloudevents_1_0_with_decimal_strings_and_trace_context() -> None:
    tracing.bind(None)
    event = new_event(
        source="/billing/invoice",
        event_type=INVOICE_CREATED,
        data=_created(),
        subject="inv_1",
        tenant="acme",
    )
    wire = event.model_dump(mode="json")
    assert wire["specversion"] == "1.0"
    assert wire["type"] == "billing.invoice.created.v1"
    assert wire["data"]["total"] == "119.00"
    assert wire["traceparent"] == tracing.current_traceparent()
    back = CloudEvent.from_json(event.to_json())
    assert back == event
    assert back.data_as(InvoiceCreated).total == Decimal("119.00")


def test_data_must_match_the_registered_schema() -> None:
    with pytest.raises(TypeError):
        new_event(
            source="/x",
            event_type=INVOICE_CREATED,
            data=TaxCalculated(
                calculation_id="c",
                currency="EUR",
                price_mode="exclusive",
                total_net=Decimal(1),
                total_tax=Decimal(0),
                total_gross=Decimal(1),
                line_count=1,
            ),
        )
    with pytest.raises(LookupError):
        new_event(source="/x", event_type="billing.unknown.v1", data=_created())


def test_only_spec_version_1_0_is_accepted() -> None:
    with pytest.raises(ValidationError):
        CloudEvent(source="/x", type="t", specversion="0.3")


def test_every_billing_event_type_is_registered() -> None:
    assert {
        "billing.tax.calculated.v1",
        "billing.discount.applied.v1",
        "billing.invoice.created.v1",
        "billing.invoice.finalized.v1",
        "billing.invoice.paid.v1",
        "billing.invoice.voided.v1",
        "billing.payment.received.v1",
        "billing.payment.failed.v1",
        "billing.payment.refunded.v1",
    } <= set(registered_event_types())


def test_traceparent_parsing() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert tracing.parse_trace_id(parent) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.parse_trace_id("garbage") is None
    child = tracing.child_traceparent(parent)
    assert tracing.parse_trace_id(child) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child != parent
