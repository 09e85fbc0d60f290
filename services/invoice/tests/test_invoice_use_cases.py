"""The fast tier: the invoice use cases on in-memory fakes of their ports and peers
(tests/fakes.py), no database and no app. Creation discounts before tax and writes once,
replays its Idempotency-Key, gives a redemption back when it cannot store the invoice;
finalizing draws gapless numbers; a stale save stores nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing_common.event_schemas import INVOICE_CREATED, INVOICE_FINALIZED
from invoice_service.domain.errors import (
    ConcurrentModification,
    IdempotencyConflict,
    InvalidTransition,
)
from invoice_service.domain.model import Customer, InvoiceStatus, TaxStatus
from invoice_service.domain.pricing import LineDraft
from invoice_service.service_layer import creation, status_changes
from invoice_service.service_layer.creation import CreateInvoice
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import PendingCreation
from services.invoice.tests.fakes import FakeDiscounts, FakeTax, InvoiceStore

pytestmark = pytest.mark.unit

TENANT = "acme"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CUSTOMER = Customer("c-1", None, "DE", None, TaxStatus.STANDARD)


class PeerDown(Exception):
    """What a peer adapter raises when it cannot answer (PeerUnavailable in production)."""


def command(key: str = "k1", *coupons: str, body: str = "h1") -> CreateInvoice:
    return CreateInvoice(
        tenant=TENANT,
        actor="test",
        idempotency_key=key,
        request_hash=body,
        customer=CUSTOMER,
        currency="EUR",
        lines=(
            LineDraft("Consulting", Decimal(2), Decimal("50.00"), "standard"),
            LineDraft("Support", Decimal(1), Decimal("100.00"), "standard"),
        ),
        coupon_codes=coupons,
    )


@pytest.fixture
def store() -> InvoiceStore:
    return InvoiceStore()


@pytest.fixture
def tax() -> FakeTax:
    return FakeTax()


@pytest.fixture
def discounts() -> FakeDiscounts:
    return FakeDiscounts()


@pytest.fixture
def deps(store: InvoiceStore, tax: FakeTax, discounts: FakeDiscounts) -> Dependencies:
    return Dependencies(uow=store.uow, tax=tax, discounts=discounts, clock=lambda: NOW)


async def test_create_discounts_first_then_taxes_what_remains_and_writes_once(
    deps: Dependencies, store: InvoiceStore, tax: FakeTax, discounts: FakeDiscounts
) -> None:
    result = await creation.create_invoice(command("k1", "TEN"), deps)
    invoice = result.invoice
    assert result.created is True
    # 10.00 off 200.00 spread over the lines in proportion: the tax base is what remains.
    assert tax.bases[-1] == [Decimal("95.00"), Decimal("95.00")]
    assert invoice.totals.total == Decimal("226.10")  # 190.00 + 19 % VAT
    assert (
        invoice.discount_redemption_id == discounts.redeemed[creation.redemption_key(TENANT, "k1")]
    )
    assert store.data(TENANT).pending == {}  # the creation is no longer in progress
    assert [(e.type, a) for e, a in store.outbox] == [(INVOICE_CREATED, f"invoice:{invoice.id}")]


async def test_the_same_key_replays_and_another_body_is_a_conflict(
    deps: Dependencies, store: InvoiceStore, tax: FakeTax
) -> None:
    first = await creation.create_invoice(command("k1"), deps)
    again = await creation.create_invoice(command("k1"), deps)
    assert (again.created, again.invoice.id) == (False, first.invoice.id)
    assert len(tax.calculations) == 1 and store.commits == 2  # pending + the invoice
    with pytest.raises(IdempotencyConflict):
        await creation.create_invoice(command("k1", body="other"), deps)


async def test_a_creation_that_cannot_redeem_gives_everything_back_and_stores_nothing(
    deps: Dependencies, store: InvoiceStore, tax: FakeTax, discounts: FakeDiscounts
) -> None:
    discounts.fail_redeem = PeerDown("discount service down")
    with pytest.raises(PeerDown):
        await creation.create_invoice(command("k1", "TEN"), deps)
    assert store.data(TENANT).invoices == {}
    assert store.data(TENANT).pending == {}
    assert tax.calculations == {}  # the calculation made for it was discarded
    assert tax.discarded == [creation.invoice_id_for(TENANT, "k1")]
    assert store.outbox == []


async def test_the_sweeper_releases_an_abandoned_creation_but_never_a_stored_one(
    deps: Dependencies, store: InvoiceStore, discounts: FakeDiscounts
) -> None:
    stored = await creation.create_invoice(command("k1", "TEN"), deps)
    # A creation whose process died after redeeming: its pending record stays behind.
    abandoned = PendingCreation(
        tenant_id=TENANT,
        invoice_id=creation.invoice_id_for(TENANT, "k2"),
        redemption_key=creation.redemption_key(TENANT, "k2"),
        started_at=NOW,
    )
    async with deps.uow(TENANT) as uow:
        assert await uow.pending.begin(abandoned)
        await uow.commit()
    discounts.redeemed[abandoned.redemption_key] = "r-abandoned"

    class Abandoned:
        async def older_than(self, moment: datetime, limit: int) -> list[object]:
            return [p for p in store.data(TENANT).pending.values() if p.started_at < moment]

    later = Dependencies(deps.uow, deps.tax, deps.discounts, clock=lambda: NOW + timedelta(1))
    released = await creation.release_abandoned(
        later,
        Abandoned(),
        older_than=timedelta(minutes=10),  # type: ignore[arg-type]
    )
    assert released == 1
    assert discounts.released == [abandoned.redemption_key]
    assert stored.invoice.discount_redemption_id in discounts.redeemed.values()
    assert await creation.give_back(later, abandoned) is False  # done: nothing to repeat


async def test_finalizing_draws_gapless_numbers_and_a_refusal_draws_none(
    deps: Dependencies, store: InvoiceStore
) -> None:
    ids = [(await creation.create_invoice(command(f"k{n}"), deps)).invoice.id for n in range(3)]
    first = await status_changes.finalize_invoice(TENANT, ids[0], "test", deps)
    await status_changes.void_invoice(TENANT, ids[1], "mistake", "test", deps)
    with pytest.raises(InvalidTransition):
        await status_changes.finalize_invoice(TENANT, ids[1], "test", deps)
    third = await status_changes.finalize_invoice(TENANT, ids[2], "test", deps)
    assert (first.sequence, third.sequence) == (1, 2)
    assert first.status is InvoiceStatus.ISSUED
    assert store.invoice(TENANT, ids[0]).number == first.number
    finalized = [e.subject for e, _ in store.outbox if e.type == INVOICE_FINALIZED]
    assert finalized == [ids[0], ids[2]]


async def test_a_save_of_a_stale_copy_is_a_concurrent_modification_and_stores_nothing(
    deps: Dependencies, store: InvoiceStore
) -> None:
    invoice_id = (await creation.create_invoice(command("k1"), deps)).invoice.id
    async with store.uow(TENANT) as slow:
        stale = await slow.invoices.get(invoice_id, for_update=True)
        assert stale is not None
        await status_changes.void_invoice(TENANT, invoice_id, "meanwhile", "other", deps)
        rivals = store.invoice(TENANT, invoice_id)
        stale.void(at=NOW, reason="late", actor="slow")
        await slow.invoices.save(stale)
        with pytest.raises(ConcurrentModification):
            await slow.commit()
    kept = store.invoice(TENANT, invoice_id)
    assert (kept.version, len(kept.history)) == (rivals.version, len(rivals.history))
