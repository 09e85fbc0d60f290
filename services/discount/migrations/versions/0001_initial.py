"""Initial schema: kernel tables (outbox, inbox, kv_state) and the discount tables.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing_common.db import ExactDecimal
from billing_common.kernel_migration import create_kernel_tables, drop_kernel_tables
from discount_service.adapters.orm import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_kernel_tables()
    op.create_table(
        "discount_coupons",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("code_key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("discount_type", sa.String(16), nullable=False),
        sa.Column("rate", ExactDecimal(), nullable=True),
        sa.Column("amount", ExactDecimal(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("max_redemptions_per_customer", sa.Integer(), nullable=True),
        sa.Column("minimum_amount", ExactDecimal(), nullable=True),
        sa.Column("minimum_currency", sa.String(3), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("exclusive", sa.Boolean(), nullable=False),
        sa.Column("redeemed_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "code_key", name="uq_discount_coupon_code"),
        sa.CheckConstraint("redeemed_count >= 0", name="ck_discount_coupon_count"),
    )
    op.create_table(
        "discount_coupon_usage",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("coupon_id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("redeemed_count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "discount_policies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("key", sa.String(253), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("exclusive", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=True),
        sa.Column("ends_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "key", name="uq_discount_policy_key"),
    )
    op.create_table(
        "discount_stacking_settings",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("max_fraction", ExactDecimal(), nullable=False),
        sa.Column("max_amounts", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "discount_redemptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False, index=True),
        sa.Column("customer_type", sa.String(64), nullable=True),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("total_discount", ExactDecimal(), nullable=False),
        sa.Column("amount_after", ExactDecimal(), nullable=False),
        sa.Column("rejected", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_discount_redemption_key"),
    )
    op.create_index(
        "ix_discount_redemptions_history",
        "discount_redemptions",
        ["tenant_id", "created_at", "id"],
    )
    op.create_table(
        "discount_redemption_lines",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "redemption_id",
            sa.String(36),
            sa.ForeignKey("discount_redemptions.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("discount_redemption_lines")
    op.drop_index("ix_discount_redemptions_history", table_name="discount_redemptions")
    op.drop_table("discount_redemptions")
    op.drop_table("discount_stacking_settings")
    op.drop_table("discount_policies")
    op.drop_table("discount_coupon_usage")
    op.drop_table("discount_coupons")
    drop_kernel_tables()
