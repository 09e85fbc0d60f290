"""Fixtures for the RabbitMQ adapter tests: buses on a fresh vhost per test (`amqp_url` comes
from billing_common.testing), and a helper to wait for asynchronous effects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from billing_common.adapters.rabbitmq_bus import RabbitMqEventBus

BusFactory = Callable[..., RabbitMqEventBus]


Eventually = Callable[..., Awaitable[None]]


async def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout}s")


@pytest.fixture
def eventually() -> Eventually:
    """`await eventually(check, timeout=10)`: wait until `check()` holds, else fail."""
    return _eventually


@pytest.fixture
def vhost(amqp_url: str) -> str:
    return urlsplit(amqp_url).path.lstrip("/")


@pytest.fixture
async def make_bus(amqp_url: str) -> AsyncIterator[BusFactory]:
    """Build buses on this test's vhost with fast retries; all are stopped afterwards."""
    made: list[RabbitMqEventBus] = []

    def make(**overrides: Any) -> RabbitMqEventBus:
        options: dict[str, Any] = {
            "exchange": "billing.events",
            "prefetch": 8,
            "max_retries": 3,
            "retry_delay_seconds": 0.05,
            "max_retry_delay_seconds": 0.2,
            "stop_timeout_seconds": 2.0,
            "reconnect_interval_seconds": 0.3,
            **overrides,
        }
        bus = RabbitMqEventBus(options.pop("amqp_url", amqp_url), **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.stop()
