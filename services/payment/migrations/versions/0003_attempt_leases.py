"""The recovery sweep looks for attempts whose lease ran out every few seconds: an index on
`lease_until`, which is set only while an attempt is in flight or stalled, keeps that a
range scan over a handful of rows however many payments there are.

Revision ID: 0003_payment_attempt_leases
Revises: 0002_payment_invoice_vocabulary
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_payment_attempt_leases"
down_revision: str | None = "0002_payment_invoice_vocabulary"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_payment_payments_lease_until", "payment_payments", ["lease_until"])
    op.create_index("ix_payment_refunds_lease_until", "payment_refunds", ["lease_until"])


def downgrade() -> None:
    op.drop_index("ix_payment_refunds_lease_until", table_name="payment_refunds")
    op.drop_index("ix_payment_payments_lease_until", table_name="payment_payments")
