"""Sellers: the tenant's legal entities, their number counters, the seller and its snapshot on
invoices, the customer's location/kind, and the VAT categories and breakdown of the tax answer.

Only columns are added to existing tables (no table is rebuilt: SQLite would have to drop
invoice_invoices, which the lines reference).

Revision ID: 0003_invoice_sellers
Revises: 0002_invoice_pending_creations
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_invoice_sellers"
down_revision: str | None = "0002_invoice_pending_creations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INVOICE_COLUMNS = (
    ("seller_id", sa.String(36)),
    ("seller_sequence", sa.Integer()),
    ("seller_snapshot", sa.Text()),
    ("customer_location_country", sa.String(2)),
    ("customer_location_region", sa.String(16)),
    ("customer_kind", sa.String(16)),
    ("customer_exemption_certificate", sa.String(128)),
    ("tax_treatment", sa.String(32)),
    ("tax_breakdown", sa.Text()),
)
_LINE_COLUMNS = (
    ("vat_category", sa.String(8)),
    ("vat_exemption_reason", sa.Text()),
    ("vat_exemption_reason_code", sa.String(32)),
)


def upgrade() -> None:
    op.create_table(
        "invoice_sellers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("legal_name", sa.String(200), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("region", sa.String(16), nullable=True),
        sa.Column("postcode", sa.String(16), nullable=True),
        sa.Column("city", sa.String(100), nullable=False),
        sa.Column("street", sa.Text(), nullable=False),
        sa.Column("vat_id", sa.String(32), nullable=True),
        sa.Column("tax_registrations", sa.Text(), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("iban", sa.String(34), nullable=True),
        sa.Column("bic", sa.String(11), nullable=True),
        sa.Column("default_currency", sa.String(3), nullable=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("invoice_series", sa.String(16), nullable=False),
        sa.Column("credit_note_series", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_invoice_sellers_page", "invoice_sellers", ["tenant_id", "created_at", "id"])
    op.create_table(
        "invoice_default_sellers",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("seller_id", sa.String(36), sa.ForeignKey("invoice_sellers.id"), nullable=False),
    )
    op.create_table(
        "invoice_document_counters",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("seller_id", sa.String(36), primary_key=True),
        sa.Column("document_type", sa.String(16), primary_key=True),
        sa.Column("series", sa.String(16), primary_key=True),
        sa.Column("last_number", sa.Integer(), nullable=False),
    )
    for name, type_ in _INVOICE_COLUMNS:
        op.add_column("invoice_invoices", sa.Column(name, type_, nullable=True))
    for name, type_ in _LINE_COLUMNS:
        op.add_column("invoice_lines", sa.Column(name, type_, nullable=True))
    op.create_index(
        "uq_invoice_seller_number",
        "invoice_invoices",
        ["tenant_id", "seller_id", "series", "seller_sequence"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_invoice_seller_number", table_name="invoice_invoices")
    # Plain DROP COLUMN (SQLite >= 3.35 has it): a batch rebuild of invoice_invoices would
    # fail on the lines referencing it.
    for name, _ in reversed(_LINE_COLUMNS):
        op.drop_column("invoice_lines", name)
    for name, _ in reversed(_INVOICE_COLUMNS):
        op.drop_column("invoice_invoices", name)
    op.drop_table("invoice_document_counters")
    op.drop_table("invoice_default_sellers")
    op.drop_index("ix_invoice_sellers_page", table_name="invoice_sellers")
    op.drop_table("invoice_sellers")
