"""Gateways by name: a payment names its gateway, which stays the one that refunds it."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TypeVar

from loguru import logger

from payment_service.domain.errors import UnknownGateway
from payment_service.domain.gateway import GatewayUnavailable, PaymentGateway

Result = TypeVar("Result")


async def outcome_of(
    gateway: PaymentGateway, call: Awaitable[Result]
) -> Result | GatewayUnavailable:
    """What a gateway call came to: its result, or GatewayUnavailable when the outcome is
    unknown. An adapter that raises something else has a bug, and still leaves the outcome
    unknown: the charge or refund may have happened, so it is never taken as a failure."""
    try:
        return await call
    except GatewayUnavailable as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - see above
        logger.opt(exception=exc).error("gateway {} raised unexpectedly", gateway.name)
        return GatewayUnavailable("gateway_error", f"{type(exc).__name__}: {exc}")


class GatewayRegistry:
    def __init__(self, gateways: Mapping[str, PaymentGateway], default: str = "sandbox") -> None:
        self._gateways = dict(gateways)
        self.default = default

    @property
    def names(self) -> list[str]:
        return sorted(self._gateways)

    def get(self, name: str) -> PaymentGateway:
        gateway = self._gateways.get(name)
        if gateway is None:
            raise UnknownGateway(
                f"gateway {name!r} is not configured here; available: {', '.join(self.names)}",
                available=self.names,
            )
        return gateway

    async def close(self) -> None:
        for gateway in self._gateways.values():
            await gateway.close()
