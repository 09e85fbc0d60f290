"""What the tax use cases are given: built once by bootstrap, passed to every use case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tax_service.service_layer.ports import UnitOfWorkFactory, VatIdChecker


@dataclass(frozen=True)
class Dependencies:
    uow: UnitOfWorkFactory
    """A unit of work for one tenant: one transaction."""
    clock: Callable[[], datetime]
    """The current instant (timezone-aware, UTC)."""
    vat_ids: VatIdChecker | None = None
    """The online VAT id check; None: the offline (python-stdnum) check only."""
