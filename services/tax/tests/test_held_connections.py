"""The connections the tax service holds for a calculation's one statement (PostgreSQL): a
warm calculation checks nothing out of the pool, a held connection PostgreSQL closed is
replaced, a busy set falls back on the pool, and closing gives every idle one back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text

from billing_common.money import Money
from tax_service.adapters.held_connections import HeldConnections
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.unit_of_work import uow_factory
from tax_service.service_layer import calculations
from tax_service.service_layer.dependencies import Dependencies

from .test_tax_rule_cache import WHEN, _put_rule, _request


def _checkouts(db: Any) -> list[object]:
    taken: list[object] = []
    event.listen(db.engine.sync_engine, "checkout", lambda *args: taken.append(args[0]))
    return taken


async def _calculations(db: Any) -> int:
    async with db.uow() as uow:
        connection = await uow.session.connection()
        found = await connection.execute(text("SELECT count(*) FROM tax_calculations"))
        return int(found.scalar_one())


async def _warm(db: Any, make_rule: Callable[..., Any]) -> tuple[HeldConnections, Dependencies]:
    """A rule written, the cache loaded and one connection taken to hold."""
    await _put_rule(db, make_rule, "0.19")
    held = HeldConnections.for_engine(db.engine)
    assert held is not None
    deps = Dependencies(uow=uow_factory(db.sessions, None, RuleCache(), held), clock=lambda: WHEN)
    await calculations.calculate("acme", _request(), deps)  # loads the cache (a session)
    await calculations.calculate("acme", _request(), deps)  # takes a connection to hold
    return held, deps


@pytest.fixture
def postgres_db(db: Any) -> Any:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the held connections are PostgreSQL's (SQLite writes through the session)")
    return db


async def test_warm_calculations_check_nothing_out_of_the_pool(
    postgres_db: Any, make_rule: Callable[..., Any]
) -> None:
    db = postgres_db
    held, deps = await _warm(db, make_rule)
    taken = _checkouts(db)
    for _ in range(3):
        warm = await calculations.calculate("acme", _request(), deps)
        assert warm.total_tax == Money.of("19.00", "EUR")
    assert taken == []
    assert await _calculations(db) == 5
    await held.close()
    assert db.engine.pool.checkedout() == 0


async def test_a_held_connection_postgresql_closed_is_replaced(
    postgres_db: Any, make_rule: Callable[..., Any]
) -> None:
    db = postgres_db
    held, deps = await _warm(db, make_rule)
    async with held.driver() as driver:
        backend = await driver.fetchval("SELECT pg_backend_pid()")
    async with db.uow() as uow:
        connection = await uow.session.connection()
        await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    await asyncio.sleep(0.2)  # asyncpg learns of the close from its socket
    taken = _checkouts(db)
    calculation = await calculations.calculate("acme", _request(), deps)
    assert calculation.total_tax == Money.of("19.00", "EUR")
    assert len(taken) == 1  # a fresh one in place of the closed one
    async with held.driver() as driver:
        assert await driver.fetchval("SELECT pg_backend_pid()") != backend
    assert await _calculations(db) == 3
    await held.close()
    assert db.engine.pool.checkedout() == 0


async def test_beyond_its_size_a_statement_takes_a_pooled_connection(
    postgres_db: Any,
) -> None:
    db = postgres_db
    held = HeldConnections(db.engine, 1)
    async with held.driver() as first:
        async with held.driver() as second:  # the one held is busy: the pool's, for now
            assert db.engine.pool.checkedout() == 2
            assert await first.fetchval("SELECT 1") == await second.fetchval("SELECT 1")
        assert db.engine.pool.checkedout() == 1
    assert db.engine.pool.checkedout() == 1  # kept for the next statement
    await held.close()
    assert db.engine.pool.checkedout() == 0
    async with held.driver() as driver:  # closed: the pool's, returned after the block
        assert await driver.fetchval("SELECT 1") == 1
    assert db.engine.pool.checkedout() == 0
