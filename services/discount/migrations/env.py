from sqlmodel import SQLModel

import discount_service.adapters.orm  # noqa: F401 - registers the tables on the metadata
from billing_common.migrations_env import run

run(SQLModel.metadata, "alembic_version_discount")
