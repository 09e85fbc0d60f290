"""The engine's VAT decision: rules say whether their category is goods or services;
calculations keep their treatment, the parties as given, and the VAT id check evidence.

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
    # Existing rules keep the engine's default: services (reverse charge, not an
    # intra-community supply, for EU B2B; never an export of goods).
    with op.batch_alter_table("tax_rules") as batch:
        batch.add_column(
            sa.Column("supply", sa.String(16), nullable=False, server_default="services")
        )
    # NULL on older calculations: read back as decided from their lines' exemptions.
    with op.batch_alter_table("tax_calculations") as batch:
        batch.add_column(sa.Column("treatment", sa.String(32), nullable=True))
        batch.add_column(sa.Column("parties", sa.Text(), nullable=True))
        batch.add_column(sa.Column("evidence", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tax_calculations") as batch:
        batch.drop_column("evidence")
        batch.drop_column("parties")
        batch.drop_column("treatment")
    with op.batch_alter_table("tax_rules") as batch:
        batch.drop_column("supply")
