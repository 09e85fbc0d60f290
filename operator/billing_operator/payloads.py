"""The wire contract between the custom resources and the services: keys, tenants and bodies.

Resource specs are camelCase (Kubernetes convention); the services' JSON is snake_case. The
bodies mirror the spec field for field, so a reader of a TaxRule knows what the service gets.
The API server has already validated the spec against the CRD schema; the checks here are
for what a schema cannot say (key length, decimal strings when validation was bypassed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_KEY_LENGTH = 253  # the services' by-key path parameter limit
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # billing_common.auth.TENANT_PATTERN


class SpecError(Exception):
    """The resource cannot be reconciled as written; changing it is the only fix."""


def resource_key(namespace: str, name: str) -> str:
    """The key under which a resource lives in its service: unique per cluster."""
    key = f"{namespace}.{name}"
    if len(key) > MAX_KEY_LENGTH:
        raise SpecError(
            f"'<namespace>.<name>' is {len(key)} characters; the services accept at most "
            f"{MAX_KEY_LENGTH}: use a shorter name"
        )
    return key


class TenantMissing(Exception):
    """The namespace names no tenant (yet): labelling it is the fix, so this is retried."""


class TenantRefused(Exception):
    """spec.tenant names another tenant than the namespace's: a resource may only write
    into its own namespace's tenant (whoever may create it there may not reach others)."""


def resolve_tenant(
    spec: Mapping[str, Any], namespace_tenants: Iterable[str], default: str | None
) -> str:
    """The namespace's tenant label/annotation, else the operator's default. `spec.tenant`
    may only repeat that tenant; it never chooses another one."""
    tenant = next(iter(namespace_tenants), None) or default
    requested = spec.get("tenant")
    if tenant is None:
        raise TenantMissing(
            "no tenant: label the namespace with billing.example.dev/tenant=<tenant>"
            + (f" (spec.tenant {requested!r} alone is not enough)" if requested else "")
        )
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise SpecError(f"tenant {tenant!r} does not match {TENANT_PATTERN.pattern}")
    if requested and requested != tenant:
        raise TenantRefused(
            f"spec.tenant {requested!r} is not this namespace's tenant {tenant!r}: a resource "
            "may only write into its namespace's tenant"
        )
    return tenant


def _decimal_string(value: Any, field: str) -> str:
    # Money and rates stay decimal strings end to end; a float would already have lost digits.
    if not isinstance(value, str):
        raise SpecError(f'{field} must be a decimal string such as "0.19", not {value!r}')
    try:
        Decimal(value)
    except InvalidOperation as exc:
        raise SpecError(f"{field} {value!r} is not a decimal number") from exc
    return value


def _required(spec: Mapping[str, Any], field: str) -> Any:
    if spec.get(field) is None:
        raise SpecError(f"spec.{field} is required")
    return spec[field]


def _discount(value: Mapping[str, Any], field: str) -> dict[str, Any]:
    kind = _required(value, "type")
    if kind == "percent":
        return {"type": "percent", "rate": _decimal_string(value.get("rate"), f"{field}.rate")}
    if kind == "fixed":
        return {
            "type": "fixed",
            "amount": _decimal_string(value.get("amount"), f"{field}.amount"),
            "currency": _required(value, "currency"),
        }
    raise SpecError(f"{field}.type must be percent or fixed, not {kind!r}")


def tax_rule_body(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Body of `PUT /v1/tax/rules/by-key/{key}`."""
    jurisdiction = _required(spec, "jurisdiction")
    body: dict[str, Any] = {
        "name": _required(spec, "displayName"),
        "jurisdiction": {
            "country": _required(jurisdiction, "country"),
            "region": jurisdiction.get("region"),
        },
        "category": _required(spec, "category"),
        "rate": _decimal_string(spec.get("rate"), "spec.rate"),
        "compound": bool(spec.get("compound", False)),
        "priority": spec.get("priority", 0),
        "valid_from": spec.get("validFrom"),
        "valid_to": spec.get("validTo"),
    }
    if spec.get("zeroRated") is not None:
        # Absent: the service derives it from the rate.
        body["zero_rated"] = spec["zeroRated"]
    if spec.get("supply") is not None:
        # Goods or services: decides reverse charge (AE) vs intra-community supply (K) and
        # export (G) vs out of scope (O). Absent: the service's default, services.
        body["supply"] = spec["supply"]
    return body


_POLICY_OPTIONAL = {
    "customerType": "customer_type",
    "currency": "currency",
    "priority": "priority",
    "exclusive": "exclusive",
    "active": "active",
    "startsAt": "starts_at",
    "endsAt": "ends_at",
}


def discount_policy_body(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Body of `PUT /v1/discounts/policies/{key}`. Absent optional fields are left out, so
    the service's own defaults apply."""
    body: dict[str, Any] = {"name": _required(spec, "displayName"), "kind": _required(spec, "kind")}
    for spec_field, body_field in _POLICY_OPTIONAL.items():
        if spec.get(spec_field) is not None:
            body[body_field] = spec[spec_field]
    if spec.get("discount") is not None:
        body["discount"] = _discount(spec["discount"], "spec.discount")
    if spec.get("tiers") is not None:
        body["tiers"] = [
            {
                "minimum": _decimal_string(tier.get("minimum"), f"spec.tiers[{i}].minimum"),
                "discount": _discount(_required(tier, "discount"), f"spec.tiers[{i}].discount"),
            }
            for i, tier in enumerate(spec["tiers"])
        ]
    return body
