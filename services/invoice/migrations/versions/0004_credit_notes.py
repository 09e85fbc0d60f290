"""Credit notes: their table, the customer balance ledger, and invoices' amount credited.

Revision ID: 0004_credit_notes
Revises: 0003_invoice_sellers
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing_common.db import ExactDecimal

revision: str = "0004_credit_notes"
down_revision: str | None = "0003_invoice_sellers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _money(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, ExactDecimal(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "invoice_credit_notes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column(
            "invoice_id", sa.String(36), sa.ForeignKey("invoice_invoices.id"), nullable=False
        ),
        sa.Column("invoice_number", sa.String(32), nullable=False),
        sa.Column("seller_id", sa.String(36), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("series", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settlement", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _money("net_total"),
        _money("tax_total"),
        _money("total"),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("refunds", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_invoice_credit_note_key"),
        sa.UniqueConstraint(
            "tenant_id", "seller_id", "series", "sequence", name="uq_invoice_credit_note_number"
        ),
    )
    op.create_index(
        "ix_invoice_credit_notes_invoice",
        "invoice_credit_notes",
        ["tenant_id", "invoice_id", "created_at"],
    )
    op.create_table(
        "invoice_customer_balance_entries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _money("amount"),
        sa.Column("credit_note_id", sa.String(36), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_invoice_customer_balance",
        "invoice_customer_balance_entries",
        ["tenant_id", "customer_id"],
    )
    op.add_column("invoice_invoices", _money("amount_credited", nullable=True))


def downgrade() -> None:
    op.drop_column("invoice_invoices", "amount_credited")
    op.drop_index("ix_invoice_customer_balance", table_name="invoice_customer_balance_entries")
    op.drop_table("invoice_customer_balance_entries")
    op.drop_index("ix_invoice_credit_notes_invoice", table_name="invoice_credit_notes")
    op.drop_table("invoice_credit_notes")
