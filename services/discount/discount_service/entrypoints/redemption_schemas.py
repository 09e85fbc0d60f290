"""Request and response schemas of quotes, redemptions and releases, and their mapping to
the domain (the shared wire types are in schemas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from billing_common.money import Money
from billing_common.wire import Currency, DecimalString
from discount_service.domain.model import DiscountRequest, DiscountResult, Redemption
from discount_service.entrypoints.schemas import InputModel


class CustomerIO(InputModel):
    id: str = Field(min_length=1, max_length=128, examples=["c-1"])
    type: str | None = Field(default=None, max_length=64, examples=["premium"])


class DiscountRequestIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer": {"id": "c-1", "type": "premium"},
                    "currency": "EUR",
                    "amount": "200.00",
                    "coupon_codes": ["WELCOME10"],
                    "reference": "inv_123",
                }
            ]
        },
    )

    customer: CustomerIO
    currency: Currency
    amount: DecimalString = Field(description="the amount to discount, >= 0")
    coupon_codes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20
    )
    reference: str | None = Field(default=None, max_length=128, examples=["inv_123"])

    def to_domain(self) -> DiscountRequest:
        return DiscountRequest(
            customer_id=self.customer.id,
            customer_type=self.customer.type,
            amount=Money(self.amount, self.currency),
            coupon_codes=tuple(self.coupon_codes),
            reference=self.reference,
        )


class AppliedOut(BaseModel):
    kind: Literal["coupon", "user_type", "threshold"]
    code: str | None
    name: str
    amount: DecimalString


class RejectedOut(BaseModel):
    code: str
    reason: str


class DiscountOut(BaseModel):
    currency: str
    amount: DecimalString
    total_discount: DecimalString
    amount_after: DecimalString
    applied: list[AppliedOut]
    rejected: list[RejectedOut]

    @staticmethod
    def fields_of(result: DiscountResult) -> dict[str, Any]:
        return {
            "currency": result.currency,
            "amount": result.amount.amount,
            "total_discount": result.total_discount.amount,
            "amount_after": result.amount_after.amount,
            "applied": [
                AppliedOut(
                    kind=line.kind.value, code=line.code, name=line.name, amount=line.amount.amount
                )
                for line in result.applied
            ],
            "rejected": [
                RejectedOut(code=item.code, reason=item.reason.value) for item in result.rejected
            ],
        }

    @classmethod
    def of(cls, result: DiscountResult) -> DiscountOut:
        return cls(**cls.fields_of(result))


class RedemptionOut(DiscountOut):
    id: str
    customer: CustomerIO
    reference: str | None
    idempotency_key: str
    created_at: datetime

    @classmethod
    def of_redemption(cls, redemption: Redemption) -> RedemptionOut:
        return cls(
            id=redemption.id,
            customer=CustomerIO(id=redemption.customer_id, type=redemption.customer_type),
            reference=redemption.reference,
            idempotency_key=redemption.idempotency_key,
            created_at=redemption.created_at,
            **cls.fields_of(redemption.result),
        )


class RedemptionPage(BaseModel):
    items: list[RedemptionOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page")


class ReleaseIn(InputModel):
    idempotency_key: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$",
        description="the Idempotency-Key the redemption was made with",
    )


class ReleaseOut(BaseModel):
    released: bool = Field(description="false: no redemption under this key (already released)")
    redemption_id: str | None
