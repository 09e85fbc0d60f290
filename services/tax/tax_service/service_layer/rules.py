"""Use cases of the tax rules: each runs in one transaction of one tenant (the upsert and
the sample loading may run a second after losing a race on the unique key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from billing_common.ports import KeyValueStore
from tax_service.domain.errors import DuplicateRuleKey, RuleNotFound
from tax_service.domain.model import TaxRule
from tax_service.service_layer.dependencies import Dependencies
from tax_service.service_layer.ports import RuleQuery


@dataclass(frozen=True)
class RulePage:
    items: list[TaxRule]
    total: int


@dataclass(frozen=True)
class Upserted:
    rule: TaxRule
    created: bool
    changed: bool


async def create_rule(tenant: str, rule: TaxRule, deps: Dependencies) -> TaxRule:
    now = deps.clock()
    stored = replace(rule, created_at=now, updated_at=now)
    async with deps.uow(tenant) as uow:
        if rule.key is not None and await uow.rules.get_by_key(rule.key) is not None:
            raise DuplicateRuleKey(rule.key)
        await uow.rules.add(stored)
        await uow.commit()
    return stored


async def get_rule(tenant: str, rule_id: str, deps: Dependencies) -> TaxRule:
    async with deps.uow(tenant) as uow:
        rule = await uow.rules.get(rule_id)
    if rule is None:
        raise RuleNotFound(rule_id)
    return rule


async def get_rule_by_key(tenant: str, key: str, deps: Dependencies) -> TaxRule:
    async with deps.uow(tenant) as uow:
        rule = await uow.rules.get_by_key(key)
    if rule is None:
        raise RuleNotFound(f"with key {key!r}")
    return rule


async def list_rules(
    tenant: str, query: RuleQuery, deps: Dependencies, *, limit: int, offset: int
) -> RulePage:
    async with deps.uow(tenant) as uow:
        items, total = await uow.rules.search(query, limit=limit, offset=offset)
    return RulePage(items, total)


async def replace_rule(tenant: str, rule: TaxRule, deps: Dependencies) -> TaxRule:
    """Replace the definition of the rule with `rule.id` (its key included)."""
    now = deps.clock()
    async with deps.uow(tenant) as uow:
        current = await uow.rules.get(rule.id)
        if current is None:
            raise RuleNotFound(rule.id)
        if current.key == rule.key and current.same_definition(rule):
            return current
        updated = replace(rule, created_at=current.created_at, updated_at=now)
        await uow.rules.update(updated)
        await uow.commit()
    return updated


async def delete_rule(tenant: str, rule_id: str, deps: Dependencies) -> None:
    async with deps.uow(tenant) as uow:
        if not await uow.rules.delete(rule_id):
            raise RuleNotFound(rule_id)
        await uow.commit()


async def upsert_rule_by_key(
    tenant: str, key: str, definition: TaxRule, deps: Dependencies
) -> Upserted:
    """Create the rule with this key, or bring the existing one to `definition`.

    Idempotent: an unchanged definition changes nothing (not even updated_at). If a
    concurrent request creates the key first, the insert fails on the unique key and this
    runs once more as an update."""
    now = deps.clock()
    definition = replace(definition, key=key)
    for attempt in range(2):
        try:
            async with deps.uow(tenant) as uow:
                current = await uow.rules.get_by_key(key)
                if current is None:
                    created = replace(definition, created_at=now, updated_at=now)
                    await uow.rules.add(created)
                    await uow.commit()
                    return Upserted(created, created=True, changed=True)
                if current.same_definition(definition):
                    return Upserted(current, created=False, changed=False)
                updated = replace(
                    definition, id=current.id, created_at=current.created_at, updated_at=now
                )
                await uow.rules.update(updated)
                await uow.commit()
                return Upserted(updated, created=False, changed=True)
        except DuplicateRuleKey:
            if attempt:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


async def delete_rule_by_key(tenant: str, key: str, deps: Dependencies) -> bool:
    """Delete the rule with this key; False if there was none (deleting is idempotent)."""
    async with deps.uow(tenant) as uow:
        deleted = await uow.rules.delete_by_key(key)
        await uow.commit()
    return deleted


# --- sample data ------------------------------------------------------------------------


async def ensure_samples(
    tenant: str,
    rules: Sequence[TaxRule],
    deps: Dependencies,
    *,
    state: KeyValueStore,
    marker: str,
) -> int:
    """Load the sample rules once per `marker`; return how many were added.

    Rules are matched by key, so a crash between loading and setting the marker loads
    nothing twice, and a replica starting at the same moment (whose insert then fails on
    the unique key) simply runs once more and finds them. Once the marker is set, rules an
    administrator deleted or changed stay as they are on later starts."""
    if await state.get(marker) is not None:
        return 0
    now = deps.clock()
    for attempt in range(2):
        try:
            added = await _add_missing_rules(tenant, rules, deps, now=now)
            break
        except DuplicateRuleKey:
            if attempt:
                raise
    await state.set(marker, {"loaded_at": now.isoformat(), "rules": added})
    return added


async def _add_missing_rules(
    tenant: str, rules: Sequence[TaxRule], deps: Dependencies, *, now: datetime
) -> int:
    added = 0
    async with deps.uow(tenant) as uow:
        for rule in rules:
            if rule.key is None:
                raise ValueError(f"sample rule {rule.name!r} needs a key")
            if await uow.rules.get_by_key(rule.key) is None:
                await uow.rules.add(replace(rule, created_at=now, updated_at=now))
                added += 1
        await uow.commit()
    return added
