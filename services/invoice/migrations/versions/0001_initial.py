"""Invoice service schema: kernel tables (outbox, inbox, kv_state) and the invoice tables.

Revision ID: 0001_invoice_initial
Revises:
Create Date: 2026-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing_common.db import ExactDecimal
from billing_common.kernel_migration import create_kernel_tables, drop_kernel_tables

revision: str = "0001_invoice_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _money(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, ExactDecimal(), nullable=nullable)


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _invoice_fk() -> sa.Column:
    return sa.Column(
        "invoice_id", sa.String(36), sa.ForeignKey("invoice_invoices.id"), nullable=False
    )


def upgrade() -> None:
    create_kernel_tables()
    op.create_table(
        "invoice_invoices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("series", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(32), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("price_mode", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("customer_type", sa.String(64), nullable=True),
        sa.Column("customer_country", sa.String(2), nullable=False),
        sa.Column("customer_region", sa.String(16), nullable=True),
        sa.Column("customer_tax_status", sa.String(16), nullable=False),
        sa.Column("customer_tax_id", sa.String(64), nullable=True),
        sa.Column("customer_name", sa.String(200), nullable=True),
        sa.Column("customer_email", sa.String(254), nullable=True),
        sa.Column("customer_address", sa.Text(), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        _money("subtotal"),
        _money("discount_total"),
        _money("net_total"),
        _money("tax_total"),
        _money("total"),
        _money("amount_paid"),
        sa.Column("due_days", sa.Integer(), nullable=False),
        sa.Column("tax_calculation_id", sa.String(64), nullable=True),
        sa.Column("discount_redemption_id", sa.String(64), nullable=True),
        _when("created_at"),
        _when("updated_at"),
        _when("issued_at", nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        _when("paid_at", nullable=True),
        _when("voided_at", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_invoice_idempotency_key"),
        sa.UniqueConstraint("tenant_id", "series", "sequence", name="uq_invoice_number"),
    )
    op.create_index(
        "ix_invoice_invoices_page", "invoice_invoices", ["tenant_id", "created_at", "id"]
    )
    op.create_index("ix_invoice_invoices_status", "invoice_invoices", ["tenant_id", "status"])
    op.create_index(
        "ix_invoice_invoices_customer", "invoice_invoices", ["tenant_id", "customer_id"]
    )
    op.create_table(
        "invoice_lines",
        sa.Column(
            "invoice_id", sa.String(36), sa.ForeignKey("invoice_invoices.id"), primary_key=True
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _money("quantity"),
        _money("unit_price"),
        sa.Column("category", sa.String(64), nullable=False),
        _money("subtotal"),
        _money("discount"),
        _money("net"),
        _money("tax"),
        _money("total"),
        sa.Column("exemption", sa.String(32), nullable=True),
    )
    op.create_table(
        "invoice_line_taxes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _invoice_fk(),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        _money("rate"),
        _money("amount"),
        sa.Column("compound", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_invoice_line_taxes_invoice_id", "invoice_line_taxes", ["invoice_id"])
    op.create_table(
        "invoice_discounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _invoice_fk(),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("name", sa.String(300), nullable=False),
        _money("amount"),
    )
    op.create_index("ix_invoice_discounts_invoice_id", "invoice_discounts", ["invoice_id"])
    op.create_table(
        "invoice_status_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _invoice_fk(),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        _when("at"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
    )
    op.create_index(
        "ix_invoice_status_history_invoice_id", "invoice_status_history", ["invoice_id"]
    )
    op.create_table(
        "invoice_payments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _invoice_fk(),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("refund_id", sa.String(64), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        _money("amount"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("flag", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        _when("at"),
    )
    op.create_index("ix_invoice_payments_invoice_id", "invoice_payments", ["invoice_id"])
    op.create_table(
        "invoice_number_series",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("series", sa.String(16), primary_key=True),
        sa.Column("last_number", sa.Integer(), nullable=False),
    )
    op.create_table(
        "invoice_received_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("subject", sa.String(128), nullable=True),
        sa.Column("source", sa.String(200), nullable=False),
        _when("occurred_at"),
        _when("received_at"),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_invoice_received_events_ref", "invoice_received_events", ["tenant_id", "reference"]
    )


def downgrade() -> None:
    op.drop_table("invoice_received_events")
    op.drop_table("invoice_number_series")
    op.drop_table("invoice_payments")
    op.drop_table("invoice_status_history")
    op.drop_table("invoice_discounts")
    op.drop_table("invoice_line_taxes")
    op.drop_table("invoice_lines")
    op.drop_table("invoice_invoices")
    drop_kernel_tables()
