"""SQLModel tables of the tax service. Every table carries `tenant_id`; names are prefixed
`tax_` because all services share SQLModel's metadata when they run in one process."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, Index, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from billing_common.db import ExactDecimal, UtcDateTime


def _decimal() -> Any:
    return Field(sa_column=Column(ExactDecimal(), nullable=False))


def _when(*, index: bool = False) -> Any:
    return Field(sa_column=Column(UtcDateTime(), nullable=False, index=index))


class TaxRuleRow(SQLModel, table=True):
    __tablename__ = "tax_rules"
    __table_args__ = (
        # NULL keys do not collide (both databases treat NULLs as distinct), so only rules
        # that have a key are unique by it.
        UniqueConstraint("tenant_id", "key", name="uq_tax_rules_key"),
        Index("ix_tax_rules_lookup", "tenant_id", "country", "category"),
        CheckConstraint(
            "valid_from IS NULL OR valid_to IS NULL OR valid_to > valid_from",
            name="ck_tax_rules_validity",
        ),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    key: str | None = Field(default=None, max_length=253)
    country: str = Field(max_length=2)
    region: str | None = Field(default=None, max_length=3)
    category: str = Field(max_length=64)
    name: str = Field(max_length=200)
    rate: Decimal = _decimal()
    zero_rated: bool = False
    compound: bool = False
    priority: int = 0
    supply: str = Field(default="services", max_length=16)
    # NULL valid_from: valid from always; valid_to is exclusive, NULL: no end.
    valid_from: date | None = Field(default=None, sa_column=Column(Date(), nullable=True))
    valid_to: date | None = Field(default=None, sa_column=Column(Date(), nullable=True))
    created_at: datetime = _when()
    updated_at: datetime = _when()


class TaxCalculationRow(SQLModel, table=True):
    """One calculation. Totals and the fields one searches by are columns; the lines (inputs
    and per-rule breakdown, amounts as decimal strings) are an immutable JSON snapshot, so
    the record never changes when a rule is edited later."""

    __tablename__ = "tax_calculations"
    __table_args__ = (
        Index("ix_tax_calculations_history", "tenant_id", "created_at", "id"),
        Index("ix_tax_calculations_reference", "tenant_id", "reference"),
        Index("ix_tax_calculations_customer", "tenant_id", "customer_id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    created_at: datetime = _when()
    calculation_date: date = Field(sa_column=Column(Date(), nullable=False))
    currency: str = Field(max_length=3)
    price_mode: str = Field(max_length=16)
    country: str = Field(max_length=2)
    region: str | None = Field(default=None, max_length=3)
    customer_id: str | None = Field(default=None, max_length=128)
    tax_status: str = Field(max_length=16)
    tax_id: str | None = Field(default=None, max_length=128)
    reference: str | None = Field(default=None, max_length=128)
    total_net: Decimal = _decimal()
    total_tax: Decimal = _decimal()
    total_gross: Decimal = _decimal()
    line_count: int
    lines: str = Field(sa_column=Column(Text, nullable=False))
    # The VAT decision (migration 0003): NULL on calculations made before it, read back as
    # a domestic supply by parties in the jurisdiction.
    treatment: str | None = Field(default=None, max_length=32)
    parties: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    evidence: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Where the taxes were rounded (migration 0004): NULL on calculations made before it,
    # which were all rounded per line.
    rounding: str | None = Field(default=None, max_length=16)


class TaxRulesVersionRow(SQLModel, table=True):
    """One counter per tenant, bumped in the same transaction as every change of the
    tenant's rules. A calculation reads it (one primary-key lookup) to know whether the
    rules a process holds in memory are still the tenant's current rules, so every replica
    sees a rule change committed through any other at once."""

    __tablename__ = "tax_rules_versions"

    tenant_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(
        default=0, sa_column=Column(BigInteger(), nullable=False, server_default="0")
    )
