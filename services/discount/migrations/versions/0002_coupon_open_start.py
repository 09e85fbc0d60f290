"""A coupon's `starts_at` may be null: no lower bound (valid from any time), so a coupon
created with only an `ends_at` is valid until then.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from discount_service.adapters.orm import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("discount_coupons") as batch:
        batch.alter_column("starts_at", existing_type=UtcDateTime(), nullable=True)


def downgrade() -> None:
    # The earliest instant both databases store the same way stands for "no lower bound".
    op.execute(
        "UPDATE discount_coupons SET starts_at = '1970-01-01 00:00:00' WHERE starts_at IS NULL"
    )
    with op.batch_alter_table("discount_coupons") as batch:
        batch.alter_column("starts_at", existing_type=UtcDateTime(), nullable=False)
