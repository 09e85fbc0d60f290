"""SQLModel tables of the discount service. Every table carries `tenant_id`; names are
prefixed `discount_` because all services share SQLModel's metadata in one process."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from billing_common.db import ExactDecimal, UtcDateTime


def _money(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(ExactDecimal(), nullable=nullable))


def _when(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime(), nullable=nullable, index=index))


class CouponRow(SQLModel, table=True):
    __tablename__ = "discount_coupons"
    __table_args__ = (UniqueConstraint("tenant_id", "code_key", name="uq_discount_coupon_code"),)

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64, index=True)
    code: str = Field(max_length=64)
    # Upper-cased code: the unique constraint makes codes case-insensitive per tenant.
    code_key: str = Field(max_length=64)
    name: str = Field(max_length=200)
    discount_type: str = Field(max_length=16)
    rate: Decimal | None = _money()
    amount: Decimal | None = _money()
    currency: str | None = Field(default=None, max_length=3)
    starts_at: datetime | None = _when(nullable=True)
    ends_at: datetime | None = _when(nullable=True)
    max_redemptions: int | None = None
    max_redemptions_per_customer: int | None = None
    minimum_amount: Decimal | None = _money()
    minimum_currency: str | None = Field(default=None, max_length=3)
    active: bool = True
    priority: int = 0
    exclusive: bool = False
    redeemed_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    created_at: datetime = _when()
    updated_at: datetime = _when()


class CouponUsageRow(SQLModel, table=True):
    """How often one customer redeemed one coupon: the per-customer limit's counter."""

    __tablename__ = "discount_coupon_usage"

    tenant_id: str = Field(primary_key=True, max_length=64)
    coupon_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(primary_key=True, max_length=128)
    redeemed_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))


class PolicyRow(SQLModel, table=True):
    __tablename__ = "discount_policies"
    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_discount_policy_key"),)

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64, index=True)
    key: str = Field(max_length=253)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    # Kind-specific parameters as JSON with decimal strings (see repository._rule_to_json).
    parameters: str = Field(sa_column=Column(Text, nullable=False))
    priority: int = 0
    exclusive: bool = False
    active: bool = True
    starts_at: datetime | None = _when(nullable=True)
    ends_at: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    updated_at: datetime = _when()


class StackingSettingsRow(SQLModel, table=True):
    __tablename__ = "discount_stacking_settings"

    tenant_id: str = Field(primary_key=True, max_length=64)
    max_fraction: Decimal = Field(sa_column=Column(ExactDecimal(), nullable=False))
    # {"EUR": "100.00", ...}
    max_amounts: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = _when()


class RedemptionRow(SQLModel, table=True):
    __tablename__ = "discount_redemptions"
    __table_args__ = (
        # The idempotency record: one redemption per key and tenant, enforced by the database.
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_discount_redemption_key"),
        Index("ix_discount_redemptions_history", "tenant_id", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    customer_id: str = Field(max_length=128, index=True)
    customer_type: str | None = Field(default=None, max_length=64)
    reference: str | None = Field(default=None, max_length=128)
    currency: str = Field(max_length=3)
    amount: Decimal = Field(sa_column=Column(ExactDecimal(), nullable=False))
    total_discount: Decimal = Field(sa_column=Column(ExactDecimal(), nullable=False))
    amount_after: Decimal = Field(sa_column=Column(ExactDecimal(), nullable=False))
    # [{"code": ..., "reason": ...}] as answered at the time.
    rejected: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _when()


class RedemptionLineRow(SQLModel, table=True):
    __tablename__ = "discount_redemption_lines"

    id: int | None = Field(default=None, primary_key=True)
    redemption_id: str = Field(foreign_key="discount_redemptions.id", max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    position: int
    kind: str = Field(max_length=16)
    code: str | None = Field(default=None, max_length=64)
    name: str = Field(max_length=300)
    amount: Decimal = Field(sa_column=Column(ExactDecimal(), nullable=False))


class DiscountConfigVersionRow(SQLModel, table=True):
    """One counter per tenant, bumped in the same transaction as every change of the
    tenant's coupons (definitions, not their counters), policies or stacking settings. A
    quote reads it with the coupons it asks for, so a process uses its cached definitions
    only while they are the tenant's current ones, whichever replica changed them."""

    __tablename__ = "discount_config_versions"

    tenant_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
