"""In-memory implementations of the discount service's ports (service_layer/ports.py), for
use-case tests that need no database: cosmicpython's FakeRepository and FakeUnitOfWork.

A unit of work records its writes as operations and reads what the committed transactions
left behind with its own operations replayed on top: read-committed, as each statement of
the SQL unit of work sees it. Nothing is visible to another unit of work before `commit`;
leaving without `commit` discards it; `commit` replays the operations onto the committed
state and stores the result only if every one still holds (a key another transaction took
first raises what the SQL unit of work raises: DuplicateCouponCode, PolicyKeyTaken,
IdempotencyKeyTaken). `DiscountStore.before` runs a rival transaction at the exact moment a
named operation starts (e.g. "redemptions.add": between the replay check and claiming the
key), which is how a race is staged. The domain values are frozen: no copies needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from billing_common.events import CloudEvent
from discount_service.domain.errors import DuplicateCouponCode
from discount_service.domain.model import (
    Coupon,
    DiscountPolicy,
    Redemption,
    RejectReason,
    StackingSettings,
    normalize_code,
)
from discount_service.service_layer.ports import (
    CouponQuery,
    CustomerCoupons,
    IdempotencyKeyTaken,
    PolicyKeyTaken,
    RedemptionQuery,
)


@dataclass
class TenantData:
    coupons: dict[str, Coupon] = field(default_factory=dict)  # by normalised code
    usage: dict[tuple[str, str], int] = field(default_factory=dict)  # (coupon id, customer)
    policies: dict[str, DiscountPolicy] = field(default_factory=dict)
    settings: StackingSettings | None = None
    redemptions: dict[str, Redemption] = field(default_factory=dict)

    def copy(self) -> TenantData:
        return TenantData(
            dict(self.coupons),
            dict(self.usage),
            dict(self.policies),
            self.settings,
            dict(self.redemptions),
        )

    def coupon_by_id(self, coupon_id: str) -> Coupon | None:
        return next((c for c in self.coupons.values() if c.id == coupon_id), None)


Operation = Callable[[TenantData], object]
Hook = Callable[[], Awaitable[None]]


@dataclass
class DiscountStore:
    """What the committed transactions left behind, shared by every unit of work."""

    tenants: dict[str, TenantData] = field(default_factory=dict)
    outbox: list[tuple[CloudEvent, str]] = field(default_factory=list)
    commits: int = 0
    # Run once when the named operation ("coupons.try_count_redemption", "commit", ...) starts.
    before: dict[str, Hook] = field(default_factory=dict)

    def data(self, tenant: str) -> TenantData:
        return self.tenants.setdefault(tenant, TenantData())

    def uow(self, tenant: str) -> FakeUnitOfWork:
        """The `UnitOfWorkFactory` of the use cases' dependencies."""
        return FakeUnitOfWork(self, tenant)

    async def hook(self, operation: str) -> None:
        hook = self.before.pop(operation, None)
        if hook is not None:
            await hook()


