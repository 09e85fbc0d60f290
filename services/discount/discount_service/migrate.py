"""`python -m discount_service.migrate`: apply this service's migrations to its database
(DATABASE_URL / DISCOUNT_DATABASE_URL). What a Helm hook or an init container runs, since
the image carries no launcher."""

from __future__ import annotations

import asyncio

from billing_common.db import create_engine, migrate
from billing_common.settings import ServiceSettings
from discount_service.bootstrap import MIGRATIONS_DIR, SERVICE


async def _main() -> None:
    settings = ServiceSettings.for_service(SERVICE)
    engine = create_engine(settings.resolved_database_url)
    try:
        await migrate(engine, MIGRATIONS_DIR, version_table=f"alembic_version_{SERVICE}")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(_main())
