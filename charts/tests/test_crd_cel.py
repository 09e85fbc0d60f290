"""The CRDs' CEL rules (x-kubernetes-validations) executed, as the API server executes them,
with cel-python: every valid sample in k8s-samples/ passes every rule, and every sample in
k8s-samples/invalid/cel/ passes the structural schema but breaks the one rule its first line
names. Together they exercise every rule of both CRDs.

As the API server does, `self` is the value at the node the rule sits on, strings with
`format: date` or `date-time` are timestamps, and a rule that errors counts as failed. What
only an API server does is not here: rule cost estimation and compilation against the
schema's declared types (cel-python is dynamically typed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from celpy import celtypes

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "charts" / "billing" / "crds"
SAMPLES = ROOT / "k8s-samples"
CEL_ONLY = SAMPLES / "invalid" / "cel"

_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            found[key] = version["schema"]["openAPIV3Schema"]
    return found


SCHEMAS = _schemas()


def _cel(schema: dict[str, Any], value: Any) -> Any:
    """The CEL value the API server binds for `value` at `schema`."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return celtypes.MapType(
            {celtypes.StringType(k): _cel(properties.get(k, {}), v) for k, v in value.items()}
        )
    if isinstance(value, list):
        return celtypes.ListType([_cel(schema.get("items", {}), v) for v in value])
    if isinstance(value, str) and schema.get("format") == "date":
        return celtypes.TimestampType(f"{value}T00:00:00Z")
    if isinstance(value, str) and schema.get("format") == "date-time":
        return celtypes.TimestampType(value)
    return celpy.json_to_cel(value)


def _holds(rule: str, self_value: Any) -> bool:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    try:
        result = _PROGRAMS[rule].evaluate({"self": self_value})
    except celpy.CELEvalError:
        return False
    return isinstance(result, celtypes.BoolType) and bool(result)


def cel_violations(schema: dict[str, Any], value: Any) -> list[str]:
    """Messages of every rule that fails anywhere in `value`, depth first."""
    broken = [
        rule.get("message", rule["rule"])
        for rule in schema.get("x-kubernetes-validations", [])
        if not _holds(rule["rule"], _cel(schema, value))
    ]
    if isinstance(value, dict):
        for key, child in value.items():
            if key in schema.get("properties", {}):
                broken += cel_violations(schema["properties"][key], child)
    elif isinstance(value, list) and "items" in schema:
        for child in value:
            broken += cel_violations(schema["items"], child)
    return broken


def all_rules(schema: dict[str, Any]) -> set[str]:
    rules = {r.get("message", r["rule"]) for r in schema.get("x-kubernetes-validations", [])}
    for child in schema.get("properties", {}).values():
        rules |= all_rules(child)
    if "items" in schema:
        rules |= all_rules(schema["items"])
    return rules


def schema_of(obj: dict[str, Any]) -> dict[str, Any]:
    return SCHEMAS[(obj["apiVersion"], obj["kind"])]


def structurally_valid(obj: dict[str, Any]) -> None:
    jsonschema.validate(
        obj,
        schema_of(obj),
        cls=jsonschema.Draft7Validator,
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


def _custom_resources(directory: Path) -> list[Path]:
    return [
        p
        for p in sorted(directory.glob("*.yaml"))
        if yaml.safe_load(p.read_text())["kind"] in {"TaxRule", "DiscountPolicy"}
    ]


VALID = _custom_resources(SAMPLES)
CEL_INVALID = _custom_resources(CEL_ONLY)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_samples_pass_every_cel_rule(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert cel_violations(schema_of(obj), obj) == []


@pytest.mark.parametrize("path", CEL_INVALID, ids=lambda p: p.name)
def test_samples_only_a_cel_rule_refuses(path: Path) -> None:
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# CEL: ")
    obj = yaml.safe_load(text)
    structurally_valid(obj)  # the schema alone would let it in
    assert cel_violations(schema_of(obj), obj) == [expected]


def test_every_cel_rule_is_exercised_by_a_sample() -> None:
    expected = {p.read_text().splitlines()[0].removeprefix("# CEL: ") for p in CEL_INVALID}
    rules = set().union(*(all_rules(schema) for schema in SCHEMAS.values()))
    assert rules == expected
    assert {yaml.safe_load(p.read_text())["kind"] for p in VALID} == {"TaxRule", "DiscountPolicy"}


def test_dates_compare_as_timestamps_not_strings() -> None:
    """A window of date-times in two offsets: the string order is wrong, the instants right."""
    obj = yaml.safe_load((SAMPLES / "discountpolicy-premium.yaml").read_text())
    obj["spec"]["startsAt"] = "2026-05-01T10:00:00+02:00"  # 08:00 UTC
    obj["spec"]["endsAt"] = "2026-05-01T09:00:00Z"  # later, though it sorts first as text
    assert obj["spec"]["endsAt"] < obj["spec"]["startsAt"]
    assert cel_violations(schema_of(obj), obj) == []
