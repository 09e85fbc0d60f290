"""What every payment use case is given: built once by bootstrap.py, faked by the tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from billing_common.clock import utcnow
from payment_service.service_layer.gateways import GatewayRegistry
from payment_service.service_layer.ports import (
    InvoiceDirectory,
    SandboxWebhooks,
    UnitOfWorkFactory,
    WebhookSettings,
)


def new_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Dependencies:
    uow: UnitOfWorkFactory
    gateways: GatewayRegistry
    # None: no invoice service to ask about invoices not seen finalized yet.
    invoices: InvoiceDirectory | None = None
    webhooks: WebhookSettings = field(default_factory=lambda: WebhookSettings({}))
    sandbox: SandboxWebhooks | None = None
    clock: Callable[[], datetime] = field(default=utcnow)
    # How long to keep trying to record a gateway's answer while the database is away.
    record_outcome_within: timedelta = timedelta(seconds=15)
    new_id: Callable[[], str] = field(default=new_uuid)
