"""E-invoices: the buyer's postal address and reference on invoices, the e-invoice format an
issued invoice is offered with, and per-customer settings (the default e-invoice format).

Revision ID: 0006_einvoice_buyer
Revises: 0005_invoice_language
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_einvoice_buyer"
down_revision: str | None = "0005_invoice_language"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INVOICE_COLUMNS = (
    ("customer_street", sa.Text()),
    ("customer_city", sa.String(100)),
    ("customer_postcode", sa.String(16)),
    ("customer_subdivision", sa.String(100)),
    ("customer_address_country", sa.String(2)),
    ("buyer_reference", sa.String(200)),
    ("einvoice_format", sa.String(16)),
)


def upgrade() -> None:
    # Nullable columns added one by one: SQLite adds them in place, no table rebuild.
    for name, kind in _INVOICE_COLUMNS:
        op.add_column("invoice_invoices", sa.Column(name, kind, nullable=True))
    op.create_table(
        "invoice_customer_settings",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("einvoice_format", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("invoice_customer_settings")
    for name, _ in reversed(_INVOICE_COLUMNS):
        op.drop_column("invoice_invoices", name)
