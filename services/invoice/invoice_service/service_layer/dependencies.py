"""What the use cases are given: built once by bootstrap, passed as `deps` to every use case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from billing_common.clock import utcnow
from invoice_service.service_layer.ports import (
    DiscountPort,
    EInvoiceRequirements,
    TaxPort,
    UnitOfWorkFactory,
)


@dataclass(frozen=True)
class Dependencies:
    uow: UnitOfWorkFactory
    tax: TaxPort
    discounts: DiscountPort
    clock: Callable[[], datetime] = field(default=utcnow)
    # Which e-invoice a finalized invoice can be offered with (bootstrap: the EN 16931
    # writer). None: finalized invoices are offered with their PDF only.
    einvoices: EInvoiceRequirements | None = None
    # Units of work of the payment events' handlers (the settlement lane), on connections of
    # their own so a settlement never waits for one an invoice creation holds. None: `uow`.
    settlement_uow: UnitOfWorkFactory | None = None
