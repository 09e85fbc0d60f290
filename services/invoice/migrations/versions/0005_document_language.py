"""Document language: the language an invoice's documents are written in (as decided: the
customer's, else the seller's default, else English) and the one the customer asked for.

Invoices written before were all rendered in English: they are given "en". Only columns are
added (no table is rebuilt on SQLite).

Revision ID: 0005_invoice_language
Revises: 0004_credit_notes
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_invoice_language"
down_revision: str | None = "0004_credit_notes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("invoice_invoices", sa.Column("language", sa.String(35), nullable=True))
    op.add_column("invoice_invoices", sa.Column("requested_language", sa.String(35), nullable=True))
    op.execute("UPDATE invoice_invoices SET language = 'en' WHERE language IS NULL")


def downgrade() -> None:
    op.drop_column("invoice_invoices", "requested_language")
    op.drop_column("invoice_invoices", "language")
