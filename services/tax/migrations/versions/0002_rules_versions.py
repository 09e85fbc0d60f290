"""Per-tenant version counter of the tax rules (lets replicas cache a tenant's rules and
still see every change at once).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tax_rules_versions",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # Tenants with rules start at 1, so no process can hold rules tagged with their version.
    op.execute(
        "INSERT INTO tax_rules_versions (tenant_id, version) "
        "SELECT DISTINCT tenant_id, 1 FROM tax_rules"
    )


def downgrade() -> None:
    op.drop_table("tax_rules_versions")
