"""Payment service: kernel tables, payable invoices, payments, history, refunds,
idempotency keys and webhook events.

Revision ID: 0001_payment_initial
Revises:
Create Date: 2026-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing_common.db import ExactDecimal
from billing_common.kernel_migration import create_kernel_tables, drop_kernel_tables

revision: str = "0001_payment_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    create_kernel_tables()
    op.create_table(
        "payment_payable_invoices",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("invoice_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("total", ExactDecimal(), nullable=True),
        sa.Column("amount_due", ExactDecimal(), nullable=True),
        sa.Column("number", sa.String(64), nullable=True),
        _when("created_at"),
        _when("updated_at"),
    )
    op.create_table(
        "payment_payments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("invoice_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("refunded_amount", ExactDecimal(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("gateway", sa.String(32), nullable=False),
        sa.Column("payment_method", sa.String(255), nullable=False),
        sa.Column("gateway_reference", sa.String(255), nullable=True),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("failure_message", sa.String(500), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("lease_until", nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.UniqueConstraint("gateway", "gateway_reference", name="uq_payment_gateway_reference"),
    )
    op.create_index(
        "ix_payment_payments_tenant_invoice", "payment_payments", ["tenant_id", "invoice_id"]
    )
    op.create_index(
        "ix_payment_payments_tenant_created", "payment_payments", ["tenant_id", "created_at"]
    )
    op.create_table(
        "payment_status_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("payment_id", sa.String(36), nullable=False),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=True),
        _when("at"),
    )
    op.create_index(
        "ix_payment_status_history_payment_id", "payment_status_history", ["payment_id"]
    )
    op.create_table(
        "payment_refunds",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("payment_id", sa.String(36), nullable=False),
        sa.Column("gateway", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("gateway_reference", sa.String(255), nullable=True),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("failure_message", sa.String(500), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("lease_until", nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.UniqueConstraint("gateway", "gateway_reference", name="uq_payment_refund_reference"),
    )
    op.create_index("ix_payment_refunds_payment_id", "payment_refunds", ["payment_id"])
    op.create_table(
        "payment_idempotency_keys",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "payment_webhook_events",
        sa.Column("gateway", sa.String(32), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("payment_id", sa.String(36), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        _when("received_at"),
    )


def downgrade() -> None:
    op.drop_table("payment_webhook_events")
    op.drop_table("payment_idempotency_keys")
    op.drop_index("ix_payment_refunds_payment_id", table_name="payment_refunds")
    op.drop_table("payment_refunds")
    op.drop_index("ix_payment_status_history_payment_id", table_name="payment_status_history")
    op.drop_table("payment_status_history")
    op.drop_index("ix_payment_payments_tenant_created", table_name="payment_payments")
    op.drop_index("ix_payment_payments_tenant_invoice", table_name="payment_payments")
    op.drop_table("payment_payments")
    op.drop_table("payment_payable_invoices")
    drop_kernel_tables()
