"""A few of the engine's pooled connections held by the tax service for a calculation's one
statement (PostgreSQL only).

A calculation on cached rules is one autocommitted statement (see SqlTaxUnitOfWork). Checking
a connection out of SQLAlchemy's pool and in again around it (a greenlet bridge, the pool's
queue, its checkout and reset-on-return events) cost about as much CPU as sending the
statement. Here up to `size` connections are checked out once and kept: taking an idle one is
a list pop. When all of them are busy the statement takes one of the pool as before, so the
pool's other connections (the sessions', the outbox relay's) are never waited for by these.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from billing_common.db import PostgresDriver, pooled_driver, raw_checkout

# The pool's connections never held: a session (a rules read on a cache miss, the other
# routes) and the outbox relay each find one without waiting for the held ones.
KEPT_FOR_THE_POOL = 2


class HeldConnections:
    """Up to `size` pooled connections kept checked out for autocommitted statements."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._engine = engine
        self._size = size
        self._idle: list[tuple[PoolProxiedConnection, PostgresDriver]] = []
        self._held = 0  # idle and in use
        self._closed = False

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> HeldConnections | None:
        """All of the engine's fixed pool but `KEPT_FOR_THE_POOL` connections (those stay
        for sessions and the relay); None on SQLite, or a pool too small to share.

        Under a client's 32 concurrent calculations, half of a 10-connection pool (the
        former size) was busy often enough that a py-spy profile spent ~4 % of the tax
        process's CPU in SQLAlchemy's checkout for the statements beyond it."""
        if engine.dialect.name != "postgresql":
            return None
        pool_size = getattr(engine.pool, "size", None)
        size = pool_size() - KEPT_FOR_THE_POOL if callable(pool_size) else 0
        return cls(engine, size) if size > 0 else None

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[PostgresDriver]:
        """A held connection for the block's statements (each commits on its own), or one of
        the pool for the block only when every held one is in use."""
        held = self._take_idle()
        if held is None and (self._closed or self._held >= self._size):
            async with pooled_driver(self._engine) as driver:
                yield driver
            return
        if held is None:
            self._held += 1
            try:
                pooled = await raw_checkout(self._engine)
            except BaseException:
                self._held -= 1
                raise
            held = (pooled, PostgresDriver(pooled, pooled.driver_connection))
        pooled, driver = held
        try:
            yield driver
        except BaseException as exc:
            # An outage invalidated it (PostgresDriver); a cancel mid-statement leaves it in
            # an unknown state: either way it goes back to the pool, which drops it.
            if not isinstance(exc, Exception) or not pooled.is_valid:
                self._release(pooled, invalidate=True)
                raise
            self._give_back(held)
            raise
        self._give_back(held)

    def _take_idle(self) -> tuple[PoolProxiedConnection, PostgresDriver] | None:
        while self._idle:
            pooled, driver = self._idle.pop()
            if _is_closed(pooled):  # PostgreSQL closed it (a restart): replaced on demand
                self._release(pooled, invalidate=True)
                continue
            return pooled, driver
        return None

    def _give_back(self, held: tuple[PoolProxiedConnection, PostgresDriver]) -> None:
        if self._closed:
            self._release(held[0], invalidate=False)
        else:
            self._idle.append(held)

    def _release(self, pooled: PoolProxiedConnection, *, invalidate: bool) -> None:
        self._held -= 1
        if invalidate and pooled.is_valid:
            pooled.invalidate()
        pooled.close()

    async def close(self) -> None:
        """Return the idle connections to the pool (before it is disposed); one in use goes
        back when its statement is done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for pooled, _driver in idle:
            self._release(pooled, invalidate=False)


def _is_closed(pooled: PoolProxiedConnection) -> bool:
    connection: Any = pooled.driver_connection  # asyncpg's, None once invalidated
    return connection is None or bool(connection.is_closed())