class _Transaction:
    """A unit of work's pending operations and its read-committed view."""

    def __init__(self, store: DiscountStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant
        self.operations: list[Operation] = []

    def view(self) -> TenantData:
        data = self.store.data(self.tenant).copy()
        for operation in self.operations:
            operation(data)
        return data

    async def write(self, name: str, operation: Operation) -> object:
        await self.store.hook(name)
        result = operation(self.view())  # raises now, as the SQL statement would
        self.operations.append(operation)
        return result


class FakeCouponRepository:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def get(self, code: str) -> Coupon | None:
        return self._tx.view().coupons.get(normalize_code(code))

    async def add(self, coupon: Coupon) -> Coupon:
        stored = dataclasses.replace(coupon, redeemed_count=0)

        def add(data: TenantData) -> Coupon:
            if normalize_code(coupon.code) in data.coupons:
                raise DuplicateCouponCode(coupon.code)
            data.coupons[normalize_code(coupon.code)] = stored
            return stored

        await self._tx.write("coupons.add", add)
        return stored

    async def replace(self, coupon: Coupon) -> Coupon | None:
        def replace(data: TenantData) -> Coupon | None:
            current = data.coupons.get(normalize_code(coupon.code))
            if current is None:
                return None
            data.coupons[normalize_code(coupon.code)] = dataclasses.replace(
                coupon, id=current.id, redeemed_count=current.redeemed_count
            )
            return data.coupons[normalize_code(coupon.code)]

        result = await self._tx.write("coupons.replace", replace)
        return result if isinstance(result, Coupon) else None

    async def delete(self, code: str) -> bool:
        def delete(data: TenantData) -> bool:
            coupon = data.coupons.pop(normalize_code(code), None)
            if coupon is None:
                return False
            for usage in [u for u in data.usage if u[0] == coupon.id]:
                del data.usage[usage]
            return True

        return bool(await self._tx.write("coupons.delete", delete))

    async def page(self, query: CouponQuery) -> list[Coupon]:
        after = normalize_code(query.after) if query.after is not None else None
        coupons = self._tx.view().coupons
        keys = sorted(k for k in coupons if after is None or k > after)
        return [coupons[k] for k in keys[: query.limit]]

    async def by_codes(self, codes: Iterable[str]) -> dict[str, Coupon]:
        coupons = self._tx.view().coupons
        return {k: coupons[k] for k in {normalize_code(c) for c in codes} if k in coupons}

    async def customer_usage(self, coupon_ids: Iterable[str], customer_id: str) -> dict[str, int]:
        usage = self._tx.view().usage
        counts = {i: usage.get((i, customer_id), 0) for i in coupon_ids}
        return {i: n for i, n in counts.items() if n}

    async def for_customer(self, codes: Iterable[str], customer_id: str) -> CustomerCoupons:
        coupons = await self.by_codes(codes)
        usage = await self.customer_usage((c.id for c in coupons.values()), customer_id)
        return CustomerCoupons(coupons, usage)

    async def try_count_redemption(self, coupon_id: str) -> bool:
        def count(data: TenantData) -> bool:
            coupon = data.coupon_by_id(coupon_id)
            if coupon is None or (
                coupon.max_redemptions is not None
                and coupon.redeemed_count >= coupon.max_redemptions
            ):
                return False
            data.coupons[normalize_code(coupon.code)] = dataclasses.replace(
                coupon, redeemed_count=coupon.redeemed_count + 1
            )
            return True

        return await self._counted("coupons.try_count_redemption", count)

    async def try_count_customer_redemption(
        self, coupon_id: str, customer_id: str, limit: int | None
    ) -> bool:
        def count(data: TenantData) -> bool:
            used = data.usage.get((coupon_id, customer_id), 0)
            if limit is not None and used >= limit:
                return False
            data.usage[(coupon_id, customer_id)] = used + 1
            return True

        return await self._counted("coupons.try_count_customer_redemption", count)

    async def try_count_uses(
        self, coupons: Sequence[Coupon], customer_id: str
    ) -> tuple[Coupon, RejectReason] | None:
        for coupon in coupons:
            if not await self.try_count_redemption(coupon.id):
                return coupon, RejectReason.EXHAUSTED
        for coupon in coupons:
            limit = coupon.max_redemptions_per_customer
            if not await self.try_count_customer_redemption(coupon.id, customer_id, limit):
                return coupon, RejectReason.CUSTOMER_LIMIT_REACHED
        return None

    async def _counted(self, name: str, count: Callable[[TenantData], bool]) -> bool:
        """A conditional UPDATE: a use not counted writes nothing."""
        await self._tx.store.hook(name)
        if not count(self._tx.view()):
            return False

        def counted(data: TenantData) -> None:
            # The SQL row lock makes a rival wait until this transaction ends: a rival that
            # took the use meanwhile is a test that staged something SQL cannot do.
            assert count(data), f"{name}: a use was taken while this transaction held it"

        self._tx.operations.append(counted)
        return True

    async def uncount_redemption(self, coupon_id: str, customer_id: str) -> None:
        def uncount(data: TenantData) -> None:
            coupon = data.coupon_by_id(coupon_id)
            if coupon is not None and coupon.redeemed_count > 0:
                data.coupons[normalize_code(coupon.code)] = dataclasses.replace(
                    coupon, redeemed_count=coupon.redeemed_count - 1
                )
            used = data.usage.get((coupon_id, customer_id), 0)
            if used > 0:
                data.usage[(coupon_id, customer_id)] = used - 1

        await self._tx.write("coupons.uncount_redemption", uncount)


class FakePolicyRepository:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def get(self, key: str) -> DiscountPolicy | None:
        return self._tx.view().policies.get(key)

    async def all(self) -> list[DiscountPolicy]:
        policies = self._tx.view().policies
        return [policies[k] for k in sorted(policies)]

    async def active(self) -> list[DiscountPolicy]:
        return [p for p in await self.all() if p.active]

    async def upsert(self, policy: DiscountPolicy) -> bool:
        created = policy.key not in self._tx.view().policies

        def upsert(data: TenantData) -> None:
            if created and policy.key in data.policies:
                raise PolicyKeyTaken(policy.key)  # a rival created the key first
            data.policies[policy.key] = policy

        await self._tx.write("policies.upsert", upsert)
        return created

    async def delete(self, key: str) -> bool:
        def delete(data: TenantData) -> bool:
            return data.policies.pop(key, None) is not None

        return bool(await self._tx.write("policies.delete", delete))


class FakeSettingsRepository:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def get(self) -> StackingSettings:
        return self._tx.view().settings or StackingSettings()

    async def put(self, settings: StackingSettings) -> None:
        def put(data: TenantData) -> None:
            data.settings = settings

        await self._tx.write("settings.put", put)

    async def exists(self) -> bool:
        return self._tx.view().settings is not None


class FakeRedemptionRepository:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def add(self, redemption: Redemption) -> None:
        def add(data: TenantData) -> None:
            if any(
                r.idempotency_key == redemption.idempotency_key for r in data.redemptions.values()
            ):
                raise IdempotencyKeyTaken(redemption.idempotency_key)
            data.redemptions[redemption.id] = redemption

        await self._tx.write("redemptions.add", add)

    async def remove(self, redemption_id: str) -> None:
        def remove(data: TenantData) -> None:
            data.redemptions.pop(redemption_id, None)

        await self._tx.write("redemptions.remove", remove)

    async def by_key(self, idempotency_key: str, *, for_update: bool = False) -> Redemption | None:
        redemptions = self._tx.view().redemptions.values()
        return next((r for r in redemptions if r.idempotency_key == idempotency_key), None)

    async def get(self, redemption_id: str) -> Redemption | None:
        return self._tx.view().redemptions.get(redemption_id)

    async def page(self, query: RedemptionQuery) -> list[Redemption]:
        found = [
            r
            for r in self._tx.view().redemptions.values()
            if (query.customer_id is None or r.customer_id == query.customer_id)
            and (query.before is None or (r.created_at, r.id) < query.before)
        ]
        found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return found[: query.limit]


class FakeUnitOfWork:
    """One tenant's transaction on a `DiscountStore`."""

    def __init__(self, store: DiscountStore, tenant: str) -> None:
        self._store = store
        self.tenant = tenant
        self.committed = False

    async def __aenter__(self) -> Self:
        self._tx = _Transaction(self._store, self.tenant)
        self._outbox: list[tuple[CloudEvent, str]] = []
        self.coupons = FakeCouponRepository(self._tx)
        self.policies = FakePolicyRepository(self._tx)
        self.settings = FakeSettingsRepository(self._tx)
        self.redemptions = FakeRedemptionRepository(self._tx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tx.operations = []  # what was not committed is gone, as on a rollback
        self._outbox = []

    def emit(self, event: CloudEvent, *, aggregate: str) -> None:
        self._outbox.append((event, aggregate))

    async def add_redemption(
        self, redemption: Redemption, coupons: Sequence[Coupon]
    ) -> tuple[Coupon, RejectReason] | None:
        await self.redemptions.add(redemption)
        return await self.coupons.try_count_uses(coupons, redemption.customer_id)

    async def commit(self) -> None:
        await self._store.hook("commit")
        result = self._tx.view()  # raises, storing nothing, if an operation no longer holds
        self._store.tenants[self.tenant] = result
        self._store.outbox.extend(self._outbox)
        self._store.commits += 1
        self._tx.operations, self._outbox = [], []
        self.committed = True
