"""EN 16931 model -> UBL 2.1 Invoice or CreditNote (type code 381), Peppol BIS Billing 3.0.
Element order follows the UBL XSDs; each element names its business term. The CreditNote
differs from the Invoice in its root, CreditNoteTypeCode, CreditNoteLine/CreditedQuantity
and in where the due date goes (PaymentMeans/PaymentDueDate: the CreditNote has no DueDate)."""

from __future__ import annotations

from decimal import Decimal

from lxml import etree

from invoice_service.adapters.einvoice.en16931 import CREDIT_NOTE, Address, EInvoice, Party

INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
NSMAP = {None: INVOICE, "cac": CAC, "cbc": CBC}
_NS = {"cac": CAC, "cbc": CBC}

PEPPOL_BIS_3 = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PEPPOL_BILLING_PROCESS = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    prefix, name = tag.split(":")
    child = etree.SubElement(parent, f"{{{_NS[prefix]}}}{name}", attrs)
    if text is not None:
        child.text = text
    return child


def _s(value: Decimal) -> str:
    return format(value, "f")


def _money(parent: etree._Element, tag: str, value: Decimal, currency: str) -> None:
    _el(parent, tag, _s(value), currencyID=currency)


def _category(
    parent: etree._Element,
    tag: str,
    category: str,
    rate: Decimal,
    *,
    reason_code: str | None = None,
    reason: str | None = None,
) -> None:
    node = _el(parent, tag)
    _el(node, "cbc:ID", category)
    if category != "O":
        _el(node, "cbc:Percent", _s(rate))
    if reason_code:
        _el(node, "cbc:TaxExemptionReasonCode", reason_code)  # BT-121
    if reason:
        _el(node, "cbc:TaxExemptionReason", reason)  # BT-120
    _el(_el(node, "cac:TaxScheme"), "cbc:ID", "VAT")


def _address(parent: etree._Element, address: Address, tag: str = "cac:PostalAddress") -> None:
    postal = _el(parent, tag)
    if address.lines:
        _el(postal, "cbc:StreetName", address.lines[0])  # BT-35 / BT-50
    if len(address.lines) > 1:
        _el(postal, "cbc:AdditionalStreetName", address.lines[1])  # BT-36 / BT-51
    if address.city:
        _el(postal, "cbc:CityName", address.city)  # BT-37 / BT-52
    if address.postcode:
        _el(postal, "cbc:PostalZone", address.postcode)  # BT-38 / BT-53
    if address.region:
        _el(postal, "cbc:CountrySubentity", address.region)  # BT-39 / BT-54
    if len(address.lines) > 2:
        _el(_el(postal, "cac:AddressLine"), "cbc:Line", ", ".join(address.lines[2:]))
    _el(_el(postal, "cac:Country"), "cbc:IdentificationCode", address.country)  # BT-40 / BT-55


def _party(parent: etree._Element, tag: str, party: Party, *, seller: bool) -> None:
    node = _el(_el(parent, tag), "cac:Party")
    if party.email:
        _el(node, "cbc:EndpointID", party.email, schemeID="EM")  # BT-34 / BT-49
    if party.identifier:
        _el(_el(node, "cac:PartyIdentification"), "cbc:ID", party.identifier)  # BT-46
    _address(node, party.address)
    if party.vat_id:
        scheme = _el(node, "cac:PartyTaxScheme")
        _el(scheme, "cbc:CompanyID", party.vat_id)  # BT-31 / BT-48
        _el(_el(scheme, "cac:TaxScheme"), "cbc:ID", "VAT")
    if party.tax_registration:
        scheme = _el(node, "cac:PartyTaxScheme")
        _el(scheme, "cbc:CompanyID", party.tax_registration)  # BT-32
        _el(_el(scheme, "cac:TaxScheme"), "cbc:ID", "FC")  # not VAT: a tax registration
    _el(_el(node, "cac:PartyLegalEntity"), "cbc:RegistrationName", party.name)  # BT-27 / BT-44
    if seller and (party.phone or party.email):
        contact = _el(node, "cac:Contact")  # BG-6
        _el(contact, "cbc:Name", party.name)  # BT-41
        if party.phone:
            _el(contact, "cbc:Telephone", party.phone)  # BT-42
        if party.email:
            _el(contact, "cbc:ElectronicMail", party.email)  # BT-43


