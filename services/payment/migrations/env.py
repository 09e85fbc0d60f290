from sqlmodel import SQLModel

from billing_common.migrations_env import run
from payment_service.adapters import orm

run(SQLModel.metadata if orm else None, "alembic_version_payment")
