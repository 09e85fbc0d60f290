"""XRechnung 3.0 CII and the UBL CreditNote over the corpus, against the official schemas and
the CEN EN 16931 rules (einvoice_rules.py), and the XRechnung rules re-implemented in the
writer (BR-DE-*, each by its id): zero errors, zero fatal, and failures that prove it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from lxml import etree

from invoice_service.adapters.einvoice.cii import RAM, XRECHNUNG_3, to_cii
from invoice_service.adapters.einvoice.en16931 import from_credit_note, from_invoice
from invoice_service.adapters.einvoice.ubl import CBC, CREDIT_NOTE_NS, PEPPOL_BIS_3, to_ubl
from invoice_service.adapters.einvoice.writer import requirements, xrechnung_requirements
from invoice_service.domain.credit_notes import CreditRequestLine
from invoice_service.domain.einvoicing import EInvoiceFormat, PostalAddress
from invoice_service.domain.errors import InvalidInvoice
from invoice_service.domain.model import Invoice

from .einvoice_corpus import (
    LEITWEG_ID,
    Spec,
    build,
    corpus,
    credit_note_of,
    for_xrechnung,
    seller,
)
from .einvoice_rules import assert_valid, rule_findings, schema_errors

CORPUS = corpus()
IDS = [name for name, _ in CORPUS]
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"


def _xrechnung(invoice: Invoice) -> bytes:
    return to_cii(from_invoice(invoice), guideline=XRECHNUNG_3)


@pytest.mark.parametrize(("name", "invoice"), CORPUS, ids=IDS)
def test_corpus_as_xrechnung_passes_the_rules(name: str, invoice: Invoice) -> None:
    invoice = for_xrechnung(invoice)
    assert xrechnung_requirements(invoice, None) == []
    xml = _xrechnung(invoice)
    assert_valid(xml, ubl=False, xrechnung=True)
    # Not a warning either, but the Factur-X profile's own BT-24 restriction.
    assert {f.rule for f in rule_findings(xml, ubl=False)} == {"FX-SCH-A-000556"}
    root = etree.fromstring(xml)
    guideline = f".//{{{RAM}}}GuidelineSpecifiedDocumentContextParameter/{{{RAM}}}ID"
    assert root.findtext(guideline) == XRECHNUNG_3
    assert root.findtext(f".//{{{RAM}}}BuyerReference") == LEITWEG_ID  # BT-10
    buyer = root.find(f".//{{{RAM}}}BuyerTradeParty/{{{RAM}}}PostalTradeAddress")
    assert buyer is not None
    assert buyer.findtext(f"{{{RAM}}}CityName") == "München"  # BT-52, BR-DE-8
    assert buyer.findtext(f"{{{RAM}}}PostcodeCode") == "80331"  # BT-53, BR-DE-9
    assert buyer.findtext(f"{{{RAM}}}LineOne") == "Kundenweg 5"  # BT-50
    assert buyer.findtext(f"{{{RAM}}}CountrySubDivisionName") == "Bayern"  # BT-54
    # BR-DE-14: every VAT breakdown carries its rate.
    breakdowns = root.findall(
        f".//{{{RAM}}}ApplicableHeaderTradeSettlement/{{{RAM}}}ApplicableTradeTax"
    )
    assert breakdowns and all(
        b.find(f"{{{RAM}}}RateApplicablePercent") is not None for b in breakdowns
    )


def test_intra_eu_goods_deliver_to_the_buyers_address_br_de_10_11() -> None:
    _, invoice = next(item for item in CORPUS if item[0] == "intra-eu-supply-of-goods")
    xml = _xrechnung(for_xrechnung(invoice))
    ship_to = etree.fromstring(xml).find(
        f".//{{{RAM}}}ShipToTradeParty/{{{RAM}}}PostalTradeAddress"
    )
    assert ship_to is not None
    assert ship_to.findtext(f"{{{RAM}}}CityName") == "München"
    assert ship_to.findtext(f"{{{RAM}}}PostcodeCode") == "80331"
    assert ship_to.findtext(f"{{{RAM}}}CountryID") == "AT"


def test_xrechnung_requirements_name_each_br_de_rule() -> None:
    bare = seller(phone="12", email="x@y", bank_account=None, address=seller().address)
    invoice = build([Spec("Consulting", "1", "100.00", "0.19")], seller_snapshot=bare)
    invoice.customer = replace(invoice.customer, email=None)
    assert [item.rule for item in xrechnung_requirements(invoice, None)] == [
        "BR-DE-15",
        "PEPPOL-EN16931-R010",
        "BR-DE-8",
        "BR-DE-9",
        "BR-DE-1",
        "BR-DE-27",
        "BR-DE-28",
    ]
    # The same invoice with all of it: nothing is missing.
    complete = for_xrechnung(build([Spec("Consulting", "1", "100.00", "0.19")]))
    assert requirements(complete, EInvoiceFormat.XRECHNUNG, None) == []
    # A download's buyer reference stands in for the invoice's own.
    no_reference = for_xrechnung(build([Spec("Consulting", "1", "100.00", "0.19")]))
    no_reference.customer = replace(no_reference.customer, buyer_reference=None)
    assert [m.rule for m in xrechnung_requirements(no_reference, None)] == ["BR-DE-15"]
    assert xrechnung_requirements(no_reference, "991-1") == []


def test_the_buyer_address_is_validated() -> None:
    with pytest.raises(InvalidInvoice, match="ISO 3166-1"):
        PostalAddress(country="XX", city="Berlin")
    with pytest.raises(InvalidInvoice, match="ISO 3166-1"):
        PostalAddress(country="UK", city="London")  # GB is the code
    with pytest.raises(InvalidInvoice, match="at most 3 lines"):
        PostalAddress(country="DE", street=("a", "b", "c", "d"))
    assert PostalAddress(country="de", city=" Köln ").country == "DE"


# ---- credit notes as UBL CreditNote (Peppol BIS 3.0) and as XRechnung CII -----------------


def _credit_notes() -> list[tuple[str, Invoice, tuple[CreditRequestLine, ...]]]:
    cases: list[tuple[str, Invoice, tuple[CreditRequestLine, ...]]] = []
    for name, invoice in corpus():
        cases.append((f"{name}-full", invoice, ()))
    for name, invoice in corpus():
        # Part of the first line: a quantity where it is whole, else an amount.
        first = invoice.lines[0]
        part = (
            CreditRequestLine(1, quantity=Decimal(1))
            if first.quantity > 1
            else CreditRequestLine(1, amount=(first.total / 3).quantize(first.total))
        )
        cases.append((f"{name}-partial", invoice, (part,)))
    return cases


CREDIT_NOTES = _credit_notes()


@pytest.mark.parametrize(
    ("name", "invoice", "requested"), CREDIT_NOTES, ids=[c[0] for c in CREDIT_NOTES]
)
def test_credit_notes_pass_the_ubl_creditnote_and_cii_rules(
    name: str, invoice: Invoice, requested: tuple[CreditRequestLine, ...]
) -> None:
    note = credit_note_of(invoice, requested)
    doc = from_credit_note(note, for_xrechnung(invoice))
    assert doc.totals.tax_inclusive == note.total  # BR-CO-15 reconciles to the credit note
    ubl = to_ubl(doc)
    assert_valid(ubl, ubl=True)
    assert rule_findings(ubl, ubl=True) == []  # no warnings either
    root = etree.fromstring(ubl)
    assert root.tag == f"{{{CREDIT_NOTE_NS}}}CreditNote"
    assert root.findtext(f"{{{CBC}}}CustomizationID") == PEPPOL_BIS_3  # BT-24
    assert root.findtext(f"{{{CBC}}}CreditNoteTypeCode") == "381"  # BT-3
    reference = f"{{{CAC}}}BillingReference/{{{CAC}}}InvoiceDocumentReference/{{{CBC}}}ID"
    assert root.findtext(reference) == invoice.number  # BT-25
    assert len(root.findall(f"{{{CAC}}}CreditNoteLine")) == len(note.lines)
    assert root.findtext(f"{{{CAC}}}LegalMonetaryTotal/{{{CBC}}}PayableAmount") == str(note.total)
    # The same credit note as XRechnung CII (type code 381) and as Factur-X CII.
    assert_valid(to_cii(doc, guideline=XRECHNUNG_3), ubl=False, xrechnung=True)
    assert_valid(to_cii(doc), ubl=False)


def test_the_creditnote_rules_run_a_wrong_payable_amount_is_reported() -> None:
    invoice = build([Spec("Consulting", "3", "150.00", "0.19")])
    root = etree.fromstring(to_ubl(from_credit_note(credit_note_of(invoice), invoice)))
    next(root.iter(f"{{{CBC}}}TaxInclusiveAmount")).text = "1.00"
    tampered = etree.tostring(root)
    assert schema_errors(tampered, ubl=True) == []
    assert "BR-CO-15" in {f.rule for f in rule_findings(tampered, ubl=True)}
    # And the CreditNote XSD is the one applied: an Invoice line in it is refused.
    etree.SubElement(root, f"{{{CAC}}}InvoiceLine")
    assert schema_errors(etree.tostring(root), ubl=True) != []


def test_only_an_issued_invoice_is_offered_as_an_einvoice() -> None:
    issued = build([Spec("Consulting", "1", "100.00", "0.19")])
    issued.offer_einvoice(EInvoiceFormat.UBL)
    assert issued.einvoice_format is EInvoiceFormat.UBL
    draft = replace(issued, number=None, einvoice_format=None)
    with pytest.raises(InvalidInvoice, match="only an issued invoice"):
        draft.offer_einvoice(EInvoiceFormat.UBL)
    assert draft.einvoice_format is None
