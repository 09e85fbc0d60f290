"""EN 16931 model -> UN/CEFACT Cross Industry Invoice (D16B, as Factur-X 1.0 and XRechnung
use it). Element order follows the XSD; each element names its business term."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from lxml import etree

from invoice_service.adapters.einvoice.en16931 import Address, EInvoice, Party

RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
NSMAP = {"rsm": RSM, "ram": RAM, "udt": UDT, "qdt": QDT}

# BT-24 specification identifiers
FACTURX_EN16931 = "urn:cen.eu:en16931:2017"
XRECHNUNG_3 = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
PEPPOL_BILLING_PROCESS = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"  # BT-23


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    prefix, name = tag.split(":")
    child = etree.SubElement(parent, f"{{{NSMAP[prefix]}}}{name}", attrs)
    if text is not None:
        child.text = text
    return child


def _amount(value: Decimal) -> str:
    return format(value, "f")


def _date(parent: etree._Element, tag: str, value: date) -> None:
    _el(_el(parent, tag), "udt:DateTimeString", value.strftime("%Y%m%d"), format="102")


def _address(parent: etree._Element, address: Address) -> None:
    postal = _el(parent, "ram:PostalTradeAddress")
    if address.postcode:
        _el(postal, "ram:PostcodeCode", address.postcode)  # BT-38 / BT-53
    for tag, line in zip(("ram:LineOne", "ram:LineTwo"), address.lines, strict=False):
        _el(postal, tag, line)  # BT-35/36 / BT-50/51
    if len(address.lines) > 2:
        _el(postal, "ram:LineThree", ", ".join(address.lines[2:]))  # BT-162 / BT-163
    if address.city:
        _el(postal, "ram:CityName", address.city)  # BT-37 / BT-52
    _el(postal, "ram:CountryID", address.country)  # BT-40 / BT-55
    if address.region:
        _el(postal, "ram:CountrySubDivisionName", address.region)  # BT-39 / BT-54


def _party(parent: etree._Element, tag: str, party: Party, *, seller: bool) -> None:
    node = _el(parent, tag)
    if party.identifier:
        _el(node, "ram:ID", party.identifier)  # BT-46
    _el(node, "ram:Name", party.name)  # BT-27 / BT-44
    if seller and (party.phone or party.email):
        contact = _el(node, "ram:DefinedTradeContact")  # BG-6
        _el(contact, "ram:PersonName", party.name)  # BT-41
        if party.phone:
            phone = _el(contact, "ram:TelephoneUniversalCommunication")
            _el(phone, "ram:CompleteNumber", party.phone)  # BT-42
        if party.email:
            mail = _el(contact, "ram:EmailURIUniversalCommunication")
            _el(mail, "ram:URIID", party.email)  # BT-43
    _address(node, party.address)
    if party.email:
        uri = _el(node, "ram:URIUniversalCommunication")
        _el(uri, "ram:URIID", party.email, schemeID="EM")  # BT-34 / BT-49
    if party.vat_id:
        registration = _el(node, "ram:SpecifiedTaxRegistration")
        _el(registration, "ram:ID", party.vat_id, schemeID="VA")  # BT-31 / BT-48
    if party.tax_registration:
        registration = _el(node, "ram:SpecifiedTaxRegistration")
        _el(registration, "ram:ID", party.tax_registration, schemeID="FC")  # BT-32


def _tax(parent: etree._Element, category: str) -> None:
    _el(parent, "ram:TypeCode", "VAT")
    _el(parent, "ram:CategoryCode", category)


def to_cii(doc: EInvoice, *, guideline: str = FACTURX_EN16931) -> bytes:
    root = etree.Element(f"{{{RSM}}}CrossIndustryInvoice", nsmap=NSMAP)
    context = _el(root, "rsm:ExchangedDocumentContext")
    if guideline == XRECHNUNG_3:
        process = _el(context, "ram:BusinessProcessSpecifiedDocumentContextParameter")
        _el(process, "ram:ID", PEPPOL_BILLING_PROCESS)
    _el(_el(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID", guideline)

    header = _el(root, "rsm:ExchangedDocument")
    _el(header, "ram:ID", doc.number)  # BT-1
    _el(header, "ram:TypeCode", doc.type_code)  # BT-3
    _date(header, "ram:IssueDateTime", doc.issue_date)  # BT-2
    if doc.note:
        _el(_el(header, "ram:IncludedNote"), "ram:Content", doc.note)  # BT-22

    transaction = _el(root, "rsm:SupplyChainTradeTransaction")
    for line in doc.lines:  # BG-25
        item = _el(transaction, "ram:IncludedSupplyChainTradeLineItem")
        _el(_el(item, "ram:AssociatedDocumentLineDocument"), "ram:LineID", line.id)  # BT-126
        _el(_el(item, "ram:SpecifiedTradeProduct"), "ram:Name", line.name)  # BT-153
        agreement = _el(item, "ram:SpecifiedLineTradeAgreement")
        price = _el(agreement, "ram:NetPriceProductTradePrice")
        _el(price, "ram:ChargeAmount", _amount(line.net_price))  # BT-146
        delivery = _el(item, "ram:SpecifiedLineTradeDelivery")
        _el(delivery, "ram:BilledQuantity", _amount(line.quantity), unitCode=line.unit)  # BT-129
        settlement = _el(item, "ram:SpecifiedLineTradeSettlement")
        tax = _el(settlement, "ram:ApplicableTradeTax")
        _tax(tax, line.vat_category)  # BT-151
        if line.vat_category != "O":
            _el(tax, "ram:RateApplicablePercent", _amount(line.vat_rate))  # BT-152
        summation = _el(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation")
        _el(summation, "ram:LineTotalAmount", _amount(line.net_amount))  # BT-131

    agreement = _el(transaction, "ram:ApplicableHeaderTradeAgreement")
    if doc.buyer_reference:
        _el(agreement, "ram:BuyerReference", doc.buyer_reference)  # BT-10
    _party(agreement, "ram:SellerTradeParty", doc.seller, seller=True)  # BG-4
    _party(agreement, "ram:BuyerTradeParty", doc.buyer, seller=False)  # BG-7

    delivery = _el(transaction, "ram:ApplicableHeaderTradeDelivery")  # BG-13
    if any(entry.category == "K" for entry in doc.vat):
        # BR-IC-12: an intra-community supply names the country it is delivered to.
        # The platform keeps no delivery address: the goods go to the buyer's address (BG-15
        # with city and postcode when the buyer's address has them, BR-DE-10/11).
        _address(_el(delivery, "ram:ShipToTradeParty"), doc.buyer.address)
    event = _el(delivery, "ram:ActualDeliverySupplyChainEvent")
    _date(event, "ram:OccurrenceDateTime", doc.delivery_date)  # BT-72

    settlement = _el(transaction, "ram:ApplicableHeaderTradeSettlement")
    _el(settlement, "ram:InvoiceCurrencyCode", doc.currency)  # BT-5
    if doc.payment:  # BG-16
        means = _el(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
        _el(means, "ram:TypeCode", doc.payment.code)  # BT-81
        account = _el(means, "ram:PayeePartyCreditorFinancialAccount")
        _el(account, "ram:IBANID", doc.payment.iban)  # BT-84
    for entry in doc.vat:  # BG-23
        tax = _el(settlement, "ram:ApplicableTradeTax")
        _el(tax, "ram:CalculatedAmount", _amount(entry.tax_amount))  # BT-117
        _el(tax, "ram:TypeCode", "VAT")
        if entry.exemption_reason:
            _el(tax, "ram:ExemptionReason", entry.exemption_reason)  # BT-120
        _el(tax, "ram:BasisAmount", _amount(entry.taxable_amount))  # BT-116
        _el(tax, "ram:CategoryCode", entry.category)  # BT-118
        if entry.exemption_reason_code:
            _el(tax, "ram:ExemptionReasonCode", entry.exemption_reason_code)  # BT-121
        if entry.category != "O" or guideline == XRECHNUNG_3:
            # BT-119 is 1..1 in the model; XRechnung asks for it on every category
            # (BR-DE-14), the Factur-X rules do not want it for "not subject to VAT".
            _el(tax, "ram:RateApplicablePercent", _amount(entry.rate))  # BT-119
    for allowance in doc.allowances:  # BG-20
        node = _el(settlement, "ram:SpecifiedTradeAllowanceCharge")
        _el(_el(node, "ram:ChargeIndicator"), "udt:Indicator", "false")
        _el(node, "ram:ActualAmount", _amount(allowance.amount))  # BT-92
        _el(node, "ram:ReasonCode", allowance.reason_code)  # BT-98
        _el(node, "ram:Reason", allowance.reason)  # BT-97
        tax = _el(node, "ram:CategoryTradeTax")
        _tax(tax, allowance.vat_category)  # BT-95
        if allowance.vat_category != "O":
            _el(tax, "ram:RateApplicablePercent", _amount(allowance.vat_rate))  # BT-96
    if doc.due_date:
        terms = _el(settlement, "ram:SpecifiedTradePaymentTerms")
        _date(terms, "ram:DueDateDateTime", doc.due_date)  # BT-9
    totals = doc.totals
    summation = _el(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")  # BG-22
    _el(summation, "ram:LineTotalAmount", _amount(totals.line_net))  # BT-106
    _el(summation, "ram:ChargeTotalAmount", _amount(totals.charges))  # BT-108
    _el(summation, "ram:AllowanceTotalAmount", _amount(totals.allowances))  # BT-107
    _el(summation, "ram:TaxBasisTotalAmount", _amount(totals.tax_exclusive))  # BT-109
    _el(summation, "ram:TaxTotalAmount", _amount(totals.vat), currencyID=doc.currency)  # BT-110
    _el(summation, "ram:GrandTotalAmount", _amount(totals.tax_inclusive))  # BT-112
    _el(summation, "ram:TotalPrepaidAmount", _amount(totals.paid))  # BT-113
    _el(summation, "ram:DuePayableAmount", _amount(totals.due))  # BT-115
    if doc.preceding_invoice:
        referenced = _el(settlement, "ram:InvoiceReferencedDocument")
        _el(referenced, "ram:IssuerAssignedID", doc.preceding_invoice)  # BT-25
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
