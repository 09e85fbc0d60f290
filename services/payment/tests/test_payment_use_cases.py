"""The fast tier: the payment use cases on in-memory fakes of their ports (tests/fakes.py),
no database and no app. Replay of an Idempotency-Key, the lease on a gateway attempt, and
the race of two requests with one key, each staged exactly rather than hoped for."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing_common.event_schemas import INVOICE_FINALIZED, InvoiceFinalized
from billing_common.events import new_event
from billing_common.idempotency import request_fingerprint
from billing_common.money import Money
from payment_service.adapters.sandbox import SandboxGateway
from payment_service.domain.errors import IdempotencyKeyReused
from payment_service.domain.gateway import ChargeResult
from payment_service.domain.model import MAX_GATEWAY_ATTEMPTS, PaymentStatus, RefundStatus
from payment_service.service_layer import invoice_events, payments, refunds
from payment_service.service_layer.dependencies import Dependencies
from payment_service.service_layer.gateways import GatewayRegistry
from payment_service.service_layer.outcomes import attempt_lease
from payment_service.service_layer.payments import PayCommand
from payment_service.service_layer.recovery import resume_stalled
from services.payment.tests.fakes import FakeStalledAttempts, FakeUnitOfWork, InMemoryDatabase

pytestmark = pytest.mark.unit

TENANT = "acme"
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class RecordingSandbox(SandboxGateway):
    """The sandbox gateway, remembering the gateway idempotency key of every charge, with a
    hook that runs inside the next charge (while its attempt is in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.charge_keys: list[str] = []
        self.during_next_charge: Any = None

    async def charge(
        self, *, amount: Money, token: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> ChargeResult:
        self.charge_keys.append(idempotency_key)
        hook, self.during_next_charge = self.during_next_charge, None
        if hook is not None:
            await hook()
        return await super().charge(
            amount=amount, token=token, idempotency_key=idempotency_key, metadata=metadata
        )


class Setup:
    def __init__(self) -> None:
        self.db = InMemoryDatabase()
        self.gateway = RecordingSandbox()
        self.clock = Clock()
        self._ids = 0
        self.deps = Dependencies(
            uow=lambda: FakeUnitOfWork(self.db),
            gateways=GatewayRegistry({"sandbox": self.gateway}),
            clock=self.clock,
            new_id=self._new_id,
        )

    def _new_id(self) -> str:
        self._ids += 1
        return f"id-{self._ids}"

    async def open_invoice(self, invoice_id: str = "inv-1", amount_due: str = "100.00") -> str:
        event = new_event(
            source="/billing/invoice",
            event_type=INVOICE_FINALIZED,
            data=InvoiceFinalized(
                invoice_id=invoice_id,
                number="INV-0001",
                customer_id="cus-1",
                currency="EUR",
                total=Decimal(amount_due),
                amount_due=Decimal(amount_due),
                version=2,
            ),
            subject=invoice_id,
            tenant=TENANT,
        )
        await invoice_events.on_invoice_finalized(event, self.deps)
        return invoice_id

    async def pay(
        self, key: str, invoice_id: str = "inv-1", token: str = "tok_visa", amount: str = ""
    ) -> payments.PaymentResult:
        command = PayCommand(
            invoice_id=invoice_id,
            payment_method=token,
            gateway="sandbox",
            amount=Decimal(amount) if amount else None,
        )
        return await payments.pay(TENANT, key, command, self.deps)

    def event_types(self) -> list[str]:
        return [event.type for event in self.db.outbox]


@pytest.fixture
def setup() -> Setup:
    return Setup()


# -- replay of an Idempotency-Key ----------------------------------------------------------


async def test_a_replay_returns_the_first_payment_and_charges_once(setup: Setup) -> None:
    await setup.open_invoice()
    first = await setup.pay("key-1")
    again = await setup.pay("key-1")
    assert first.created and not again.created
    assert again.payment.id == first.payment.id
    assert again.payment.status is PaymentStatus.SUCCEEDED
    assert setup.gateway.charge_calls == 1
    assert len(setup.db.payments) == 1
    assert setup.event_types() == ["billing.payment.received.v1"]


async def test_a_key_reused_for_another_request_is_refused_and_stores_nothing(
    setup: Setup,
) -> None:
    await setup.open_invoice()
    await setup.pay("key-1", amount="40.00")
    commits = setup.db.commits
    with pytest.raises(IdempotencyKeyReused):
        await setup.pay("key-1", amount="40.01")
    assert setup.db.commits == commits
    assert len(setup.db.payments) == 1 and setup.gateway.charge_calls == 1


async def test_the_same_amount_written_otherwise_is_a_replay(setup: Setup) -> None:
    await setup.open_invoice()
    first = await setup.pay("key-1", amount="40.0")
    again = await setup.pay("key-1", amount="40.00")
    assert not again.created and again.payment.id == first.payment.id


async def test_a_key_stored_before_the_kernel_fingerprint_still_replays(setup: Setup) -> None:
    """Records written before payment used billing_common.idempotency hold the fingerprint
    of JSON with spaces: a request retried across the upgrade is a replay, not a 409."""
    await setup.open_invoice()
    first = await setup.pay("key-1", amount="40.00")
    (slot, record), *_ = setup.db.idempotency.items()
    canonical = {
        "operation": "payment",
        "invoice_id": "inv-1",
        "payment_method": "tok_visa",
        "gateway": "sandbox",
        "amount": "40",
        "currency": None,
    }
    earlier = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    assert record.request_hash == request_fingerprint(canonical) != earlier
    setup.db.idempotency[slot] = replace(record, request_hash=earlier)
    again = await setup.pay("key-1", amount="40.0")
    assert not again.created and again.payment.id == first.payment.id
    with pytest.raises(IdempotencyKeyReused):
        await setup.pay("key-1", amount="40.01")


async def test_a_replayed_unknown_outcome_retries_with_the_same_gateway_key(
    setup: Setup,
) -> None:
    await setup.open_invoice()
    first = await setup.pay("key-1", token="tok_processing_error")
    assert first.payment.status is PaymentStatus.PENDING
    again = await setup.pay("key-1", token="tok_processing_error")
    assert not again.created and again.payment.attempts == 2
    assert setup.gateway.charge_keys == [f"billing-payment-{first.payment.id}"] * 2
    assert setup.event_types() == []


# -- the lease on a gateway attempt ------------------------------------------------------------


async def test_a_replay_while_the_first_attempt_is_in_flight_does_not_call_the_gateway(
    setup: Setup,
) -> None:
    await setup.open_invoice()
    replays: list[payments.PaymentResult] = []

    async def replay_meanwhile() -> None:
        replays.append(await setup.pay("key-1"))

    setup.gateway.during_next_charge = replay_meanwhile
    first = await setup.pay("key-1")
    (replay,) = replays
    assert not replay.created and replay.payment.id == first.payment.id
    assert replay.payment.status is PaymentStatus.PENDING  # the first attempt's, still open
    assert len(setup.gateway.charge_keys) == 1
    assert first.payment.status is PaymentStatus.SUCCEEDED and first.payment.attempts == 1


async def test_an_abandoned_attempt_is_taken_over_only_after_its_lease(setup: Setup) -> None:
    await setup.open_invoice()

    async def crash() -> None:
        raise asyncio.CancelledError  # the request died mid-call: no outcome recorded

    setup.gateway.during_next_charge = crash
    with pytest.raises(asyncio.CancelledError):
        await setup.pay("key-1")
    (payment_id,) = (pid for _, pid in setup.db.payments)
    leased = setup.db.payment(TENANT, payment_id)
    assert leased.status is PaymentStatus.PENDING and leased.lease_until is not None

    lease = attempt_lease(setup.gateway, setup.deps)
    setup.clock.advance(lease - timedelta(seconds=1))
    within = await setup.pay("key-1")
    assert within.payment.status is PaymentStatus.PENDING and within.payment.attempts == 1
    assert len(setup.gateway.charge_keys) == 1

    setup.clock.advance(timedelta(seconds=1))
    after = await setup.pay("key-1")
    assert not after.created and after.payment.id == payment_id
    assert after.payment.status is PaymentStatus.SUCCEEDED and after.payment.attempts == 2
    assert setup.gateway.charge_keys == [f"billing-payment-{payment_id}"] * 2
    assert setup.gateway.charge_calls == 1  # the crashed call never reached the sandbox
    assert setup.event_types() == ["billing.payment.received.v1"]


# -- an answer the database could not take: recorded later, never lost ----------------------


def database_away_for(setup: Setup, commits: int) -> None:
    """The next `commits` commits fail as they do when PostgreSQL restarts (DatabaseUnavailable
    is a ConnectionError), nothing of them stored; armed while the gateway call is in flight,
    so the pending payment's own commit went through."""

    async def refuse() -> None:
        nonlocal commits
        commits -= 1
        if commits > 0:
            setup.db.before_commit = refuse
        raise ConnectionError("PostgreSQL is unavailable: the database system is shutting down")

    async def arm() -> None:
        setup.db.before_commit = refuse

    setup.gateway.during_next_charge = arm


async def test_an_answer_is_recorded_once_the_database_is_back(setup: Setup) -> None:
    await setup.open_invoice()
    database_away_for(setup, commits=2)

    result = await setup.pay("key-1")

    assert result.created and result.payment.status is PaymentStatus.SUCCEEDED
    assert setup.db.payment(TENANT, result.payment.id).status is PaymentStatus.SUCCEEDED
    assert setup.gateway.charge_calls == 1
    assert setup.event_types() == ["billing.payment.received.v1"]


async def test_an_answer_never_recorded_is_settled_by_the_recovery_sweep(setup: Setup) -> None:
    setup.deps = replace(setup.deps, record_outcome_within=timedelta(0))  # no second try
    stalled = FakeStalledAttempts(setup.db)
    await setup.open_invoice()
    database_away_for(setup, commits=1)
    with pytest.raises(ConnectionError):
        await setup.pay("key-1")  # the client got a 503 and never came back
    (payment_id,) = (pid for _, pid in setup.db.payments)
    assert setup.db.payment(TENANT, payment_id).status is PaymentStatus.PENDING

    lease = attempt_lease(setup.gateway, setup.deps)
    setup.clock.advance(lease - timedelta(seconds=1))
    assert await resume_stalled(setup.deps, stalled) == 0, "its attempt may still be in flight"

    setup.clock.advance(timedelta(seconds=1))
    assert await resume_stalled(setup.deps, stalled) == 1
    settled = setup.db.payment(TENANT, payment_id)
    assert settled.status is PaymentStatus.SUCCEEDED and settled.attempts == 2
    # Asked again with the same gateway key: the sandbox answers what it did, charging once.
    assert setup.gateway.charge_keys == [f"billing-payment-{payment_id}"] * 2
    assert setup.event_types() == ["billing.payment.received.v1"]
    assert await resume_stalled(setup.deps, stalled) == 0


async def test_a_stalled_last_attempt_fails_the_payment_like_a_gateway_error(
    setup: Setup,
) -> None:
    stalled = FakeStalledAttempts(setup.db)
    await setup.open_invoice()
    lease = attempt_lease(setup.gateway, setup.deps)

    async def crash() -> None:
        raise asyncio.CancelledError  # the process died mid-call, every time

    setup.gateway.during_next_charge = crash
    with pytest.raises(asyncio.CancelledError):
        await setup.pay("key-1")
    for _ in range(MAX_GATEWAY_ATTEMPTS - 1):
        setup.clock.advance(lease)
        setup.gateway.during_next_charge = crash
        with pytest.raises(asyncio.CancelledError):
            await resume_stalled(setup.deps, stalled)
    (payment_id,) = (pid for _, pid in setup.db.payments)
    assert setup.db.payment(TENANT, payment_id).attempts == MAX_GATEWAY_ATTEMPTS

    setup.clock.advance(lease)
    await resume_stalled(setup.deps, stalled)
    failed = setup.db.payment(TENANT, payment_id)
    assert failed.status is PaymentStatus.FAILED and failed.failure_code == "attempt_abandoned"
    assert failed.lease_until is None
    assert setup.event_types() == ["billing.payment.failed.v1"]
    assert await stalled.payments(setup.clock(), 10) == []


async def test_a_refund_whose_answer_was_never_recorded_is_completed_by_the_sweep(
    setup: Setup,
) -> None:
    stalled = FakeStalledAttempts(setup.db)
    await setup.open_invoice()
    paid = (await setup.pay("key-1")).payment
    setup.deps = replace(setup.deps, record_outcome_within=timedelta(0))

    async def refuse() -> None:
        raise ConnectionError("PostgreSQL is unavailable")

    real_refund = setup.gateway.refund

    async def refund_then_lose_the_database(**kwargs: Any) -> Any:
        answer = await real_refund(**kwargs)
        setup.db.before_commit = refuse
        return answer

    setup.gateway.refund = refund_then_lose_the_database  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await refunds.refund(TENANT, paid.id, "refund-1", Decimal("30.00"), setup.deps)
    setup.gateway.refund = real_refund  # type: ignore[method-assign]
    assert setup.db.payment(TENANT, paid.id).refunds[0].status is RefundStatus.PENDING

    setup.clock.advance(attempt_lease(setup.gateway, setup.deps))
    assert await resume_stalled(setup.deps, stalled) == 1
    done = setup.db.payment(TENANT, paid.id)
    assert done.refunds[0].status is RefundStatus.SUCCEEDED
    assert done.refunded_amount == Money.of("30.00", "EUR")
    assert setup.event_types().count("billing.payment.refunded.v1") == 1


# -- the lost race: two requests, one key ---------------------------------------------------


async def test_the_request_that_loses_the_race_on_a_key_replays_the_winner(
    setup: Setup,
) -> None:
    await setup.open_invoice()
    winners: list[payments.PaymentResult] = []

    async def rival_commits_first() -> None:
        winners.append(await setup.pay("key-1"))

    # The loser has checked the key (new) and is about to commit its own pending payment.
    setup.db.before_commit = rival_commits_first
    loser = await setup.pay("key-1")
    (winner,) = winners
    assert winner.created and not loser.created
    assert loser.payment.id == winner.payment.id
    assert loser.payment.status is PaymentStatus.SUCCEEDED
    assert len(setup.db.payments) == 1 and len(setup.db.idempotency) == 1
    assert setup.gateway.charge_calls == 1
    assert setup.event_types() == ["billing.payment.received.v1"]


async def test_the_refund_that_loses_the_race_on_a_key_replays_the_winner(
    setup: Setup,
) -> None:
    await setup.open_invoice()
    paid = (await setup.pay("pay-1")).payment
    winners: list[refunds.RefundOutcome] = []

    async def rival_commits_first() -> None:
        winners.append(
            await refunds.refund(TENANT, paid.id, "refund-1", Decimal("30.00"), setup.deps)
        )

    setup.db.before_commit = rival_commits_first
    loser = await refunds.refund(TENANT, paid.id, "refund-1", Decimal("30.00"), setup.deps)
    (winner,) = winners
    assert winner.created and not loser.created
    assert loser.refund.id == winner.refund.id
    assert loser.refund.status is RefundStatus.SUCCEEDED
    assert len(loser.payment.refunds) == 1 and setup.gateway.refund_calls == 1
    assert loser.payment.refunded_amount == Money.of("30.00", "EUR")
    assert setup.event_types().count("billing.payment.refunded.v1") == 1
