"""Gateways by name: a payment names its gateway, which stays the one that refunds it."""

from __future__ import annotations

from collections.abc import Mapping

from payment_service.domain.errors import UnknownGateway
from payment_service.domain.gateway import PaymentGateway


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
