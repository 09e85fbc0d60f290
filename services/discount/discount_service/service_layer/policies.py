"""Use cases on a tenant's discount policies (user-type and threshold rules) and its
stacking settings (the cap on all discounts together). Admin; the operator reconciles
DiscountPolicy resources through put_policy / delete_policy."""

from __future__ import annotations

from discount_service.domain.errors import ConcurrentUpdate, PolicyNotFound
from discount_service.domain.model import DiscountPolicy, StackingSettings
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.ports import PolicyKeyTaken


async def put_policy(tenant: str, policy: DiscountPolicy, deps: Dependencies) -> bool:
    """Create or replace the policy with `policy.key`; True if it was created. Idempotent:
    putting the same policy twice leaves one policy with that definition."""
    for _ in range(2):
        async with deps.uow(tenant) as uow:
            try:
                created = await uow.policies.upsert(policy)
            except PolicyKeyTaken:
                continue  # a concurrent PUT created it first: update that one
            await uow.commit()
            return created
    raise ConcurrentUpdate(f"policy {policy.key!r} is being changed concurrently; retry")


async def get_policy(tenant: str, key: str, deps: Dependencies) -> DiscountPolicy:
    async with deps.uow(tenant) as uow:
        policy = await uow.policies.get(key)
        if policy is None:
            raise PolicyNotFound(key)
        return policy


async def list_policies(tenant: str, deps: Dependencies) -> list[DiscountPolicy]:
    async with deps.uow(tenant) as uow:
        return await uow.policies.all()


async def delete_policy(tenant: str, key: str, deps: Dependencies) -> None:
    async with deps.uow(tenant) as uow:
        if not await uow.policies.delete(key):
            raise PolicyNotFound(key)
        await uow.commit()


async def get_stacking_settings(tenant: str, deps: Dependencies) -> StackingSettings:
    async with deps.uow(tenant) as uow:
        return await uow.settings.get()


async def put_stacking_settings(
    tenant: str, settings: StackingSettings, deps: Dependencies
) -> StackingSettings:
    async with deps.uow(tenant) as uow:
        await uow.settings.put(settings)
        await uow.commit()
        return settings
