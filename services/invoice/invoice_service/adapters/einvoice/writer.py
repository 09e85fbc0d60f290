"""The e-invoice writer: checks what the chosen format requires beyond EN 16931 (each check
with its rule id; the XRechnung ones re-implemented from the KoSIT rules), maps the invoice
or credit note (en16931.py) and serializes it; the Factur-X PDF is the invoice's own document
as PDF/A-3b with factur-x.xml embedded (facturx.py), written where the documents are: in the
PDF worker processes (adapters/pdf.py), so this process renders nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from invoice_service.adapters.einvoice.en16931 import (
    EInvoice,
    MissingData,
    from_credit_note,
    from_invoice,
)
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.model import Invoice
from invoice_service.service_layer.einvoices import (
    EInvoiceDataMissing,
    EInvoiceDocument,
    EInvoiceFormat,
)

XML = "application/xml"


@dataclass(frozen=True, slots=True)
class Missing:
    """One thing a format needs that the document lacks: what (the field to give, with its
    business term) and the rule that asks for it."""

    rule: str
    what: str


_DIGITS = re.compile(r"\d")
# BR-DE-28 as the KoSIT rule states it: exactly one "@", at least two characters on each
# side, neither a blank nor a dot next to it, no dot at the start or the end.
_XRECHNUNG_EMAIL = re.compile(r"^[^@\s.][^@\s]*[^@\s.]@[^@\s.][^@\s]*[^@\s.]$")


def _en16931_requirements(invoice: Invoice) -> list[Missing]:
    """What EN 16931 needs that the mapping cannot see as missing."""
    seller = invoice.seller
    if seller is not None and not seller.vat_id:
        # BR-CO-26 wants BT-29, BT-30 or BT-31; sellers keep only the VAT id of the three.
        return [Missing("BR-CO-26", "seller.vat_id (BT-31, BR-CO-26)")]
    return []


def _peppol_requirements(invoice: Invoice, buyer_reference: str | None) -> list[Missing]:
    """Peppol BIS Billing 3.0 on top of EN 16931 (and, as the XRechnung 3.0 rules carry
    the same PEPPOL-EN16931 rules, XRechnung too)."""
    seller, customer = invoice.seller, invoice.customer
    missing: list[Missing] = []
    if not (buyer_reference or customer.buyer_reference):
        missing.append(
            Missing("PEPPOL-EN16931-R003", "buyer_reference (BT-10, e.g. the Leitweg-ID)")
        )
    if seller is not None and not seller.email:
        missing.append(Missing("PEPPOL-EN16931-R020", "seller.email (BT-34 electronic address)"))
    if not customer.email:
        missing.append(Missing("PEPPOL-EN16931-R010", "customer.email (BT-49 electronic address)"))
    return missing


def xrechnung_requirements(invoice: Invoice, buyer_reference: str | None) -> list[Missing]:
    """The rules of the German CIUS, XRechnung 3.0, that the platform's data can break,
    RE-IMPLEMENTED here from the rules the KoSIT publishes (XRechnung 3.0.2 schematron; the
    official artefact is not on a registry these machines reach, see the README). Each check
    names its rule id; rules about what the platform never writes (direct debit BR-DE-24..31,
    payment cards, attachments BR-DEX-*, delivery addresses BR-DE-10/11, Skonto BR-DE-18)
    cannot fail and are not restated. BR-DE-14 (a rate on every VAT breakdown), BR-DE-17
    (type code) and BR-DE-21 (the XRechnung BT-24) hold by how the CII is written."""
    seller, customer = invoice.seller, invoice.customer
    missing: list[Missing] = []
    reference = buyer_reference or customer.buyer_reference
    if not reference:
        missing.append(
            Missing(
                "BR-DE-15",
                "customer.buyer_reference (BT-10 buyer reference, the Leitweg-ID, BR-DE-15)",
            )
        )
    if not customer.email:
        missing.append(
            Missing(
                "PEPPOL-EN16931-R010",
                "customer.email (BT-49 buyer electronic address, PEPPOL-EN16931-R010)",
            )
        )
    address = customer.postal_address
    if address is None or not address.city:
        missing.append(
            Missing("BR-DE-8", "customer.postal_address.city (BT-52 buyer city, BR-DE-8)")
        )
    if address is None or not address.postcode:
        missing.append(
            Missing("BR-DE-9", "customer.postal_address.postcode (BT-53 buyer post code, BR-DE-9)")
        )
    if seller is None:
        return missing
    if seller.bank_account is None:
        missing.append(
            Missing(
                "BR-DE-1", "seller.bank_account (BG-16 payment instructions, BT-84 IBAN, BR-DE-1)"
            )
        )
    else:
        from schwifty import IBAN  # deferred: loaded by the first XRechnung
        from schwifty.exceptions import SchwiftyException

        try:
            IBAN(seller.bank_account.iban)
        except SchwiftyException:
            missing.append(
                Missing("BR-DE-19", "seller.bank_account.iban (BT-84: a valid IBAN, BR-DE-19)")
            )
    if not seller.address.city:
        missing.append(Missing("BR-DE-3", "seller.address.city (BT-37 seller city, BR-DE-3)"))
    if not seller.address.postcode:
        missing.append(
            Missing("BR-DE-4", "seller.address.postcode (BT-38 seller post code, BR-DE-4)")
        )
    # BR-DE-2 / BR-DE-5: the seller contact (BG-6) and its point (BT-41, the seller's name)
    # are written whenever the telephone or e-mail is there, which BR-DE-6/7 require.
    if not seller.phone:
        missing.append(Missing("BR-DE-6", "seller.phone (BT-42 seller contact telephone, BR-DE-6)"))
    elif len(_DIGITS.findall(seller.phone)) < 3:
        missing.append(Missing("BR-DE-27", "seller.phone (BT-42: at least three digits, BR-DE-27)"))
    if not seller.email:
        missing.append(Missing("BR-DE-7", "seller.email (BT-43 seller contact e-mail, BR-DE-7)"))
        missing.append(
            Missing(
                "PEPPOL-EN16931-R020",
                "seller.email (BT-34 electronic address, PEPPOL-EN16931-R020)",
            )
        )
    elif not _XRECHNUNG_EMAIL.fullmatch(seller.email):
        missing.append(
            Missing("BR-DE-28", "seller.email (BT-43: one @, two characters around, BR-DE-28)")
        )
    if not (seller.vat_id or seller.tax_registrations):
        missing.append(
            Missing("BR-DE-16", "seller.vat_id (BT-31) or a tax registration (BT-32, BR-DE-16)")
        )
    return missing


def requirements(
    invoice: Invoice, fmt: EInvoiceFormat, buyer_reference: str | None
) -> list[Missing]:
    """What the format needs beyond what the mapping checks: EN 16931 for all three, Peppol
    BIS 3.0 for `ubl`, XRechnung 3.0 (which carries the Peppol rules) for `xrechnung`."""
    missing = _en16931_requirements(invoice)
    if fmt is EInvoiceFormat.UBL:
        missing += _peppol_requirements(invoice, buyer_reference)
    elif fmt is EInvoiceFormat.XRECHNUNG:
        missing += xrechnung_requirements(invoice, buyer_reference)
    return missing


def _refuse(fmt: EInvoiceFormat, missing: list[Missing]) -> NoReturn:
    rules = list(dict.fromkeys(item.rule for item in missing if item.rule != "EN 16931"))
    raise EInvoiceDataMissing(fmt.value, [item.what for item in missing], rules)


class FacturXDocuments(Protocol):
    """Writes the document's own PDF/A-3 with factur-x.xml embedded (adapters/pdf.py: in the
    PDF worker processes, or in this one). Blocking; raises PdfUnavailable, PdfRenderTimeout."""

    def invoice_facturx(self, invoice: Invoice, xml: bytes, *, author: str) -> bytes: ...

    def credit_note_facturx(
        self, note: CreditNote, invoice: Invoice, xml: bytes, *, author: str
    ) -> bytes: ...


class EN16931Writer:
    def __init__(self, documents: FacturXDocuments) -> None:
        self._documents = documents

    def missing(self, invoice: Invoice, fmt: EInvoiceFormat) -> list[str]:
        """Everything `write` would refuse the invoice for (empty: it can be written)."""
        found = [item.what for item in requirements(invoice, fmt, None)]
        try:
            from_invoice(invoice)
        except MissingData as exc:
            found = exc.missing + found
        return found

    def write(
        self, invoice: Invoice, fmt: EInvoiceFormat, *, buyer_reference: str | None
    ) -> EInvoiceDocument:
        checks = requirements(invoice, fmt, buyer_reference)
        try:
            doc = from_invoice(invoice, buyer_reference=buyer_reference)
        except MissingData as exc:
            _refuse(fmt, [*[Missing("EN 16931", what) for what in exc.missing], *checks])
        if checks:
            _refuse(fmt, checks)
        stem = invoice.number or invoice.id
        return self._serialize(
            doc,
            fmt,
            stem,
            lambda xml: self._documents.invoice_facturx(invoice, xml, author=doc.seller.name),
        )

    def write_credit_note(
        self,
        note: CreditNote,
        invoice: Invoice,
        fmt: EInvoiceFormat,
        *,
        buyer_reference: str | None,
    ) -> EInvoiceDocument:
        """The credit note as UBL CreditNote (Peppol), XRechnung CII or Factur-X (CII 381
        embedded in the credit note's own PDF/A-3)."""
        checks = requirements(invoice, fmt, buyer_reference)
        try:
            doc = from_credit_note(note, invoice, buyer_reference=buyer_reference)
        except MissingData as exc:
            _refuse(fmt, [*[Missing("EN 16931", what) for what in exc.missing], *checks])
        if checks:
            _refuse(fmt, checks)
        return self._serialize(
            doc,
            fmt,
            note.number,
            lambda xml: self._documents.credit_note_facturx(
                note, invoice, xml, author=doc.seller.name
            ),
        )

    def _serialize(
        self,
        doc: EInvoice,
        fmt: EInvoiceFormat,
        stem: str,
        facturx: Callable[[bytes], bytes],
    ) -> EInvoiceDocument:
        # Deferred: the serializers load lxml (about 5 MB of RSS), which an invoice service
        # that never writes an e-invoice need not carry.
        from invoice_service.adapters.einvoice.cii import FACTURX_EN16931, XRECHNUNG_3, to_cii
        from invoice_service.adapters.einvoice.ubl import to_ubl

        if fmt is EInvoiceFormat.UBL:
            return EInvoiceDocument(to_ubl(doc), XML, f"{stem}-ubl.xml")
        if fmt is EInvoiceFormat.XRECHNUNG:
            return EInvoiceDocument(
                to_cii(doc, guideline=XRECHNUNG_3), XML, f"{stem}-xrechnung.xml"
            )
        pdf = facturx(to_cii(doc, guideline=FACTURX_EN16931))
        return EInvoiceDocument(pdf, "application/pdf", f"{stem}.pdf")
