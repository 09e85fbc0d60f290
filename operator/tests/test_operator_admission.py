"""The chart's tenant admission policy, executed: its CEL (match condition, variables,
validation, message) evaluated with cel-python the way the API server evaluates a
ValidatingAdmissionPolicy, over the cases that matter, and checked to agree with the
operator's own tenant rule (billing_operator.payloads.resolve_tenant).

What only a cluster shows: that the API server compiles the expressions with its own CEL
environment (cel-go) and binds the policy; cel-python implements the same language spec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from billing_operator.payloads import TenantMissing, TenantRefused, resolve_tenant

RENDER = Path(__file__).resolve().parents[2] / "charts" / "tests" / "render_chart.py"
LABEL = "billing.example.dev/tenant"


def _start(values: dict[str, Any]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(RENDER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HELM_DRIVER": "memory"},
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(values))
    process.stdin.close()
    return process


def _objects(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    assert process.stdout is not None and process.stderr is not None
    out = process.stdout.read()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0, err[-3000:]
    return [o for o in yaml.safe_load_all(json.loads(out)["manifest"]) if o]


RENDERS = {
    "default": {},
    "house": {"operator": {"defaultTenant": "house", "watchNamespaces": ["demo", "shop"]}},
    "off": {"operator": {"admissionPolicy": {"enabled": False}}},
}


@pytest.fixture(scope="module")
def rendered() -> Iterator[dict[str, list[dict[str, Any]]]]:
    processes = {name: _start(values) for name, values in RENDERS.items()}  # in parallel
    yield {name: _objects(process) for name, process in processes.items()}


class Policy:
    """A ValidatingAdmissionPolicy's CEL, compiled once, evaluated per request."""

    def __init__(self, policy: dict[str, Any]) -> None:
        env = celpy.Environment()
        spec = policy["spec"]

        def compile_(expression: str) -> Any:
            return env.program(env.compile(expression))

        self.conditions = [compile_(c["expression"]) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], compile_(v["expression"])) for v in spec["variables"]]
        self.validations = [
            (compile_(v["expression"]), compile_(v["messageExpression"]))
            for v in spec["validations"]
        ]

    def admit(
        self,
        operation: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        namespace: dict[str, Any],
    ) -> tuple[bool, str | None]:
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(obj),
            "oldObject": celpy.json_to_cel(old),
            "namespaceObject": celpy.json_to_cel(namespace),
            "request": celpy.json_to_cel({"operation": operation}),
        }
        if not all(bool(c.evaluate(activation)) for c in self.conditions):
            return True, None  # not matched: the policy says nothing
        variables: dict[Any, Any] = {}
        for name, program in self.variables:
            activation["variables"] = celpy.celtypes.MapType(variables)
            value = program.evaluate(activation)
            assert not isinstance(value, celpy.CELEvalError), (name, value)
            variables[celpy.celtypes.StringType(name)] = value
        activation["variables"] = celpy.celtypes.MapType(variables)
        for check, message in self.validations:
            verdict = check.evaluate(activation)
            assert not isinstance(verdict, celpy.CELEvalError), verdict
            if not verdict:
                return False, str(message.evaluate(activation))
        return True, None


def _policy(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (policy,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    return policy, binding


def _namespace(
    name: str, label: str | None = None, annotation: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if label is not None:
        meta["labels"] = {LABEL: label, "kubernetes.io/metadata.name": name}
    if annotation is not None:
        meta["annotations"] = {LABEL: annotation}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _rule(tenant: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"displayName": "DE VAT", "rate": "0.19"}
    if tenant is not None:
        spec["tenant"] = tenant
    return {"apiVersion": "billing.example.dev/v1alpha1", "kind": "TaxRule", "spec": spec}


# (namespace label, annotation, spec.tenant) -> admitted, with the chart's default values.
CREATE_CASES = [
    ("acme", None, "acme", True),
    ("acme", None, "globex", False),
    ("acme", None, None, True),  # no spec.tenant: the namespace's tenant applies
    (None, "globex", "globex", True),
    (None, "globex", "acme", False),
    ("", "globex", "globex", True),  # an empty label does not count (as in the operator)
    ("acme", "globex", "globex", False),  # the label wins over the annotation
    (None, None, "acme", False),  # a namespace without a tenant grants none
]


@pytest.mark.parametrize(("label", "annotation", "tenant", "admitted"), CREATE_CASES)
def test_policy_admits_only_the_namespaces_tenant_and_agrees_with_the_operator(
    rendered: dict[str, list[dict[str, Any]]],
    label: str | None,
    annotation: str | None,
    tenant: str | None,
    admitted: bool,
) -> None:
    policy, _ = _policy(rendered["default"])
    namespace = _namespace("demo", label, annotation)
    allowed, message = Policy(policy).admit("CREATE", _rule(tenant), None, namespace)
    assert allowed is admitted, message
    if not admitted:
        assert message is not None
        assert f"spec.tenant {tenant} is not the tenant of namespace demo" in message
        assert "own namespace's tenant" in message

    # The operator, given the same namespace, refuses exactly what the policy refuses.
    namespace_tenants = [t for t in (label or None, annotation) if t][:1]
    try:
        resolve_tenant(_rule(tenant)["spec"], namespace_tenants, None)
        operator_admits = True
    except TenantRefused:
        operator_admits = False
    except TenantMissing:
        operator_admits = tenant is None  # waits for a label; the policy has nothing to check
    assert operator_admits is admitted


def test_policy_checks_updates_only_when_spec_tenant_changes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The operator's finalizer and annotation patches on an object that predates a
    namespace relabel must pass, or its deletion would hang."""
    policy = Policy(_policy(rendered["default"])[0])
    relabelled = _namespace("demo", "globex")
    stale = _rule("acme")
    assert policy.admit("UPDATE", stale, stale, relabelled) == (True, None)
    allowed, message = policy.admit("UPDATE", _rule("acme"), _rule(None), relabelled)
    assert not allowed and message and "(globex)" in message
    assert not policy.admit("UPDATE", _rule("initech"), _rule("globex"), relabelled)[0]
    assert policy.admit("UPDATE", _rule("globex"), _rule("acme"), relabelled)[0]


def test_policy_knows_the_operators_default_tenant_and_binds_where_it_watches(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policy, binding = _policy(rendered["house"])
    unlabelled = _namespace("demo")
    assert Policy(policy).admit("CREATE", _rule("house"), None, unlabelled) == (True, None)
    allowed, message = Policy(policy).admit("CREATE", _rule("acme"), None, unlabelled)
    assert not allowed and message and "(house)" in message
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["demo", "shop"]}
    ]
    assert "matchResources" not in _policy(rendered["default"])[1]["spec"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [
        {
            "apiGroups": ["billing.example.dev"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["taxrules", "discountpolicies"],
        }
    ]


def test_policy_can_be_switched_off(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {o["kind"] for o in rendered["off"]}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
