"""The documented sample rule set (`sample_rules.toml`, described in services/tax/README.md),
loaded for tenant "demo" — the development token's tenant — on the first start of the
embedded runtime.

Each rule's id is derived from its key, so the set is the same on every machine and does not
change when the file is reordered.
"""

from __future__ import annotations

import tomllib
import uuid
from datetime import date
from decimal import Decimal
from importlib.resources import files
from typing import Any

from tax_service.domain.model import Jurisdiction, Supply, TaxRule

SAMPLE_TENANT = "demo"
# Bump the version when the set changes: rules missing by key are then added once more.
SAMPLE_MARKER = f"tax:samples:v1:{SAMPLE_TENANT}"
SAMPLE_FILE = "sample_rules.toml"

_ID_NAMESPACE = uuid.UUID("7a3e5d10-5a6b-4c1e-9f1e-2f4f0c0b7a51")
_FIELDS = {
    "key",
    "jurisdiction",
    "category",
    "name",
    "rate",
    "valid_from",
    "valid_to",
    "zero_rated",
    "compound",
    "priority",
    "supply",
}


def _date(value: Any, field: str, key: str) -> date:
    # TOML dates arrive as date objects; anything else is a mistake in the file.
    if not isinstance(value, date):
        raise ValueError(f"sample rule {key}: {field} must be a TOML date such as 2024-01-01")
    return value


def _rule(entry: dict[str, Any]) -> TaxRule:
    key = str(entry["key"])
    unknown = set(entry) - _FIELDS
    if unknown:
        raise ValueError(f"sample rule {key}: unknown fields {sorted(unknown)}")
    country, _, region = str(entry["jurisdiction"]).partition("-")
    if not isinstance(entry["rate"], str):
        raise ValueError(f'sample rule {key}: rate must be a string such as "0.19"')
    valid_to = entry.get("valid_to")
    return TaxRule(
        id=str(uuid.uuid5(_ID_NAMESPACE, key)),
        key=key,
        jurisdiction=Jurisdiction(country, region or None),
        category=str(entry["category"]),
        name=str(entry["name"]),
        rate=Decimal(entry["rate"]),
        valid_from=_date(entry["valid_from"], "valid_from", key),
        valid_to=_date(valid_to, "valid_to", key) if valid_to is not None else None,
        zero_rated=bool(entry.get("zero_rated", False)),
        compound=bool(entry.get("compound", False)),
        priority=int(entry.get("priority", 0)),
        supply=Supply(str(entry.get("supply", Supply.SERVICES.value))),
    )


def parse_sample_rules(text: str) -> tuple[TaxRule, ...]:
    """Parse and validate a sample file (every rule through the domain's checks)."""
    entries = tomllib.loads(text).get("rules", [])
    rules = tuple(_rule(entry) for entry in entries)
    keys = [rule.key for rule in rules]
    if len(set(keys)) != len(keys):
        raise ValueError("sample rule keys must be unique")
    return rules


def load_sample_rules() -> tuple[TaxRule, ...]:
    return parse_sample_rules(files("tax_service").joinpath(SAMPLE_FILE).read_text("utf-8"))


SAMPLE_RULES: tuple[TaxRule, ...] = load_sample_rules()
