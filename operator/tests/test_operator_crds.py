"""The CRDs' schemas against the sample resources: every sample in k8s-samples/ is accepted,
every one in k8s-samples/invalid/ is refused, for the reason its name gives.

jsonschema checks what an API server checks with the openAPIV3Schema (types, required,
patterns, enums, ranges). The CEL rules (x-kubernetes-validations) need a real API server;
the CRDs themselves are checked against the official CustomResourceDefinition schema.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "charts" / "billing" / "crds"
SAMPLES = ROOT / "k8s-samples"
K8S_VERSION = "1.31.0"


def _load_crds() -> dict[tuple[str, str], dict[str, Any]]:
    crds: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            crds[(api_version, crd["spec"]["names"]["kind"])] = crd
    return crds


CRD_BY_KIND = _load_crds()


def schema_for(obj: dict[str, Any]) -> dict[str, Any]:
    crd = CRD_BY_KIND[(obj["apiVersion"], obj["kind"])]
    version = obj["apiVersion"].split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def validate(obj: dict[str, Any]) -> None:
    jsonschema.validate(
        obj,
        schema_for(obj),
        cls=jsonschema.Draft7Validator,
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


def custom_resources(directory: Path) -> list[Path]:
    return [
        path
        for path in sorted(directory.glob("*.yaml"))
        if yaml.safe_load(path.read_text())["kind"] in ("TaxRule", "DiscountPolicy")
    ]


VALID = custom_resources(SAMPLES)
INVALID = custom_resources(SAMPLES / "invalid")


def test_there_are_samples_of_both_kinds() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in VALID}
    assert kinds == {"TaxRule", "DiscountPolicy"}
    assert len(INVALID) >= 5


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_crds_are_valid_custom_resource_definitions(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    (version,) = crd["spec"]["versions"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Tenant", "Age"} <= columns
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"], "the spec names its required fields"
    jsonschema.Draft7Validator.check_schema(version["schema"]["openAPIV3Schema"])


def test_every_rate_and_amount_field_is_a_decimal_string() -> None:
    """No number type anywhere money or a rate is declared: only patterned strings."""
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                if key in ("rate", "amount", "minimum"):
                    assert value["type"] == "string", f"{path}.{key} must be a string"
                    assert value["pattern"].startswith("^"), f"{path}.{key} needs a pattern"
                    found.append(f"{path}.{key}")
                walk(value, f"{path}.{key}")
            walk(node.get("items"), f"{path}[]")

    for crd in {id(c): c for c in CRD_BY_KIND.values()}.values():
        walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], crd["spec"]["names"]["kind"])
    assert "TaxRule.spec.rate" in found
    assert "DiscountPolicy.spec.tiers[].minimum" in found
    assert "DiscountPolicy.spec.discount.amount" in found


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_samples_validate(path: Path) -> None:
    validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_samples_are_rejected(path: Path) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(yaml.safe_load(path.read_text()))


def _tax_rule(**spec: Any) -> dict[str, Any]:
    sample = yaml.safe_load((SAMPLES / "taxrule-de-vat-standard.yaml").read_text())
    obj = copy.deepcopy(sample)
    obj["spec"].update(spec)
    return obj


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("rate", "-0.19", "negative"),
        ("rate", 0.19, "a JSON number"),
        ("rate", 19, "an integer"),
        ("rate", "19", "a percentage, not a fraction"),
        ("rate", "1.5", "above 1"),
        ("rate", "0.1234567", "more than 6 decimals"),
        ("rate", "0,19", "a decimal comma"),
        ("rate", "", "empty"),
        ("jurisdiction", {"country": "de"}, "a lower-case country"),
        ("jurisdiction", {"country": "DEU"}, "an alpha-3 country"),
        ("jurisdiction", {"region": "BY"}, "no country"),
        ("category", "Standard", "an upper-case category"),
        ("tenant", "Acme Inc", "a tenant with spaces"),
        ("validFrom", "2026-02-30", "not a date"),
        ("compound", "yes", "a string for a boolean"),
        ("priority", "1", "a string priority"),
        ("zeroRated", "true", "a string for a boolean"),
    ],
)
def test_tax_rule_fields_are_checked(field: str, value: Any, reason: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(_tax_rule(**{field: value}))


@pytest.mark.parametrize("rate", ["0", "0.0", "0.07", "0.19", "0.09975", "1", "1.000000"])
def test_tax_rule_rates_within_zero_and_one_pass(rate: str) -> None:
    validate(_tax_rule(rate=rate))


def test_tax_rule_without_spec_is_rejected() -> None:
    obj = _tax_rule()
    del obj["spec"]
    with pytest.raises(jsonschema.ValidationError):
        validate(obj)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"kind": "loyalty"}, "an unknown kind"),
        ({"discount": {"type": "percent", "rate": 0.05}}, "a float rate"),
        ({"discount": {"type": "half"}}, "an unknown discount type"),
        (
            {"discount": {"type": "fixed", "amount": "-5.00", "currency": "EUR"}},
            "a negative amount",
        ),
        ({"discount": {"type": "fixed", "amount": "5.00", "currency": "euro"}}, "a bad currency"),
        ({"priority": 10001}, "a priority out of range"),
        ({"priority": "high"}, "a string priority"),
        ({"startsAt": "tomorrow"}, "not a date-time"),
        ({"displayName": ""}, "an empty name"),
    ],
)
def test_discount_policy_fields_are_checked(patch: dict[str, Any], reason: str) -> None:
    obj = yaml.safe_load((SAMPLES / "discountpolicy-premium.yaml").read_text())
    obj["spec"].update(patch)
    with pytest.raises(jsonschema.ValidationError):
        validate(obj)
