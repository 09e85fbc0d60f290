"""This process's copy of each tenant's sellers (see SellerCache)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from invoice_service.domain.sellers import Seller


@dataclass
class TenantSellers:
    """What a process holds of one tenant's sellers at one version: the default seller's id
    once read, and each seller once read (None: there is no seller of that id)."""

    version: int
    default_id: str | None = None
    default_known: bool = False
    sellers: dict[str, Seller | None] = field(default_factory=dict)


class SellerCache:
    """Each tenant's sellers held in this process, tagged with the tenant's seller version.

    Every change of a seller or of the default bumps the version in the change's own
    transaction, and a lookup reads the version before using the copy, so a copy is used
    only while it is the tenant's current one, whichever replica made the last change. A
    copy is filled only from a statement that read the version with the rows (one
    snapshot). Bounded: the least recently used tenants are dropped."""

    def __init__(self, max_tenants: int = 1024) -> None:
        self._max_tenants = max_tenants
        self._entries: OrderedDict[str, TenantSellers] = OrderedDict()

    def at(self, tenant: str, version: int) -> TenantSellers:
        """The copy at `version`; a fresh empty one if the copy held is of another."""
        entry = self._entries.get(tenant)
        if entry is None or entry.version != version:
            entry = self._entries[tenant] = TenantSellers(version)
        self._entries.move_to_end(tenant)
        while len(self._entries) > self._max_tenants:
            self._entries.popitem(last=False)
        return entry
