"""Ports the payment use cases depend on besides the gateway (domain/gateway.py)."""

from __future__ import annotations

from typing import Protocol

from payment_service.domain.model import InvoiceSnapshot


class InvoiceDirectory(Protocol):
    async def lookup(self, tenant: str, invoice_id: str) -> InvoiceSnapshot | None:
        """The invoice as the invoice service knows it now; None if it does not exist.
        Raise billing_common.ports.PeerUnavailable when the invoice service cannot answer."""
