"""The invoice service, asked through the ServiceInvoker port (embedded, direct and Dapr
alike) with a short-lived service token for the tenant: `GET /v1/invoices/{id}`."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError

from billing_common.auth import TokenService
from billing_common.ports import PeerUnavailable, ServiceInvoker
from payment_service.domain.model import InvoiceSnapshot, InvoiceState

INVOICE_APP_ID = "invoice"
SERVICE_SUBJECT = "svc:payment"
SERVICE_TOKEN_TTL_SECONDS = 300


class _CustomerOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str


class _InvoiceOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    status: InvoiceState
    number: str | None = None
    customer: _CustomerOut
    currency: str
    total: Decimal
    version: int


class InvokerInvoiceDirectory:
    def __init__(self, invoker: ServiceInvoker, tokens: TokenService) -> None:
        self._invoker = invoker
        self._tokens = tokens

    async def lookup(self, tenant: str, invoice_id: str) -> InvoiceSnapshot | None:
        token = self._tokens.mint(
            subject=SERVICE_SUBJECT,
            tenant=tenant,
            scopes=["invoice:read"],
            ttl_seconds=SERVICE_TOKEN_TTL_SECONDS,
        )
        response = await self._invoker.invoke(
            INVOICE_APP_ID,
            "GET",
            f"/v1/invoices/{quote(invoice_id, safe='')}",
            headers={"authorization": f"Bearer {token}"},
            idempotent=True,
        )
        if response.status_code in (404, 422):  # no such invoice (or not an invoice id at all)
            return None
        if not response.ok:
            raise PeerUnavailable(INVOICE_APP_ID, f"answered {response.status_code}")
        try:
            body = _InvoiceOut.model_validate(response.body)
        except ValidationError as exc:
            raise PeerUnavailable(INVOICE_APP_ID, f"unexpected invoice body: {exc}") from exc
        return InvoiceSnapshot(
            invoice_id=body.id,
            status=body.status,
            number=body.number,
            customer_id=body.customer.id,
            currency=body.currency,
            total=body.total,
            version=body.version,
        )
