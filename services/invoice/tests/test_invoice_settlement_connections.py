"""The settlement lane's connections of its own (PostgreSQL): a payment event settles its
invoice while the invoice creations hold every connection of the service's pool, on a
connection PostgreSQL closed it settles on a new one, and after shutdown began it takes the
service's units of work. Where there is no engine of its own to have (SQLite) or its
database does not answer at start, the service still starts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from billing_common.db import create_engine
from invoice_service.adapters.settlement_units_of_work import SettlementUnitsOfWork

from .test_invoice_events import deliver, fetch, issued_invoice, received

on_postgres = pytest.mark.parametrize("migrated_database_url", ["postgresql"], indirect=True)


def _settlement(api: Any) -> SettlementUnitsOfWork:
    settlement = api.app.state.deps.settlement_uow
    assert isinstance(settlement, SettlementUnitsOfWork)
    return settlement


@on_postgres
async def test_a_payment_settles_while_the_creations_hold_every_pooled_connection(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    invoice = await issued_invoice(api, make_body)
    engine = api.app.state.ctx.engine
    held = [await engine.raw_connection() for _ in range(engine.pool.size())]
    try:
        # On the service's pool this waits its pool timeout (30 s) for a connection.
        await asyncio.wait_for(deliver(api, received(invoice["id"], "119.00")), timeout=10)
    finally:
        for connection in held:
            connection.close()
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_paid"]) == ("paid", "119.00")


@on_postgres
async def test_a_settlement_connection_postgresql_closed_is_replaced(
    api_any_db: Any, make_body: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_any_db
    # One attempt: a delivery that failed on the closed connection is dead-lettered, not
    # retried on a new one (which would hide that the closed one was handed out).
    monkeypatch.setattr(api.platform.bus, "_max_attempts", 1)
    first, second = await issued_invoice(api, make_body), await issued_invoice(api, make_body)
    await deliver(api, received(first["id"], "119.00"))
    settlement = _settlement(api)
    lane_backends = set()
    for _ in range(settlement.engine.pool.size()):  # type: ignore[attr-defined]
        connection = await settlement.engine.raw_connection()
        lane_backends.add(await connection.driver_connection.fetchval("SELECT pg_backend_pid()"))
        connection.close()
    admin = await api.app.state.ctx.engine.raw_connection()  # the service's own pool
    try:
        for backend in lane_backends:
            assert await admin.driver_connection.fetchval(
                "SELECT pg_terminate_backend($1)", backend
            )
        # Gone from the server (and their sockets closed) before the next delivery.
        while await admin.driver_connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(lane_backends)
        ):
            await asyncio.sleep(0.01)
    finally:
        admin.close()
    await deliver(api, received(second["id"], "119.00"))
    assert api.platform.bus.dead_letters == []
    for invoice in (first, second):
        state = await fetch(api, invoice["id"])
        assert (state["status"], state["amount_paid"]) == ("paid", "119.00")


@on_postgres
async def test_after_closing_a_delivery_takes_the_services_units_of_work(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    invoice = await issued_invoice(api, make_body)
    settlement = _settlement(api)
    await settlement.close()
    await deliver(api, received(invoice["id"], "119.00"))
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_paid"]) == ("paid", "119.00")
    assert settlement.engine.pool.checkedin() == 0  # type: ignore[attr-defined]


async def test_on_sqlite_the_lane_takes_the_services_units_of_work(api: Any) -> None:
    # One connection per service on SQLite (its one writer): no second engine.
    assert api.app.state.deps.settlement_uow is None


async def test_a_database_not_answering_at_start_leaves_the_connections_to_the_first_payment(
    api: Any,
) -> None:
    fallback = api.app.state.deps.uow
    unreachable = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        settlement = SettlementUnitsOfWork.for_engine(unreachable, None, fallback)
        assert settlement is not None
        await settlement.warm()  # logged, not raised: the service starts
        assert settlement.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        await settlement.close()
    finally:
        await unreachable.dispose()
