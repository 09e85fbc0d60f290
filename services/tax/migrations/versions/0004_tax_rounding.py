"""Calculations keep where they rounded their taxes: per VAT breakdown (the default since
issue 13) or per line.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL on older calculations: they were all rounded per line, and read back so.
    with op.batch_alter_table("tax_calculations") as batch:
        batch.add_column(sa.Column("rounding", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tax_calculations") as batch:
        batch.drop_column("rounding")
