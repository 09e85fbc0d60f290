"""Payable invoices use the invoice service's status names (a finalized invoice is `issued`,
no longer `open`) and remember the invoice version they were last told about.

Revision ID: 0002_payment_invoice_vocabulary
Revises: 0001_payment_initial
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_payment_invoice_vocabulary"
down_revision: str | None = "0001_payment_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_payable_invoices") as batch:
        batch.add_column(sa.Column("invoice_version", sa.Integer(), nullable=True))
    op.execute("UPDATE payment_payable_invoices SET state = 'issued' WHERE state = 'open'")


def downgrade() -> None:
    op.execute(
        "UPDATE payment_payable_invoices SET state = 'open' "
        "WHERE state IN ('issued', 'partially_paid', 'paid')"
    )
    op.execute("UPDATE payment_payable_invoices SET state = 'void' WHERE state = 'uncollectible'")
    with op.batch_alter_table("payment_payable_invoices") as batch:
        batch.drop_column("invoice_version")
