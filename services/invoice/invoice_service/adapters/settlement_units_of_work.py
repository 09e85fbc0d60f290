"""Units of work for the settlement lane (the payment events) on connections of its own
(PostgreSQL only).

A payment event's handler took its connection from the pool every invoice creation under
way checks connections out of too: under load it waited behind them, and with the pool
exhausted (a burst of creations) it waited for one of them to finish. Here the lane has an
engine of its own with a small fixed pool (its handlers run one per delivery the lane's
prefetch window lets in), so a settlement never waits for a connection a creation holds.
The kernel's pool events apply to it as to the service's engine: a connection PostgreSQL
closed is replaced on its next checkout, a refused connect is DatabaseUnavailable (the
delivery is retried, as before).

Closed at shutdown before the bus stops: a delivery handled after that takes the service's
own units of work, as the lane did before it had connections of its own."""

from __future__ import annotations

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from billing_common.db import DatabaseUnavailable, create_engine, raw_checkout, session_factory
from billing_common.outbox import OutboxRelay
from invoice_service.adapters.unit_of_work import uow_factory
from invoice_service.service_layer.ports import UnitOfWork, UnitOfWorkFactory

# Two: a payment event's handler holds one for its read and write (two round trips), and a
# refund with a credit note one for its session's transaction; the lane's prefetch lets a
# few handlers run at once, which then wait for each other here, not for the creations.
SETTLEMENT_POOL_SIZE = 2


class SettlementUnitsOfWork:
    """A UnitOfWorkFactory on an engine of its own; `fallback`'s units of work once closed."""

    def __init__(
        self,
        engine: AsyncEngine,
        relay: OutboxRelay | None,
        fallback: UnitOfWorkFactory,
        pool_size: int,
    ) -> None:
        self.engine = engine
        self._pool_size = pool_size
        # No seller cache of its own: a payment event reads no seller (a refund of a credit
        # note issues nothing), and a second copy would only take memory.
        self._own = uow_factory(session_factory(engine), relay, cache_sellers=False)
        self._fallback = fallback
        self._closed = False

    @classmethod
    def for_engine(
        cls,
        service_engine: AsyncEngine,
        relay: OutboxRelay | None,
        fallback: UnitOfWorkFactory,
        *,
        pool_size: int = SETTLEMENT_POOL_SIZE,
    ) -> SettlementUnitsOfWork | None:
        """On the service engine's database, with `pool_size` connections; None on SQLite
        (one connection per service: a second engine would be a second writer)."""
        if service_engine.dialect.name != "postgresql":
            return None
        url = service_engine.url.render_as_string(hide_password=False)
        return cls(create_engine(url, pool_size=pool_size), relay, fallback, pool_size)

    def __call__(self, tenant: str) -> UnitOfWork:
        return (self._fallback if self._closed else self._own)(tenant)

    async def warm(self) -> None:
        """Open the pool's connections now, so the first payments after a start do not
        connect (a TCP and auth handshake each) under load. A database not answering yet
        is left to the first payment, as for the service's own pool."""
        connections: list[PoolProxiedConnection] = []
        try:
            for _ in range(self._pool_size):
                connections.append(await raw_checkout(self.engine))
        except DatabaseUnavailable as exc:
            logger.warning("settlement connections not opened at start: {}", exc)
        finally:
            for connection in connections:
                connection.close()

    async def close(self) -> None:
        self._closed = True
        await self.engine.dispose()
