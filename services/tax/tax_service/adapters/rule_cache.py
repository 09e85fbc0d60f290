"""This process's copy of each tenant's rules (see RuleCache)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from tax_service.domain.model import TaxRule


class RuleCache:
    """Each tenant's rules held in this process, tagged with the tenant's rules version.

    Every rule change bumps the version in its own transaction, and a calculation either
    reads the version before using the copy or writes its result only if the version is
    still the copy's (checked in the INSERT itself, then calculated again with the current
    rules otherwise), so a result rests only on the tenant's current rule set, whichever
    replica made the last change. Bounded: the least recently used tenants are dropped."""

    def __init__(self, max_tenants: int = 1024) -> None:
        self._max_tenants = max_tenants
        self._entries: OrderedDict[str, tuple[int, tuple[TaxRule, ...]]] = OrderedDict()

    def get(self, tenant: str, version: int) -> tuple[TaxRule, ...] | None:
        entry = self._entries.get(tenant)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(tenant)
        return entry[1]

    def latest(self, tenant: str) -> tuple[int, tuple[TaxRule, ...]] | None:
        """The copy held for `tenant` and its version, whatever the current version is: for
        a write that checks the version itself (see SqlTaxUnitOfWork)."""
        entry = self._entries.get(tenant)
        if entry is not None:
            self._entries.move_to_end(tenant)
        return entry

    def forget(self, tenant: str, version: int) -> None:
        """Drop the tenant's copy if it is still the one of `version` (found out of date)."""
        entry = self._entries.get(tenant)
        if entry is not None and entry[0] == version:
            del self._entries[tenant]

    def put(self, tenant: str, version: int, rules: Sequence[TaxRule]) -> None:
        self._entries[tenant] = (version, tuple(rules))
        self._entries.move_to_end(tenant)
        while len(self._entries) > self._max_tenants:
            self._entries.popitem(last=False)
