"""This process's copy of each tenant's rules (see RuleCache)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from tax_service.domain.model import TaxRule


class RuleCache:
    """Each tenant's rules held in this process, tagged with the tenant's rules version.

    Every rule change bumps the version in its own transaction, and a calculation reads the
    version in its transaction before using the copy, so a copy is used only while it is
    still the tenant's current rule set, whichever replica made the last change. Bounded:
    the least recently used tenants are dropped."""

    def __init__(self, max_tenants: int = 1024) -> None:
        self._max_tenants = max_tenants
        self._entries: OrderedDict[str, tuple[int, tuple[TaxRule, ...]]] = OrderedDict()

    def get(self, tenant: str, version: int) -> tuple[TaxRule, ...] | None:
        entry = self._entries.get(tenant)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(tenant)
        return entry[1]

    def put(self, tenant: str, version: int, rules: Sequence[TaxRule]) -> None:
        self._entries[tenant] = (version, tuple(rules))
        self._entries.move_to_end(tenant)
        while len(self._entries) > self._max_tenants:
            self._entries.popitem(last=False)
