"""The sample seller of tenant "demo" (loaded on first start of the embedded runtime, like the
tax and discount samples): the default seller of the demo's invoices. Its id is fixed so it
is the same on every machine; the VAT id and IBAN are well-known valid test numbers. Built as
stored (`Seller.stored`, `BankAccount.stored`), so a start that adds it loads neither
python-stdnum nor schwifty (issue 11, RSS); a test checks that they pass those checks."""

from __future__ import annotations

from datetime import UTC, datetime

from invoice_service.domain.sellers import BankAccount, Seller, SellerAddress

SAMPLE_TENANT = "demo"
_SINCE = datetime(2024, 1, 1, tzinfo=UTC)

SAMPLE_SELLER = Seller.stored(
    id="5e11e700-0000-4000-8000-000000000001",
    tenant_id=SAMPLE_TENANT,
    legal_name="Billing Platform Demo GmbH",
    address=SellerAddress(
        country="DE", city="Berlin", postcode="10115", street=("Invalidenstraße 1",)
    ),
    created_at=_SINCE,
    updated_at=_SINCE,
    vat_id="DE136695976",
    email="billing@demo.example",
    phone="+49 30 1234567",
    bank_account=BankAccount.stored("DE89370400440532013000", "COBADEFFXXX"),
    default_currency="EUR",
    language="en",
    invoice_series="INV",
    credit_note_series="CN",
    is_default=True,
)
