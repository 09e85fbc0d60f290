"""The ports the discount use cases depend on: tenant-scoped repositories and the unit of
work as Protocols, the queries they answer, and the signals they raise. Adapters implement
them (discount_service.adapters); bootstrap wires them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from billing_common.events import CloudEvent
from discount_service.domain.model import (
    Coupon,
    DiscountPolicy,
    Redemption,
    RejectReason,
    StackingSettings,
)


class IdempotencyKeyTaken(Exception):
    """Another transaction stored a redemption under this key first."""


class PolicyKeyTaken(Exception):
    """Another transaction created a policy with this key first."""


# A keyset position in the redemption history: the (created_at, id) of the last item seen.
RedemptionPosition = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class CouponQuery:
    """One page of coupons in code order, after the coupon whose code is `after`."""

    limit: int
    after: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerCoupons:
    """The coupons a request names, with how often one customer redeemed each: what an
    evaluation reads about coupons, read together (on PostgreSQL in one statement)."""

    coupons: dict[str, Coupon]  # by normalised code; unknown codes are absent
    usage: dict[str, int]  # by coupon id; coupons the customer never redeemed are absent


@dataclass(frozen=True, slots=True)
class RedemptionQuery:
    """One page of the redemption history, newest first, strictly older than `before`."""

    limit: int
    before: RedemptionPosition | None = None
    customer_id: str | None = None


class CouponRepository(Protocol):
    async def get(self, code: str) -> Coupon | None: ...

    async def add(self, coupon: Coupon) -> Coupon:
        """Store a new coupon (its counter starts at 0); raise DuplicateCouponCode if the
        tenant has a coupon with that code (case-insensitively)."""

    async def replace(self, coupon: Coupon) -> Coupon | None:
        """Store the new definition of an existing coupon, keeping its counter; None if
        there is no coupon with that code."""

    async def delete(self, code: str) -> bool: ...

    async def page(self, query: CouponQuery) -> list[Coupon]: ...

    async def by_codes(self, codes: Iterable[str]) -> dict[str, Coupon]:
        """The coupons with these codes, keyed by normalised code; unknown codes are absent."""

    async def customer_usage(self, coupon_ids: Iterable[str], customer_id: str) -> dict[str, int]:
        """How often the customer redeemed each coupon (coupons never redeemed are absent)."""

    async def for_customer(self, codes: Iterable[str], customer_id: str) -> CustomerCoupons:
        """`by_codes(codes)` with the `customer_usage` of those coupons by `customer_id`."""

    async def try_count_redemption(self, coupon_id: str) -> bool:
        """Count one use unless that would pass max_redemptions, atomically; False if not."""

    async def try_count_customer_redemption(
        self, coupon_id: str, customer_id: str, limit: int | None
    ) -> bool:
        """Count one use by the customer below `limit` (None: no limit), atomically."""

    async def try_count_uses(
        self, coupons: Sequence[Coupon], customer_id: str
    ) -> tuple[Coupon, RejectReason] | None:
        """Count one use of each coupon: every overall counter (`try_count_redemption`, in
        the order given: callers give one lock order), then every per-customer counter
        below the coupon's limit (`try_count_customer_redemption`). The first coupon whose
        use was not counted with why (EXHAUSTED, CUSTOMER_LIMIT_REACHED); None if all
        were. Uses counted before a refusal stay counted until the transaction ends."""

    async def uncount_redemption(self, coupon_id: str, customer_id: str) -> None:
        """Give a counted use back (overall and for the customer), never below zero."""


class PolicyRepository(Protocol):
    async def get(self, key: str) -> DiscountPolicy | None: ...

    async def all(self) -> list[DiscountPolicy]: ...

    async def active(self) -> list[DiscountPolicy]: ...

    async def upsert(self, policy: DiscountPolicy) -> bool:
        """Create or replace the policy under its key; True if it was created. Raise
        PolicyKeyTaken if a concurrent transaction created that key first."""

    async def delete(self, key: str) -> bool: ...


class StackingSettingsRepository(Protocol):
    async def get(self) -> StackingSettings:
        """The tenant's settings, or the defaults if none were stored."""

    async def put(self, settings: StackingSettings) -> None: ...

    async def exists(self) -> bool: ...


class RedemptionRepository(Protocol):
    async def add(self, redemption: Redemption) -> None:
        """Store the redemption with its lines, claiming its idempotency key before any
        counter moves; raise IdempotencyKeyTaken if another transaction holds the key."""

    async def remove(self, redemption_id: str) -> None: ...

    async def by_key(self, idempotency_key: str, *, for_update: bool = False) -> Redemption | None:
        """The redemption made under the key; with `for_update`, locked until commit."""

    async def get(self, redemption_id: str) -> Redemption | None: ...

    async def page(self, query: RedemptionQuery) -> list[Redemption]: ...


class CouponReads(Protocol):
    async def for_customer(self, codes: Iterable[str], customer_id: str) -> CustomerCoupons: ...


class ActivePolicyReads(Protocol):
    async def active(self) -> list[DiscountPolicy]: ...


class StackingSettingsReads(Protocol):
    async def get(self) -> StackingSettings: ...


class EvaluationReads(Protocol):
    """What evaluating a request reads: a unit of work's repositories offer it (a
    redemption evaluates in its transaction), and so does a ReadView (a quote)."""

    @property
    def coupons(self) -> CouponReads: ...

    @property
    def policies(self) -> ActivePolicyReads: ...

    @property
    def settings(self) -> StackingSettingsReads: ...


class ReadView(EvaluationReads, Protocol):
    """One tenant's reads outside any transaction: each read is a snapshot of its own, as
    with statements in autocommit. For a use case that writes nothing and needs no two
    reads to agree beyond what one read returns (a quote reads coupons, counters and the
    configuration version in one statement)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


ReadViewFactory = Callable[[str], ReadView]
"""Builds a read view for one tenant."""


class UnitOfWork(Protocol):
    """One transaction for one tenant. Events emitted inside it are committed atomically
    with the change (transactional outbox); leaving without commit rolls everything back."""

    tenant: str
    coupons: CouponRepository
    policies: PolicyRepository
    settings: StackingSettingsRepository
    redemptions: RedemptionRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def emit(self, event: CloudEvent, *, aggregate: str) -> None: ...

    async def add_redemption(
        self, redemption: Redemption, coupons: Sequence[Coupon]
    ) -> tuple[Coupon, RejectReason] | None:
        """`redemptions.add(redemption)` (IdempotencyKeyTaken if its key is taken, nothing
        counted), then `coupons.try_count_uses(coupons, redemption.customer_id)` and its
        answer; where the database allows, both in one statement."""

    async def commit(self) -> None: ...


UnitOfWorkFactory = Callable[[str], UnitOfWork]
"""Builds a unit of work for one tenant."""
