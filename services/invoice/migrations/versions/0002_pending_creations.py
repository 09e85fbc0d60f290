"""Invoices being created that redeemed a discount (released if the invoice never comes).

Revision ID: 0002_invoice_pending_creations
Revises: 0001_invoice_initial
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_invoice_pending_creations"
down_revision: str | None = "0001_invoice_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_pending_creations",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("invoice_id", sa.String(36), primary_key=True),
        sa.Column("redemption_key", sa.String(400), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("releasing", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("invoice_pending_creations")
