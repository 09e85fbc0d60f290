"""Sellers in the domain: identifiers checked offline, the snapshot an invoice keeps."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from invoice_service.domain.errors import InvalidInvoice, InvalidSeller
from invoice_service.domain.model import (
    Customer,
    Invoice,
    InvoiceLine,
    PriceMode,
    TaxStatus,
)
from invoice_service.domain.sellers import (
    BankAccount,
    DocumentType,
    Seller,
    SellerAddress,
    SellerSnapshot,
    TaxRegistration,
    check_vat_id,
)

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
BERLIN = SellerAddress(country="de", city="Berlin", postcode="10115", street=("Hauptstr. 1",))


def seller(**changes: object) -> Seller:
    fields: dict[str, object] = {
        "id": "s-1",
        "tenant_id": "acme",
        "legal_name": "Muster GmbH",
        "address": BERLIN,
        "created_at": AT,
        "updated_at": AT,
        "vat_id": "DE 136 695 976",
        "bank_account": BankAccount("DE89 3704 0044 0532 0130 00", "COBADEFFXXX"),
        "invoice_series": "ms",
    }
    fields.update(changes)
    return Seller(**fields)  # type: ignore[arg-type]


def test_identifiers_are_normalised() -> None:
    s = seller()
    assert s.address.country == "DE"
    assert s.vat_id == "DE136695976"
    assert s.bank_account == BankAccount("DE89370400440532013000", "COBADEFFXXX")
    assert s.bank_account.iban_formatted == "DE89 3704 0044 0532 0130 00"
    assert s.invoice_series == "MS" and s.series_for(DocumentType.CREDIT_NOTE) == "CN"


@pytest.mark.parametrize(
    ("vat_id", "country", "reason"),
    [
        ("DE136695977", "DE", "InvalidChecksum"),
        ("DE13669597", "DE", "InvalidLength"),
        ("FR40303265045", "DE", "country_mismatch"),
    ],
)
def test_an_eu_vat_id_is_checked_with_stdnum(vat_id: str, country: str, reason: str) -> None:
    with pytest.raises(InvalidSeller) as caught:
        check_vat_id(vat_id, country)
    assert caught.value.problem_extensions == {"field": "vat_id", "reason": reason}


def test_greek_vat_ids_carry_el_and_non_eu_ones_are_kept() -> None:
    assert check_vat_id("EL094259216", "GR") == "EL094259216"
    assert check_vat_id("CHE-116.281.710 MWST", "CH") == "CHE116281710MWST"


@pytest.mark.parametrize(
    ("iban", "bic", "field"),
    [
        ("DE89370400440532013001", None, "iban"),  # check digits
        ("XX89370400440532013000", None, "iban"),  # no such country
        ("DE89370400440532013000", "COBADEFF1", "bic"),  # 9 characters
    ],
)
def test_iban_and_bic_are_checked_with_schwifty(iban: str, bic: str | None, field: str) -> None:
    with pytest.raises(InvalidSeller) as caught:
        BankAccount(iban, bic)
    assert caught.value.problem_extensions["field"] == field
    assert caught.value.problem_extensions["reason"]


@pytest.mark.parametrize(
    "changes",
    [
        {"legal_name": " "},
        {"language": "German"},
        {"default_currency": "EURO"},
        {"invoice_series": "has space"},
    ],
)
def test_other_seller_rules(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidSeller):
        seller(**changes)


def test_a_change_is_checked_again_and_counts_a_version() -> None:
    s = seller()
    changed = s.changed(AT + timedelta(days=1), legal_name="Muster AG")
    assert (changed.legal_name, changed.version, changed.updated_at) == (
        "Muster AG",
        2,
        AT + timedelta(days=1),
    )
    with pytest.raises(InvalidSeller):
        s.changed(AT, vat_id="DE000000000")


def test_a_snapshot_round_trips_through_its_json_form() -> None:
    s = seller(tax_registrations=(TaxRegistration("us", "123-456", "ca"),), phone="+49 30 1")
    snapshot = s.snapshot()
    assert SellerSnapshot.from_dict(snapshot.to_dict()) == snapshot
    assert snapshot.address.lines == ["Hauptstr. 1", "10115 Berlin", "DE"]


def test_the_sample_seller_passes_every_check() -> None:
    """It is built as stored (unchecked, issue 11): checked here, field for field."""
    from invoice_service.samples import SAMPLE_SELLER

    bank = SAMPLE_SELLER.bank_account
    assert bank is not None
    fields = {f: getattr(SAMPLE_SELLER, f) for f in SAMPLE_SELLER.__dataclass_fields__}
    fields["bank_account"] = BankAccount(bank.iban, bank.bic)
    assert Seller(**fields) == SAMPLE_SELLER


def test_a_stored_seller_is_checked_again_when_it_changes() -> None:
    stored = Seller.stored(
        id="s-1",
        tenant_id="acme",
        legal_name="Muster GmbH",
        address=BERLIN,
        created_at=AT,
        updated_at=AT,
        vat_id="DE136695976",
        bank_account=BankAccount.stored("DE89370400440532013000", "COBADEFFXXX"),
    )
    assert stored == seller(invoice_series="INV")
    with pytest.raises(InvalidSeller):
        stored.changed(AT, vat_id="DE000000000")
    with pytest.raises(InvalidSeller):  # the rest is checked as ever
        Seller.stored(
            id="s-1",
            tenant_id="acme",
            legal_name=" ",
            address=BERLIN,
            created_at=AT,
            updated_at=AT,
            vat_id="DE136695976",
        )


def test_reading_stored_sellers_loads_no_identifier_library() -> None:
    """Reading a seller row or an invoice's seller snapshot, and adding the sample seller,
    do not import python-stdnum or schwifty (issue 11: ~3 MB of the API process's RSS);
    they are loaded when a seller is written."""
    script = textwrap.dedent(
        """
        import json
        import sys
        from datetime import UTC, datetime
        from types import SimpleNamespace

        from invoice_service.adapters.sellers_repository import _seller
        from invoice_service.domain.sellers import SellerSnapshot
        from invoice_service.samples import SAMPLE_SELLER

        now = datetime.now(UTC)
        SAMPLE_SELLER.stamped("acme", now)
        snapshot = SellerSnapshot.from_dict(json.loads(sys.argv[1]))
        assert snapshot.bank_account is not None
        row = SimpleNamespace(
            id="s-1", tenant_id="acme", legal_name="Muster GmbH", country="DE", city="Berlin",
            postcode="10115", region=None, street='["Hauptstr. 1"]', created_at=now,
            updated_at=now, vat_id="DE136695976", tax_registrations="[]", email=None,
            phone=None, iban="DE89370400440532013000", bic="COBADEFFXXX",
            default_currency="EUR", language="en", invoice_series="INV",
            credit_note_series="CN", active=True, version=1,
        )
        assert _seller(row, "s-1").bank_account is not None
        print(sorted(name for name in ("stdnum", "schwifty", "pycountry") if name in sys.modules))
        """
    )
    snapshot = json.dumps(seller().snapshot().to_dict())
    result = subprocess.run(
        [sys.executable, "-c", script, snapshot],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def _invoice(snapshot: SellerSnapshot | None) -> Invoice:
    line = InvoiceLine(
        position=1,
        description="Widget",
        quantity=Decimal(1),
        unit_price=Decimal("10.00"),
        category="standard",
        subtotal=Decimal("10.00"),
        discount=Decimal("0.00"),
        net=Decimal("10.00"),
        tax=Decimal("1.90"),
        total=Decimal("11.90"),
    )
    return Invoice.create(
        id="i-1",
        tenant_id="acme",
        customer=Customer("c-1", None, "DE", None, TaxStatus.STANDARD),
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
        series="MS",
        lines=[line],
        discounts=[],
        due_days=30,
        at=AT,
        actor="user:alice",
        tax_calculation_id=None,
        discount_redemption_id=None,
        seller=snapshot,
    )


def test_finalization_snapshots_the_seller_as_it_is_then() -> None:
    at_creation = seller()
    invoice = _invoice(at_creation.snapshot())
    assert invoice.seller_id == "s-1"
    renamed = at_creation.changed(AT, legal_name="Muster AG")
    invoice.finalize(number="MS-000001", sequence=1, at=AT, seller=renamed.snapshot())
    assert invoice.seller is not None and invoice.seller.legal_name == "Muster AG"
    assert invoice.seller.version == 2
    # What happens to the seller afterwards is not the issued invoice's business.
    renamed.changed(AT, legal_name="Someone Else SE")
    assert invoice.seller.legal_name == "Muster AG"


def test_an_invoice_is_issued_by_the_seller_it_names() -> None:
    invoice = _invoice(seller().snapshot())
    other = seller(id="s-2").snapshot()
    with pytest.raises(InvalidInvoice):
        invoice.finalize(number="MS-000001", sequence=1, at=AT, seller=other)


def test_an_invoice_without_a_seller_stays_without_one() -> None:
    invoice = _invoice(None)
    invoice.finalize(number="INV-000001", sequence=1, at=AT)
    assert invoice.seller_id is None and invoice.seller is None
