"""Initial schema: kernel tables (outbox, inbox, kv_state), tax rules and calculations.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from billing_common.db import ExactDecimal
from billing_common.kernel_migration import create_kernel_tables, drop_kernel_tables
from tax_service.adapters.orm import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_kernel_tables()
    op.create_table(
        "tax_rules",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(253), nullable=True),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("region", sa.String(3), nullable=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("rate", ExactDecimal(), nullable=False),
        sa.Column("zero_rated", sa.Boolean(), nullable=False),
        sa.Column("compound", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "key", name="uq_tax_rules_key"),
        sa.CheckConstraint(
            "valid_from IS NULL OR valid_to IS NULL OR valid_to > valid_from",
            name="ck_tax_rules_validity",
        ),
    )
    op.create_index("ix_tax_rules_lookup", "tax_rules", ["tenant_id", "country", "category"])
    op.create_table(
        "tax_calculations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("calculation_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("price_mode", sa.String(16), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("region", sa.String(3), nullable=True),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("tax_status", sa.String(16), nullable=False),
        sa.Column("tax_id", sa.String(128), nullable=True),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("total_net", ExactDecimal(), nullable=False),
        sa.Column("total_tax", ExactDecimal(), nullable=False),
        sa.Column("total_gross", ExactDecimal(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_tax_calculations_history", "tax_calculations", ["tenant_id", "created_at", "id"]
    )
    op.create_index("ix_tax_calculations_reference", "tax_calculations", ["tenant_id", "reference"])
    op.create_index(
        "ix_tax_calculations_customer", "tax_calculations", ["tenant_id", "customer_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_tax_calculations_customer", table_name="tax_calculations")
    op.drop_index("ix_tax_calculations_reference", table_name="tax_calculations")
    op.drop_index("ix_tax_calculations_history", table_name="tax_calculations")
    op.drop_table("tax_calculations")
    op.drop_index("ix_tax_rules_lookup", table_name="tax_rules")
    op.drop_table("tax_rules")
    drop_kernel_tables()
