"""What every discount use case is given: built once by bootstrap.py, passed as `deps`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from billing_common.clock import utcnow
from discount_service.service_layer.ports import ReadViewFactory, UnitOfWorkFactory


@dataclass(frozen=True)
class Dependencies:
    uow: UnitOfWorkFactory
    # When "now" is for quotes and redemptions (coupon windows, the redemption's time).
    clock: Callable[[], datetime] = field(default=utcnow)
    # Read views for the read-only use cases (quotes); None: they use a unit of work.
    reads: ReadViewFactory | None = None
