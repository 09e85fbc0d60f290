"""Per-tenant version counter of the sellers and the default seller (lets each process cache
them and still see every change at once, whichever replica made it).

Revision ID: 0007_seller_versions
Revises: 0006_einvoice_buyer
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_seller_versions"
down_revision: str | None = "0006_einvoice_buyer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_seller_versions",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # Tenants with sellers start at 1, so no process holds them tagged with theirs.
    op.execute(
        "INSERT INTO invoice_seller_versions (tenant_id, version) "
        "SELECT tenant_id, 1 FROM invoice_sellers UNION "
        "SELECT tenant_id, 1 FROM invoice_default_sellers"
    )


def downgrade() -> None:
    op.drop_table("invoice_seller_versions")
