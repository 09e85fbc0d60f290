"""What the use cases are given: built once by bootstrap, passed as `deps` to every use case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from billing_common.clock import utcnow
from invoice_service.service_layer.ports import DiscountPort, TaxPort, UnitOfWorkFactory


@dataclass(frozen=True)
class Dependencies:
    uow: UnitOfWorkFactory
    tax: TaxPort
    discounts: DiscountPort
    clock: Callable[[], datetime] = field(default=utcnow)
