"""Migration 0002 moves stored payable invoices to the invoice service's vocabulary: a row
written as `open` by the former code reads as `issued`, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from alembic import command
from sqlalchemy import Connection, String, column, insert, table

from billing_common.db import (
    ExactDecimal,
    UtcDateTime,
    alembic_config,
    create_engine,
    migrate,
    session_factory,
)
from payment_service.adapters.unit_of_work import SqlPaymentUnitOfWork
from payment_service.bootstrap import MIGRATIONS_DIR
from payment_service.domain.model import InvoiceState

VERSION_TABLE = "alembic_version_payment"


async def test_open_invoices_become_issued(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        cfg = alembic_config(MIGRATIONS_DIR, engine.url.render_as_string(False), VERSION_TABLE)

        def to_initial(connection: Connection) -> None:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0001_payment_initial")

        async with engine.begin() as conn:
            await conn.run_sync(to_initial)
            # The table as migration 0001 made it (no invoice_version yet).
            at_0001 = table(
                "payment_payable_invoices",
                column("tenant_id", String()),
                column("invoice_id", String()),
                column("state", String()),
                column("currency", String()),
                column("total", ExactDecimal()),
                column("amount_due", ExactDecimal()),
                column("created_at", UtcDateTime()),
                column("updated_at", UtcDateTime()),
            )
            now = datetime(2026, 11, 30, 10, tzinfo=UTC)
            await conn.execute(
                insert(at_0001).values(
                    tenant_id="acme",
                    invoice_id="inv-old",
                    state="open",
                    currency="EUR",
                    total=Decimal("10.00"),
                    amount_due=Decimal("10.00"),
                    created_at=now,
                    updated_at=now,
                )
            )
        await migrate(engine, MIGRATIONS_DIR, VERSION_TABLE)
        async with SqlPaymentUnitOfWork(session_factory(engine), None) as uow:
            invoice = await uow.payments("acme").get_invoice("inv-old")
        assert invoice is not None
        assert invoice.state is InvoiceState.ISSUED and invoice.version is None
    finally:
        await engine.dispose()
