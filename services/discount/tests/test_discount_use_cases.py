"""The fast tier: the discount use cases on in-memory fakes of their ports (tests/fakes.py),
no database and no app. A redemption counts each use once per idempotency key, replays a
key, loses the last use to a rival exactly as SQL decides it, and gives its uses back on
release; policies upsert idempotently, also against a rival creating the key first."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing_common.cursors import decode_timestamp_and_id, encode_cursor
from billing_common.event_schemas import DISCOUNT_APPLIED, DISCOUNT_RELEASED
from billing_common.money import Money
from discount_service.domain.errors import (
    CouponNotApplicable,
    CouponNotFound,
    DuplicateCouponCode,
    IdempotencyKeyReused,
)
from discount_service.domain.model import (
    Coupon,
    DiscountPolicy,
    DiscountRequest,
    PercentOff,
    UserTypeRule,
)
from discount_service.service_layer import coupons, policies, quotes, redemptions
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.ports import CouponQuery, RedemptionQuery
from services.discount.tests.fakes import DiscountStore

pytestmark = pytest.mark.unit

TENANT = "acme"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def coupon(code: str = "WELCOME10", **kw: object) -> Coupon:
    fields: dict[str, object] = {"id": f"id-{code}", "starts_at": SINCE, "name": code, **kw}
    return Coupon(code=code, benefit=PercentOff(Decimal("0.10")), **fields)  # type: ignore[arg-type]


def request(*codes: str, customer: str = "c-1", amount: str = "200.00") -> DiscountRequest:
    return DiscountRequest(customer_id=customer, amount=Money.of(amount, "EUR"), coupon_codes=codes)


@pytest.fixture
def store() -> DiscountStore:
    return DiscountStore()


@pytest.fixture
def deps(store: DiscountStore) -> Dependencies:
    return Dependencies(uow=store.uow, clock=lambda: NOW)


def count(store: DiscountStore, code: str = "WELCOME10") -> int:
    return store.data(TENANT).coupons[code].redeemed_count


# -- coupons ----------------------------------------------------------------------------------


async def test_coupon_codes_are_unique_case_insensitively_and_replace_keeps_the_count(
    deps: Dependencies, store: DiscountStore
) -> None:
    await coupons.create_coupon(TENANT, coupon(), deps)
    with pytest.raises(DuplicateCouponCode):
        await coupons.create_coupon(TENANT, coupon("welcome10", id="other"), deps)
    await redemptions.redeem(TENANT, request("WELCOME10"), "k1", deps)
    replaced = await coupons.replace_coupon(TENANT, coupon(max_redemptions=5), deps)
    assert (replaced.max_redemptions, replaced.redeemed_count) == (5, 1)
    assert (await coupons.get_coupon(TENANT, "welcome10", deps)).redeemed_count == 1
    with pytest.raises(CouponNotFound):
        await coupons.replace_coupon(TENANT, coupon("NOPE"), deps)


async def test_coupons_page_in_code_order(deps: Dependencies) -> None:
    for code in ["C", "A", "D", "B"]:
        await coupons.create_coupon(TENANT, coupon(code), deps)
    first = await coupons.list_coupons(TENANT, CouponQuery(limit=2), deps)
    rest = await coupons.list_coupons(TENANT, CouponQuery(limit=5, after="b"), deps)
    assert [c.code for c in [*first, *rest]] == ["A", "B", "C", "D"]
    await coupons.delete_coupon(TENANT, "a", deps)
    with pytest.raises(CouponNotFound):
        await coupons.delete_coupon(TENANT, "A", deps)


# -- redemptions ------------------------------------------------------------------------------


async def test_redeem_counts_once_per_key_and_replays_it(
    deps: Dependencies, store: DiscountStore
) -> None:
    await coupons.create_coupon(TENANT, coupon(), deps)
    first = await redemptions.redeem(TENANT, request("WELCOME10"), "key-1", deps)
    again = await redemptions.redeem(TENANT, request("welcome10"), "key-1", deps)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.redemption == first.redemption
    assert first.redemption.result.total_discount == Money.of("20.00", "EUR")
    assert count(store) == 1
    assert store.data(TENANT).usage == {("id-WELCOME10", "c-1"): 1}
    [(event, aggregate)] = store.outbox
    assert (event.type, event.tenant) == (DISCOUNT_APPLIED, TENANT)
    assert aggregate == f"redemption:{first.redemption.id}"
    with pytest.raises(IdempotencyKeyReused):
        await redemptions.redeem(TENANT, request("WELCOME10", amount="300.00"), "key-1", deps)


async def test_a_quote_counts_nothing(deps: Dependencies, store: DiscountStore) -> None:
    await coupons.create_coupon(TENANT, coupon(), deps)
    result = await quotes.quote(TENANT, request("WELCOME10"), deps)
    assert result.total_discount == Money.of("20.00", "EUR")
    assert count(store) == 0 and store.outbox == []


async def test_the_last_use_taken_by_a_rival_is_coupon_not_applicable_and_stores_nothing(
    deps: Dependencies, store: DiscountStore
) -> None:
    await coupons.create_coupon(TENANT, coupon(max_redemptions=1), deps)

    async def rival() -> None:
        # Commits between this redemption's evaluation and its counter update.
        await redemptions.redeem(TENANT, request("WELCOME10", customer="c-2"), "rival", deps)

    store.before["coupons.try_count_redemption"] = rival
    with pytest.raises(CouponNotApplicable) as caught:
        await redemptions.redeem(TENANT, request("WELCOME10"), "mine", deps)
    assert caught.value.problem_extensions == {"code": "WELCOME10", "reason": "exhausted"}
    assert count(store) == 1
    assert [r.idempotency_key for r in store.data(TENANT).redemptions.values()] == ["rival"]
    assert len(store.outbox) == 1


async def test_a_rival_with_the_same_key_committing_first_is_replayed(
    deps: Dependencies, store: DiscountStore
) -> None:
    await coupons.create_coupon(TENANT, coupon(), deps)

    async def rival() -> None:
        await redemptions.redeem(TENANT, request("WELCOME10"), "same", deps)

    store.before["redemptions.add"] = rival
    outcome = await redemptions.redeem(TENANT, request("WELCOME10"), "same", deps)
    assert outcome.replayed is True
    assert count(store) == 1 and len(store.outbox) == 1


async def test_the_customer_limit_holds(deps: Dependencies, store: DiscountStore) -> None:
    await coupons.create_coupon(TENANT, coupon(max_redemptions_per_customer=1), deps)
    await redemptions.redeem(TENANT, request("WELCOME10"), "k1", deps)
    with pytest.raises(CouponNotApplicable):
        await redemptions.redeem(TENANT, request("WELCOME10"), "k2", deps)
    await redemptions.redeem(TENANT, request("WELCOME10", customer="c-2"), "k3", deps)
    assert count(store) == 2


async def test_release_gives_the_uses_back_once_and_frees_the_key(
    deps: Dependencies, store: DiscountStore
) -> None:
    await coupons.create_coupon(TENANT, coupon(max_redemptions=1), deps)
    made = await redemptions.redeem(TENANT, request("WELCOME10"), "k1", deps)
    released = await redemptions.release(TENANT, "k1", deps)
    assert released == made.redemption
    assert await redemptions.release(TENANT, "k1", deps) is None  # idempotent
    assert count(store) == 0
    assert store.data(TENANT).usage == {("id-WELCOME10", "c-1"): 0}
    assert [e.type for e, _ in store.outbox] == [DISCOUNT_APPLIED, DISCOUNT_RELEASED]
    again = await redemptions.redeem(TENANT, request("WELCOME10"), "k1", deps)
    assert again.replayed is False and count(store) == 1


async def test_history_pages_newest_first_per_customer(
    store: DiscountStore,
) -> None:
    await coupons.create_coupon(TENANT, coupon(), Dependencies(store.uow, lambda: NOW))
    for n in range(4):
        at = datetime(2026, 3, 1, 9, n // 2, tzinfo=UTC)  # pairs share an instant: id decides
        deps = Dependencies(store.uow, lambda at=at: at)  # type: ignore[misc]
        await redemptions.redeem(TENANT, request(customer=f"c-{n % 2}"), f"k{n}", deps)
    deps = Dependencies(store.uow, lambda: NOW)
    everything = sorted(
        store.data(TENANT).redemptions.values(), key=lambda r: (r.created_at, r.id), reverse=True
    )
    first = await redemptions.list_redemptions(TENANT, RedemptionQuery(limit=3), deps)
    cursor = decode_timestamp_and_id(encode_cursor(first[-1].created_at, first[-1].id))
    rest = await redemptions.list_redemptions(TENANT, RedemptionQuery(limit=3, before=cursor), deps)
    assert [*first, *rest] == everything
    mine = await redemptions.list_redemptions(
        TENANT, RedemptionQuery(limit=9, customer_id="c-1"), deps
    )
    assert {r.customer_id for r in mine} == {"c-1"} and len(mine) == 2


# -- policies ---------------------------------------------------------------------------------


def premium(rate: str = "0.05") -> DiscountPolicy:
    return DiscountPolicy(
        key="premium", name="Premium", rule=UserTypeRule("premium", PercentOff(Decimal(rate)))
    )


async def test_put_policy_is_idempotent_and_survives_a_rival_creating_the_key(
    deps: Dependencies, store: DiscountStore
) -> None:
    async def rival() -> None:
        await policies.put_policy(TENANT, premium("0.07"), deps)

    store.before["policies.upsert"] = rival
    # The rival commits between this PUT's read and its insert: the insert finds the key
    # taken, and the PUT runs once more as an update of that policy.
    assert await policies.put_policy(TENANT, premium(), deps) is False
    assert store.data(TENANT).policies == {"premium": premium()}
    assert await policies.put_policy(TENANT, premium(), deps) is False
    assert await policies.list_policies(TENANT, deps) == [premium()]
