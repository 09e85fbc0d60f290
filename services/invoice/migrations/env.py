import os

from alembic import context
from sqlmodel import SQLModel

# Imported for their tables on SQLModel.metadata (autogenerate / `alembic check`).
import billing_common.adapters.sql_state
import billing_common.outbox  # noqa: F401
import invoice_service.adapters.orm  # noqa: F401
from billing_common.migrations_env import run

# From the command line: `DATABASE_URL=... alembic -c services/invoice/alembic.ini upgrade head`.
if not context.config.get_main_option("sqlalchemy.url") and os.environ.get("DATABASE_URL"):
    context.config.set_main_option("sqlalchemy.url", os.environ["DATABASE_URL"].replace("%", "%%"))

run(SQLModel.metadata, "alembic_version_invoice")
