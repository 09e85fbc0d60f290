"""The creation's answer is written from the domain invoice (entrypoints.invoice_json), not
through InvoiceOut, which stays its documented schema: the two must give the same bytes for
any invoice, or the API would answer what its OpenAPI does not say."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_common.web import model_response
from invoice_service.domain.model import CustomerKind, Invoice, PostalAddress
from invoice_service.entrypoints.invoice_json import invoice_json
from invoice_service.entrypoints.invoice_response_schemas import InvoiceOut

from .conftest import invoice_body
from .test_invoice_pdf_languages import _line, issued


def _same(invoice: Invoice) -> bytes:
    body = invoice_json(invoice)
    assert body == model_response(InvoiceOut.of(invoice)).body
    return body


async def _stored(api: Any, invoice_id: str) -> Invoice:
    async with api.app.state.deps.uow("acme") as uow:
        invoice = await uow.invoices.get(invoice_id)
    assert invoice is not None
    return invoice


async def test_invoices_the_api_makes_in_every_status(api_any_db: Any) -> None:
    api = api_any_db
    bodies = [
        invoice_body(),
        invoice_body(coupon_codes=["WELCOME10", "FIVEOFF"], memo='"quoted" \\ ünïcødé 🧾'),
        invoice_body(price_mode="inclusive", language="de-ch", series="EXP"),
        invoice_body(
            customer={
                "id": "c-qc",
                "type": "premium",
                "jurisdiction": {"country": "CA", "region": "QC"},
            },
            lines=[{"description": "Widget", "quantity": "2", "unit_price": "100.00"}],
        ),
        invoice_body(
            lines=[
                {"description": "Zero", "quantity": "3", "unit_price": "0.00", "category": "zero"}
            ]
        ),
    ]
    ids = []
    for body in bodies:
        created = await api.create(body)
        assert created.status_code == 201, created.text
        assert created.content == _same(await _stored(api, created.json()["id"]))
        ids.append(created.json()["id"])
    headers = api.headers()
    await api.client.post(f"/v1/invoices/{ids[0]}/finalize", headers=headers)
    await api.client.post(f"/v1/invoices/{ids[1]}/finalize", headers=headers)
    await api.client.post(f"/v1/invoices/{ids[1]}/mark-uncollectible", headers=headers)
    await api.client.post(f"/v1/invoices/{ids[2]}/void", json={"reason": "dup"}, headers=headers)
    for invoice_id in ids:
        _same(await _stored(api, invoice_id))


def test_an_issued_invoice_with_a_seller_payments_and_a_postal_address() -> None:
    invoice = issued(
        [_line(1, "100.00", "0.19"), _line(2, "10.00", "0.07", "reduced", "AA")], language="fr"
    )
    invoice.customer = dataclasses.replace(
        invoice.customer,
        kind=CustomerKind.BUSINESS,
        postal_address=PostalAddress(
            "FR", ("1 rue de la Paix", "Bât. B"), city="Paris", postcode="75002"
        ),
        buyer_reference="PO-7",
        location_country="FR",
    )
    at = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    invoice.apply_payment(payment_id="p-1", amount=D("50.00"), currency="EUR", at=at)
    invoice.apply_payment(payment_id="p-2", amount=D("5.00"), currency="USD", at=at)
    body = _same(invoice)
    assert b'"seller":{' in body and b'"postal_address":{"street":["1 rue de la Paix"' in body


offsets = st.timedeltas(min_value=-timedelta(hours=23), max_value=timedelta(hours=23))
datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1), timezones=st.builds(timezone, offsets) | st.just(UTC)
)
# Spellings a Decimal may have: exponents, trailing zeros, signed zeros.
amounts = st.decimals(min_value=0, max_value=D(10**8), allow_nan=False) | st.sampled_from(
    [D("1E+2"), D("-0.00"), D("0E-7"), D("12.500")]
)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=30),
    optional=st.none() | st.text(max_size=30),
    at=datetimes,
    amount=amounts,
)
def test_any_text_time_and_amount_spelling(
    text: str, optional: str | None, at: datetime, amount: D
) -> None:
    line = dataclasses.replace(_line(1, "100.00", "0.19"), description=text, unit_price=amount)
    invoice = issued([line], language=None)
    invoice.customer = dataclasses.replace(invoice.customer, name=text, email=optional)
    invoice.memo = optional
    invoice.created_at = invoice.updated_at = at
    invoice.tax_treatment = text
    _same(invoice)