def to_ubl(doc: EInvoice) -> bytes:
    """A UBL Invoice, or a UBL CreditNote when the document's type code is 381."""
    cur = doc.currency
    credit = doc.type_code == CREDIT_NOTE
    if credit:
        root = etree.Element(
            f"{{{CREDIT_NOTE_NS}}}CreditNote", nsmap={**NSMAP, None: CREDIT_NOTE_NS}
        )
    else:
        root = etree.Element(f"{{{INVOICE}}}Invoice", nsmap=NSMAP)
    _el(root, "cbc:CustomizationID", PEPPOL_BIS_3)  # BT-24
    _el(root, "cbc:ProfileID", PEPPOL_BILLING_PROCESS)  # BT-23
    _el(root, "cbc:ID", doc.number)  # BT-1
    _el(root, "cbc:IssueDate", doc.issue_date.isoformat())  # BT-2
    if doc.due_date and not credit:
        _el(root, "cbc:DueDate", doc.due_date.isoformat())  # BT-9
    _el(root, "cbc:CreditNoteTypeCode" if credit else "cbc:InvoiceTypeCode", doc.type_code)
    if doc.note:
        _el(root, "cbc:Note", doc.note)  # BT-22
    _el(root, "cbc:DocumentCurrencyCode", cur)  # BT-5
    if doc.buyer_reference:
        _el(root, "cbc:BuyerReference", doc.buyer_reference)  # BT-10
    if doc.preceding_invoice:
        reference = _el(_el(root, "cac:BillingReference"), "cac:InvoiceDocumentReference")
        _el(reference, "cbc:ID", doc.preceding_invoice)  # BT-25
    _party(root, "cac:AccountingSupplierParty", doc.seller, seller=True)  # BG-4
    _party(root, "cac:AccountingCustomerParty", doc.buyer, seller=False)  # BG-7
    delivery = _el(root, "cac:Delivery")
    _el(delivery, "cbc:ActualDeliveryDate", doc.delivery_date.isoformat())  # BT-72
    if any(entry.category == "K" for entry in doc.vat):
        # BR-IC-12: an intra-community supply names the country it is delivered to.
        # No delivery address is kept: the buyer's (BG-15, city and postcode when known).
        _address(_el(delivery, "cac:DeliveryLocation"), doc.buyer.address, tag="cac:Address")
    if doc.payment:  # BG-16
        means = _el(root, "cac:PaymentMeans")
        _el(means, "cbc:PaymentMeansCode", doc.payment.code)  # BT-81
        if credit and doc.due_date:
            _el(means, "cbc:PaymentDueDate", doc.due_date.isoformat())  # BT-9
        _el(_el(means, "cac:PayeeFinancialAccount"), "cbc:ID", doc.payment.iban)  # BT-84
    for allowance in doc.allowances:  # BG-20
        node = _el(root, "cac:AllowanceCharge")
        _el(node, "cbc:ChargeIndicator", "false")
        _el(node, "cbc:AllowanceChargeReasonCode", allowance.reason_code)  # BT-98
        _el(node, "cbc:AllowanceChargeReason", allowance.reason)  # BT-97
        _money(node, "cbc:Amount", allowance.amount, cur)  # BT-92
        _category(node, "cac:TaxCategory", allowance.vat_category, allowance.vat_rate)
    tax_total = _el(root, "cac:TaxTotal")
    _money(tax_total, "cbc:TaxAmount", doc.totals.vat, cur)  # BT-110
    for entry in doc.vat:  # BG-23
        subtotal = _el(tax_total, "cac:TaxSubtotal")
        _money(subtotal, "cbc:TaxableAmount", entry.taxable_amount, cur)  # BT-116
        _money(subtotal, "cbc:TaxAmount", entry.tax_amount, cur)  # BT-117
        _category(
            subtotal,
            "cac:TaxCategory",
            entry.category,
            entry.rate,
            reason_code=entry.exemption_reason_code,
            reason=entry.exemption_reason,
        )
    totals = doc.totals
    monetary = _el(root, "cac:LegalMonetaryTotal")  # BG-22
    _money(monetary, "cbc:LineExtensionAmount", totals.line_net, cur)  # BT-106
    _money(monetary, "cbc:TaxExclusiveAmount", totals.tax_exclusive, cur)  # BT-109
    _money(monetary, "cbc:TaxInclusiveAmount", totals.tax_inclusive, cur)  # BT-112
    _money(monetary, "cbc:AllowanceTotalAmount", totals.allowances, cur)  # BT-107
    _money(monetary, "cbc:ChargeTotalAmount", totals.charges, cur)  # BT-108
    _money(monetary, "cbc:PrepaidAmount", totals.paid, cur)  # BT-113
    _money(monetary, "cbc:PayableAmount", totals.due, cur)  # BT-115
    for line in doc.lines:  # BG-25
        node = _el(root, "cac:CreditNoteLine" if credit else "cac:InvoiceLine")
        _el(node, "cbc:ID", line.id)  # BT-126
        quantity = "cbc:CreditedQuantity" if credit else "cbc:InvoicedQuantity"
        _el(node, quantity, _s(line.quantity), unitCode=line.unit)  # BT-129
        _money(node, "cbc:LineExtensionAmount", line.net_amount, cur)  # BT-131
        item = _el(node, "cac:Item")
        _el(item, "cbc:Name", line.name)  # BT-153
        _category(item, "cac:ClassifiedTaxCategory", line.vat_category, line.vat_rate)
        _money(_el(node, "cac:Price"), "cbc:PriceAmount", line.net_price, cur)  # BT-146
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
