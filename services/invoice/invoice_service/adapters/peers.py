"""The tax and discount services, reached only through the ServiceInvoker port with the
HTTP contracts of docs/api-contracts.md. Each call carries a short-lived service token for
the caller's tenant with just the scope it needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billing_common.auth import TokenService
from billing_common.money import format_amount
from billing_common.ports import InvocationResponse, ServiceInvoker
from billing_common.service_tokens import ServiceTokenCache
from billing_common.wire import DecimalString
from invoice_service.domain.errors import PeerContractViolation, PeerRejected
from invoice_service.domain.model import AppliedDiscount, Customer, PriceMode, TaxComponent
from invoice_service.domain.pricing import DiscountResult, TaxLineResult, TaxResult
from invoice_service.service_layer.ports import TaxLineRequest

SERVICE_SUBJECT = "svc:invoice"
SERVICE_TOKEN_TTL_SECONDS = 300
# Peer answers the client can act on (bad jurisdiction, coupon that cannot apply): passed
# on as 422. Any other 4xx means our request or token is wrong: 502.
CLIENT_FIXABLE = frozenset({409, 422})


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _TaxOut(_Body):
    rule_id: str | None = None
    name: str
    rate: DecimalString
    amount: DecimalString
    compound: bool = False


class _TaxLineOut(_Body):
    id: str
    net: DecimalString
    tax: DecimalString
    gross: DecimalString
    exemption: str | None = None
    taxes: list[_TaxOut] = Field(default_factory=list)


class _TaxCalculationOut(_Body):
    id: str
    lines: list[_TaxLineOut]


class _AppliedOut(_Body):
    kind: str
    code: str | None = None
    name: str
    amount: DecimalString


class _RejectedOut(_Body):
    code: str
    reason: str


class _DiscountOut(_Body):
    id: str | None = None
    total_discount: DecimalString
    applied: list[_AppliedOut] = Field(default_factory=list)
    rejected: list[_RejectedOut] = Field(default_factory=list)


def _parse(app_id: str, model: type[_Body], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise PeerContractViolation(f"{app_id} answered an unexpected body: {exc}") from exc


def _check(app_id: str, response: InvocationResponse) -> None:
    if response.ok:
        return
    body = response.body if isinstance(response.body, Mapping) else {}
    detail = str(body.get("detail") or body.get("title") or f"status {response.status_code}")
    problem_type = body.get("type")
    if response.status_code in CLIENT_FIXABLE:
        extra = {k: body[k] for k in ("code", "reason", "errors") if k in body}
        raise PeerRejected(
            app_id,
            response.status_code,
            str(problem_type) if problem_type else None,
            detail,
            **extra,
        )
    raise PeerContractViolation(f"{app_id} refused the call ({response.status_code}): {detail}")


class _PeerClient:
    def __init__(self, invoker: ServiceInvoker, tokens: TokenService) -> None:
        self._invoker = invoker
        self._tokens = ServiceTokenCache(
            tokens, subject=SERVICE_SUBJECT, ttl_seconds=SERVICE_TOKEN_TTL_SECONDS
        )

    def _headers(self, tenant: str, scope: str, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self._tokens.bearer(tenant, scope)}", **extra}


class InvokerTaxClient(_PeerClient):
    APP_ID = "tax"

    async def calculate(
        self,
        *,
        tenant: str,
        currency: str,
        customer: Customer,
        price_mode: PriceMode,
        on: date,
        reference: str,
        lines: Sequence[TaxLineRequest],
    ) -> TaxResult:
        body = {
            "currency": currency,
            "jurisdiction": {"country": customer.country, "region": customer.region},
            "customer": {
                "id": customer.id,
                "tax_status": customer.tax_status.value,
                "tax_id": customer.tax_id,
            },
            "price_mode": price_mode.value,
            "date": on.isoformat(),
            "reference": reference,
            "lines": [
                {
                    "id": line.id,
                    "description": line.description,
                    "unit_price": format_amount(line.unit_price),
                    "quantity": format_amount(line.quantity),
                    "category": line.category,
                }
                for line in lines
            ],
        }
        response = await self._invoker.invoke(
            self.APP_ID,
            "POST",
            "/v1/tax/calculations",
            json=body,
            headers=self._headers(tenant, "tax:calculate"),
        )
        _check(self.APP_ID, response)
        parsed: _TaxCalculationOut = _parse(self.APP_ID, _TaxCalculationOut, response.body)
        return TaxResult(
            calculation_id=parsed.id,
            lines=tuple(
                TaxLineResult(
                    id=line.id,
                    net=line.net,
                    tax=line.tax,
                    gross=line.gross,
                    exemption=line.exemption,
                    taxes=tuple(
                        TaxComponent(t.rule_id, t.name, t.rate, t.amount, t.compound)
                        for t in line.taxes
                    ),
                )
                for line in parsed.lines
            ),
        )

    async def discard(self, *, tenant: str, reference: str) -> None:
        response = await self._invoker.invoke(
            self.APP_ID,
            "DELETE",
            f"/v1/tax/calculations?reference={quote(reference, safe='')}",
            headers=self._headers(tenant, "tax:calculate"),
            idempotent=True,  # discarding twice discards once
        )
        if not response.ok:
            raise PeerContractViolation(
                f"{self.APP_ID} refused to discard calculations ({response.status_code})"
            )


class InvokerDiscountClient(_PeerClient):
    APP_ID = "discount"

    @staticmethod
    def _body(
        customer: Customer,
        currency: str,
        amount: Decimal,
        coupon_codes: Sequence[str],
        reference: str,
    ) -> dict[str, Any]:
        return {
            "customer": {"id": customer.id, "type": customer.type},
            "currency": currency,
            "amount": format_amount(amount),
            "coupon_codes": list(coupon_codes),
            "reference": reference,
        }

    def _result(self, response: InvocationResponse) -> DiscountResult:
        _check(self.APP_ID, response)
        parsed: _DiscountOut = _parse(self.APP_ID, _DiscountOut, response.body)
        return DiscountResult(
            total_discount=parsed.total_discount,
            applied=tuple(
                AppliedDiscount(a.kind, a.name, a.amount, a.code) for a in parsed.applied
            ),
            rejected=tuple((r.code, r.reason) for r in parsed.rejected),
            redemption_id=parsed.id,
        )

    async def quote(
        self,
        *,
        tenant: str,
        customer: Customer,
        currency: str,
        amount: Decimal,
        coupon_codes: Sequence[str],
        reference: str,
    ) -> DiscountResult:
        response = await self._invoker.invoke(
            self.APP_ID,
            "POST",
            "/v1/discounts/quotes",
            json=self._body(customer, currency, amount, coupon_codes, reference),
            headers=self._headers(tenant, "discount:quote"),
            idempotent=True,  # a quote has no side effect: safe to retry
        )
        return self._result(response)

    async def redeem(
        self,
        *,
        tenant: str,
        idempotency_key: str,
        customer: Customer,
        currency: str,
        amount: Decimal,
        coupon_codes: Sequence[str],
        reference: str,
    ) -> DiscountResult:
        response = await self._invoker.invoke(
            self.APP_ID,
            "POST",
            "/v1/discounts/redemptions",
            json=self._body(customer, currency, amount, coupon_codes, reference),
            headers=self._headers(
                tenant, "discount:redeem", **{"idempotency-key": idempotency_key}
            ),
            idempotent=True,  # the Idempotency-Key makes a retried redemption count once
        )
        return self._result(response)

    async def release(self, *, tenant: str, idempotency_key: str) -> None:
        response = await self._invoker.invoke(
            self.APP_ID,
            "POST",
            "/v1/discounts/redemptions/releases",
            json={"idempotency_key": idempotency_key},
            headers=self._headers(tenant, "discount:redeem"),
            idempotent=True,  # releasing twice releases once
        )
        if not response.ok:
            raise PeerContractViolation(
                f"{self.APP_ID} refused to release a redemption ({response.status_code})"
            )
