"""Faults survived on the direct runtime: four real processes, each with its own fresh
PostgreSQL database, RabbitMQ (a fresh vhost, reached through a proxy the tests can cut) and
HTTP between them. Nothing is lost, nothing is applied twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import httpx
import pytest
import pytest_asyncio

from billing_common.adapters.rabbitmq_bus import DeadLetterQueue
from billing_common.auth import ALL_SCOPES, TokenService
from billing_common.testing import (
    create_postgres_database,
    create_rabbitmq_vhost,
    delete_rabbitmq_vhost,
    drop_postgres_database,
)
from billing_launcher.seed_flows import (
    ORDER,
    create_invoice,
    credit_note_flow,
    eventually,
    finalize,
    get_invoice,
    key,
    pay,
    wait_payable,
    wait_status,
)
from tests.direct_platform import SERVICES, SIGNING_KEY, DirectPlatform, TcpProxy
from tests.test_e2e_credit_notes import check_amounts_agree

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


class Direct:
    def __init__(
        self, platform: DirectPlatform, proxy: TcpProxy, broker_url: str, pg_urls: dict[str, str]
    ) -> None:
        self.platform = platform
        self.proxy = proxy
        self.broker_url = broker_url
        self.pg_urls = pg_urls
        tokens = TokenService(SIGNING_KEY, issuer="billing-platform", audience="billing-api")
        token = tokens.mint(subject="faults", tenant="demo", scopes=ALL_SCOPES)
        self.headers = {"authorization": f"Bearer {token}"}
        self.clients = {
            name: httpx.AsyncClient(base_url=platform.url(name), timeout=30) for name in SERVICES
        }

    async def unpublished(self, service: str) -> int:
        url = self.pg_urls[service].replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(url)
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            )
        finally:
            await conn.close()

    async def count_rows(self, service: str, table: str) -> int:
        url = self.pg_urls[service].replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await conn.close()

    async def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop a service without blocking this event loop: the broker proxy runs on it, and
        a stopping service closes its AMQP connections through it. Waited for in this loop,
        the close stalled until the stop's timeout and its SIGKILL (~15 s a stop)."""
        await asyncio.to_thread(self.platform.stop, name, sig)

    async def restart(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        await self.stop(name, sig)
        self.platform.start(name)
        await self.platform.wait_ready(name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def direct(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Direct]:
    # The helpers run their own event loop: keep them off this one.
    databases = {name: await asyncio.to_thread(create_postgres_database) for name in SERVICES}
    vhost, broker_url = await asyncio.to_thread(create_rabbitmq_vhost)
    parts = urlsplit(broker_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    proxied = urlunsplit(
        parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}")
    )
    workdir = Path(tmp_path_factory.mktemp("direct"))
    platform = DirectPlatform({n: url for n, (_, url) in databases.items()}, proxied, workdir)
    try:
        for name in SERVICES:
            platform.start(name)
        await platform.wait_ready()
        yield Direct(platform, proxy, broker_url, {n: url for n, (_, url) in databases.items()})
    finally:
        # In a thread: the services close their AMQP connections through the proxy on this loop.
        await asyncio.to_thread(platform.stop_all)
        await proxy.stop()
        await asyncio.to_thread(delete_rabbitmq_vhost, vhost)
        for name, _url in databases.values():
            await asyncio.to_thread(drop_postgres_database, name)


@pytest_asyncio.fixture(loop_scope="module")
async def d(direct: Direct) -> AsyncIterator[Direct]:
    """Each test starts with every service up and the broker reachable."""
    await direct.proxy.restore()
    for name in SERVICES:
        if name not in direct.platform.processes:
            direct.platform.start(name)
    await direct.platform.wait_ready()
    yield direct


async def _issued(d: Direct) -> dict[str, object]:
    inv = d.clients["invoice"]
    invoice = await create_invoice(inv, d.headers)
    await finalize(inv, d.headers, invoice["id"])
    return invoice


async def test_both_flows_across_four_processes(d: Direct) -> None:
    invoice = await _issued(d)
    await wait_payable(d.clients["payment"], d.headers, str(invoice["id"]))
    assert (await pay(d.clients["payment"], d.headers, str(invoice["id"]), None)).status_code == 201
    paid = await wait_status(d.clients["invoice"], d.headers, str(invoice["id"]), "paid")
    assert Decimal(paid["amount_paid"]) == Decimal(paid["total"])


async def test_credit_note_refund_flow_across_four_processes(d: Direct) -> None:
    flow = await credit_note_flow(d.clients["invoice"], d.clients["payment"], d.headers)
    payable = await d.clients["payment"].get(
        f"/v1/payable-invoices/{flow.invoice['id']}", headers=d.headers
    )
    check_amounts_agree(flow, payable.json())


async def test_broker_outage_loses_nothing_and_doubles_nothing(d: Direct) -> None:
    await d.proxy.cut()
    invoices = [await _issued(d) for _ in range(3)]  # HTTP still works; events wait in the outbox
    await asyncio.sleep(1.0)
    assert await d.unpublished("invoice") >= 6  # created + finalized per invoice

    await d.proxy.restore()  # the broker is back: the relay delivers, in order
    for invoice in invoices:
        await wait_payable(d.clients["payment"], d.headers, str(invoice["id"]), timeout=45)
    await eventually(lambda: d.unpublished("invoice"), lambda n: n == 0, timeout=30)

    await d.proxy.cut()
    for invoice in invoices:  # payments succeed; payment.received waits in the payment outbox
        answer = await pay(d.clients["payment"], d.headers, str(invoice["id"]), None)
        assert answer.status_code == 201, answer.text
    await asyncio.sleep(1.0)
    for invoice in invoices:
        assert (await get_invoice(d.clients["invoice"], d.headers, str(invoice["id"])))[
            "status"
        ] == "issued"
    assert await d.unpublished("payment") >= 3

    await d.proxy.restore()
    for invoice in invoices:
        paid = await wait_status(
            d.clients["invoice"], d.headers, str(invoice["id"]), "paid", timeout=45
        )
        assert Decimal(paid["amount_paid"]) == Decimal(paid["total"])
        assert len(paid["payments"]) == 1


async def test_consumer_killed_mid_stream_applies_each_event_once(d: Direct) -> None:
    invoice = await _issued(d)
    invoice_id = str(invoice["id"])
    await wait_payable(d.clients["payment"], d.headers, invoice_id)
    # Ten small payments; the invoice service is killed (SIGKILL: no clean ack) while their
    # events stream in, then restarted. Redelivered events must not count twice.
    payments = [pay(d.clients["payment"], d.headers, invoice_id, "1.00") for _ in range(10)]
    first = await asyncio.gather(*payments[:5])
    await d.stop("invoice", signal.SIGKILL)
    rest = await asyncio.gather(*payments[5:])
    assert all(r.status_code == 201 for r in [*first, *rest])
    d.platform.start("invoice")
    await d.platform.wait_ready("invoice")

    async def paid_amount() -> Decimal:
        return Decimal(
            (await get_invoice(d.clients["invoice"], d.headers, invoice_id))["amount_paid"]
        )

    await eventually(paid_amount, lambda amount: amount == Decimal("10.00"), timeout=45)
    await asyncio.sleep(1.5)  # any late redelivery would show up now
    assert await paid_amount() == Decimal("10.00")


async def test_poison_event_is_dead_lettered_and_the_consumer_keeps_serving(d: Direct) -> None:
    connection = await aio_pika.connect(d.broker_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("billing.events")
        await exchange.publish(
            aio_pika.Message(
                b'{"not": "a cloudevent"',
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id="poison-1",
            ),
            routing_key="billing.payment.received.v1",
        )
    # The invoice consumer still handles good events after the poison one.
    invoice = await _issued(d)
    await wait_payable(d.clients["payment"], d.headers, str(invoice["id"]))
    await pay(d.clients["payment"], d.headers, str(invoice["id"]), None)
    await wait_status(d.clients["invoice"], d.headers, str(invoice["id"]), "paid")

    async def dead() -> list[str]:
        connection = await aio_pika.connect(d.broker_url)
        async with connection:
            # Payment events go to the invoice consumer's settlement lane (its own queue).
            queue = "billing.events.invoice.settlement"
            letters = await DeadLetterQueue(connection, queue).peek()
            return [letter.message_id for letter in letters]

    found = await eventually(dead, lambda ids: "poison-1" in ids, timeout=30)
    assert found.count("poison-1") == 1


async def test_peer_down_gives_503_and_nothing_half_written(d: Direct) -> None:
    before = await d.count_rows("invoice", "invoice_invoices")
    await d.stop("tax")
    idem = key()
    answer = await d.clients["invoice"].post(
        "/v1/invoices",
        json=ORDER,
        headers={**d.headers, "Idempotency-Key": idem},
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert await d.count_rows("invoice", "invoice_invoices") == before
    d.platform.start("tax")
    await d.platform.wait_ready("tax")

    async def retry() -> httpx.Response:
        return await d.clients["invoice"].post(
            "/v1/invoices",
            json=ORDER,
            headers={**d.headers, "Idempotency-Key": idem},
        )

    created = await eventually(retry, lambda r: r.status_code == 201, timeout=20)
    again = await retry()
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    assert await d.count_rows("invoice", "invoice_invoices") == before + 1


async def test_concurrent_finalizations_and_payments(d: Direct) -> None:
    inv = d.clients["invoice"]
    drafts = [await create_invoice(inv, d.headers) for _ in range(8)]
    finalized = await asyncio.gather(
        *(inv.post(f"/v1/invoices/{x['id']}/finalize", headers=d.headers) for x in drafts)
    )
    assert all(r.status_code == 200 for r in finalized), [r.text for r in finalized]
    numbers = sorted(int(r.json()["number"].rsplit("-", 1)[1]) for r in finalized)
    assert numbers == list(range(numbers[0], numbers[0] + 8))  # distinct, consecutive, no gap

    target = str(drafts[0]["id"])
    await wait_payable(d.clients["payment"], d.headers, target)
    same = key()
    answers = await asyncio.gather(
        *(
            pay(d.clients["payment"], d.headers, target, "5.00", idempotency_key=same)
            for _ in range(6)
        )
    )
    assert len({a.json()["id"] for a in answers if a.status_code in (200, 201)}) == 1
    assert await d.count_rows("payment", "payment_payments") >= 1

    async def paid() -> Decimal:
        return Decimal((await get_invoice(inv, d.headers, target))["amount_paid"])

    await eventually(paid, lambda amount: amount == Decimal("5.00"))


async def test_service_restarted_mid_flow_resumes_from_outbox_and_queue(d: Direct) -> None:
    await d.stop("payment")
    invoice = await _issued(d)  # finalized.v1 waits in the payment service's queue
    d.platform.start("payment")
    await d.platform.wait_ready("payment")
    await wait_payable(d.clients["payment"], d.headers, str(invoice["id"]), timeout=30)

    await d.stop("invoice")  # payment.received waits in the invoice service's queue
    assert (await pay(d.clients["payment"], d.headers, str(invoice["id"]), None)).status_code == 201
    d.platform.start("invoice")
    await d.platform.wait_ready("invoice")
    await wait_status(d.clients["invoice"], d.headers, str(invoice["id"]), "paid", timeout=30)
