"""The e-invoice corpus against the official schemas and business rules (see
einvoice_rules.py for which artefacts), and the failures that prove the rules really run."""

from __future__ import annotations

from decimal import Decimal

import pytest
from lxml import etree

from invoice_service.adapters.einvoice.cii import RAM, XRECHNUNG_3, to_cii
from invoice_service.adapters.einvoice.en16931 import CREDIT_NOTE, MissingData, from_invoice
from invoice_service.adapters.einvoice.ubl import CBC, to_ubl
from invoice_service.domain.sellers import TaxRegistration

from .einvoice_corpus import REVERSE_CHARGE, Spec, build, corpus, seller
from .einvoice_rules import assert_valid, rule_findings, schema_errors

CORPUS = corpus()


@pytest.mark.parametrize(("name", "invoice"), CORPUS, ids=[name for name, _ in CORPUS])
def test_corpus_passes_the_official_cii_and_ubl_rules(name: str, invoice: object) -> None:
    doc = from_invoice(invoice, buyer_reference="04011000-12345-34")  # type: ignore[arg-type]
    assert_valid(to_cii(doc), ubl=False)
    assert_valid(to_ubl(doc), ubl=True)
    # No warnings either (e.g. PEPPOL-EN16931-R008 empty elements in the Factur-X rules).
    assert rule_findings(to_cii(doc), ubl=False) == []
    assert rule_findings(to_ubl(doc), ubl=True) == []


def test_xrechnung_cii_passes_the_en16931_rules_and_names_the_cius() -> None:
    doc = from_invoice(build([Spec("Consulting", "1", "100.00", "0.19")]), buyer_reference="991-1")
    xml = to_cii(doc, guideline=XRECHNUNG_3)
    assert schema_errors(xml, ubl=False) == []
    # The only rule the CII rule set reports is the Factur-X profile's own restriction of
    # BT-24 to Factur-X identifiers; the EN 16931 rules it carries all pass. (The KoSIT
    # XRechnung rules themselves are not available here; see einvoice_rules.py.)
    assert [f.rule for f in rule_findings(xml, ubl=False)] == ["FX-SCH-A-000556"]
    root = etree.fromstring(xml)
    assert root.findtext(f".//{{{RAM}}}GuidelineSpecifiedDocumentContextParameter/{{{RAM}}}ID") == (
        XRECHNUNG_3
    )
    assert root.findtext(f".//{{{RAM}}}BuyerReference") == "991-1"


def _tamper(xml: bytes, tag: str, value: str) -> bytes:
    root = etree.fromstring(xml)
    node = next(root.iter(tag))
    node.text = value
    return bytes(etree.tostring(root))


def test_the_rules_run_a_wrong_grand_total_breaks_br_co_15() -> None:
    doc = from_invoice(build([Spec("Consulting", "3", "150.00", "0.19")]))
    cii = _tamper(to_cii(doc), f"{{{RAM}}}GrandTotalAmount", "1.00")
    assert "BR-CO-15" in {f.rule for f in rule_findings(cii, ubl=False)}
    ubl = _tamper(to_ubl(doc), f"{{{CBC}}}TaxInclusiveAmount", "1.00")
    assert "BR-CO-15" in {f.rule for f in rule_findings(ubl, ubl=True)}


def test_the_rules_run_reverse_charge_without_the_buyer_vat_id_breaks_br_ae() -> None:
    invoice = build(
        [Spec("Cloud", "1", "10.00", "0", REVERSE_CHARGE)],
        customer_country="FR",
        customer_tax_id=None,
    )
    rules = {f.rule for f in rule_findings(to_ubl(from_invoice(invoice)), ubl=True)}
    assert "BR-AE-02" in rules


def test_totals_reconcile_for_the_document_discount() -> None:
    _, invoice = next(item for item in CORPUS if item[0] == "document-discount")
    doc = from_invoice(invoice)
    t = doc.totals
    assert t.line_net == sum(line.net_amount for line in doc.lines)  # BR-CO-10
    assert t.tax_exclusive == t.line_net - t.allowances + t.charges  # BR-CO-13
    assert t.tax_inclusive == t.tax_exclusive + t.vat  # BR-CO-15
    assert t.tax_inclusive == invoice.total and t.allowances == Decimal("15.00")
    # One allowance per VAT category and rate, as the discount was spread.
    assert sorted((a.vat_rate, a.amount) for a in doc.allowances) == sorted(
        (Decimal(19 if line.taxes[0].rate == Decimal("0.19") else 7), line.discount)
        for line in invoice.lines
    )


def test_missing_seller_and_buyer_name_are_named() -> None:
    invoice = build([Spec("Consulting", "1", "10.00", "0.19")])
    invoice.seller = None
    with pytest.raises(MissingData) as raised:
        from_invoice(invoice)
    assert raised.value.missing == ["seller (the invoice has no seller)"]


def test_seller_without_vat_id_or_registration_is_reported_by_the_rules() -> None:
    invoice = build([Spec("Consulting", "1", "10.00", "0.19")], seller_snapshot=seller(vat_id=None))
    assert "BR-CO-26" in {f.rule for f in rule_findings(to_ubl(from_invoice(invoice)), ubl=True)}


def test_a_credit_note_names_the_preceding_invoice_and_passes_the_cii_rules() -> None:
    invoice = build([Spec("Consulting", "1", "100.00", "0.19")], number="CN-2026-0001")
    doc = from_invoice(invoice, type_code=CREDIT_NOTE, preceding_invoice="INV-2026-0001")
    xml = to_cii(doc)
    assert_valid(xml, ubl=False)
    assert rule_findings(xml, ubl=False) == []
    root = etree.fromstring(xml)
    assert root.findtext(f".//{{{RAM}}}TypeCode") == "381"  # BT-3
    referenced = f".//{{{RAM}}}InvoiceReferencedDocument/{{{RAM}}}IssuerAssignedID"
    assert root.findtext(referenced) == "INV-2026-0001"  # BT-25


def test_a_seller_tax_registration_is_bt_32_but_br_co_26_still_wants_the_vat_id() -> None:
    registration = TaxRegistration("DE", "30/123/45678")
    invoice = build(
        [Spec("Consulting", "1", "10.00", "0.19")],
        seller_snapshot=seller(vat_id=None, tax_registrations=(registration,)),
    )
    doc = from_invoice(invoice)
    assert doc.seller.tax_registration == "30/123/45678"
    for xml, ubl in ((to_cii(doc), False), (to_ubl(doc), True)):
        assert b"30/123/45678" in xml
        # BT-32 satisfies BR-S-02, but BR-CO-26 needs BT-29, BT-30 or BT-31: the writer
        # therefore asks for the VAT id (see test_einvoice_api).
        assert {f.rule for f in rule_findings(xml, ubl=ubl)} == {"BR-CO-26"}
