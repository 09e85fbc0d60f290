"""Per-tenant version counter of the coupons, policies and stacking settings (lets
replicas cache them and still see every change at once).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "discount_config_versions",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # Tenants with a configuration start at 1, so no process holds it tagged with theirs.
    op.execute(
        "INSERT INTO discount_config_versions (tenant_id, version) "
        "SELECT tenant_id, 1 FROM discount_coupons UNION "
        "SELECT tenant_id, 1 FROM discount_policies UNION "
        "SELECT tenant_id, 1 FROM discount_stacking_settings"
    )


def downgrade() -> None:
    op.drop_table("discount_config_versions")
