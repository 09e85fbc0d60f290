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
from invoice_service.domain.model import (
    AppliedDiscount,
    Customer,
    PriceMode,
    TaxComponent,
    VatBreakdown,
)
from invoice_service.domain.pricing import DiscountResult, TaxLineResult, TaxResult
from invoice_service.domain.sellers import SellerSnapshot
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
    vat_category: str | None = Field(default=None, max_length=8)
    vat_exemption_reason: str | None = None
    vat_exemption_reason_code: str | None = Field(default=None, max_length=32)


class _BreakdownOut(_Body):
    vat_category: str = Field(max_length=8)
    rate: DecimalString
    taxable_amount: DecimalString
    tax_amount: DecimalString
    exemption_reason: str | None = None
    exemption_reason_code: str | None = Field(default=None, max_length=32)


class _TaxCalculationOut(_Body):
    id: str
    lines: list[_TaxLineOut]
    treatment: str | None = Field(default=None, max_length=32)
    breakdown: list[_BreakdownOut] = Field(default_factory=list)


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


def _tax_customer(customer: Customer) -> dict[str, Any]:
    """The customer as the tax service takes it. The fields issue 12 added go only when the
    invoice has them: a request without them is byte for byte what it was before."""
    body: dict[str, Any] = {
        "id": customer.id,
        "tax_status": customer.tax_status.value,
        "tax_id": customer.tax_id,
    }
    optional = {
        "country": customer.location_country,
        "region": customer.location_region,
        "kind": customer.kind.value if customer.kind else None,
        "exemption_certificate": customer.exemption_certificate,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


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
        seller: SellerSnapshot | None = None,
    ) -> TaxResult:
        body: dict[str, Any] = {
            "currency": currency,
            "jurisdiction": {"country": customer.country, "region": customer.region},
            "customer": _tax_customer(customer),
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
        if seller is not None:
            body["seller"] = {
                "country": seller.address.country,
                "region": seller.address.region,
                "vat_id": seller.vat_id,
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
                    vat_category=line.vat_category,
                    vat_exemption_reason=line.vat_exemption_reason,
                    vat_exemption_reason_code=line.vat_exemption_reason_code,
                    taxes=tuple(
                        TaxComponent(t.rule_id, t.name, t.rate, t.amount, t.compound)
                        for t in line.taxes
                    ),
                )
                for line in parsed.lines
            ),
            treatment=parsed.treatment,
            breakdown=tuple(
                VatBreakdown(
                    vat_category=b.vat_category,
                    rate=b.rate,
                    taxable_amount=b.taxable_amount,
                    tax_amount=b.tax_amount,
                    exemption_reason=b.exemption_reason,
                    exemption_reason_code=b.exemption_reason_code,
                )
                for b in parsed.breakdown
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
