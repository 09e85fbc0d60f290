"""Real server restarts survived on the direct runtime.

The four services run as real processes on a PostgreSQL cluster and a RabbitMQ node of their
own (tests/private_servers.py: the shared servers must never be restarted), and the tests
restart those servers for real while clients keep working. What must hold:

- during a database outage every answer is a 503 problem with Retry-After, never a 500;
- afterwards every service serves again without being restarted (same processes);
- nothing is lost and nothing is applied twice: every invoice is paid exactly once, every
  payment is counted once, every outbox drains and no event is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import pytest_asyncio

from billing_common.auth import ALL_SCOPES, TokenService
from billing_launcher.seed_flows import ORDER, eventually, key
from tests.direct_platform import SERVICES, SIGNING_KEY, DirectPlatform
from tests.private_servers import PrivatePostgres, PrivateRabbitMq

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

# How a careful client treats a 503: wait as told, send the same request (same key) again.
RETRY_FOR = 60.0


@dataclass
class Answers:
    """Every status the clients saw, and the 5xx bodies to show when one was not a 503."""

    statuses: Counter[int] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)

    def record(self, method: str, url: str, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 500 and not _is_retryable_problem(response):
            self.bad.append(f"{method} {url} -> {response.status_code} {response.text[:300]}")

    @property
    def unavailable(self) -> int:
        return self.statuses[503]


def _is_retryable_problem(response: httpx.Response) -> bool:
    return (
        response.status_code == 503
        and response.headers.get("content-type", "").startswith("application/problem+json")
        and response.headers.get("retry-after", "").isdigit()
    )


class Restarted:
    def __init__(
        self, platform: DirectPlatform, pg: PrivatePostgres, rabbit: PrivateRabbitMq
    ) -> None:
        self.platform = platform
        self.pg = pg
        self.rabbit = rabbit
        tokens = TokenService(SIGNING_KEY, issuer="billing-platform", audience="billing-api")
        token = tokens.mint(subject="faults", tenant="demo", scopes=ALL_SCOPES)
        self.headers = {"authorization": f"Bearer {token}"}
        self.clients = {
            name: httpx.AsyncClient(base_url=platform.url(name), timeout=30) for name in SERVICES
        }
        self.restarting: set[str] = set()
        self.retired: list[httpx.AsyncClient] = []

    async def restart_service(self, name: str) -> None:
        """Replace a service's process (SIGTERM, then start it again) while clients go on."""
        self.restarting.add(name)
        try:
            await asyncio.to_thread(self.platform.stop, name)
            self.platform.start(name)
            await self.platform.wait_ready(name, timeout=60)
            # The old client's pooled connections went with the old process. Requests still
            # on their way through it finish there; closing it now would cut them.
            self.retired.append(self.clients[name])
            self.clients[name] = httpx.AsyncClient(base_url=self.platform.url(name), timeout=30)
        finally:
            self.restarting.discard(name)

    async def send(
        self,
        answers: Answers,
        service: str,
        method: str,
        url: str,
        *,
        done: Callable[[httpx.Response], bool] = lambda r: r.status_code < 500,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send until `done` (by default: anything but a 5xx), obeying Retry-After on 503s."""
        deadline = time.monotonic() + RETRY_FOR
        headers = {**self.headers, **kwargs.pop("headers", {})}
        while True:
            try:
                response = await self.clients[service].request(
                    method, url, headers=headers, **kwargs
                )
            except httpx.TransportError as exc:
                if service in self.restarting:  # its process is being replaced on purpose
                    await asyncio.sleep(0.2)
                    continue
                answers.transport_errors.append(f"{method} {url}: {exc!r}")
                raise
            answers.record(method, url, response)
            if done(response) or response.status_code != 503:
                return response
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {url} still 503 after {RETRY_FOR}s")
            await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))

    async def query(self, service: str, sql: str) -> Any:
        url = self.platform.database_urls[service].replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def dead_lettered(self) -> dict[str, int]:
        connection = await aio_pika.connect(self.rabbit.url)
        async with connection:
            channel = await connection.channel()
            counts = {}
            for name in SERVICES:  # the services that consume have a queue (and a DLQ)
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    queue = await channel.declare_queue(f"billing.events.{name}.dlq", passive=True)
                    counts[name] = queue.declaration_result.message_count or 0
                if channel.is_closed:
                    channel = await connection.channel()
            return counts

    async def drained(self) -> None:
        async def unpublished() -> dict[str, int]:
            return {
                name: int(
                    await self.query(name, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
                )
                for name in SERVICES
            }

        await eventually(unpublished, lambda counts: not any(counts.values()), timeout=30)

    def same_processes(self, pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            process = self.platform.processes[name]
            assert process.pid == pid and process.poll() is None, (
                f"{name} was restarted or died:\n{self.platform.log(name)}"
            )

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.platform.processes.items()}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def restarted(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Restarted]:
    workdir = Path(tmp_path_factory.mktemp("restart"))
    pg = PrivatePostgres()
    rabbit = PrivateRabbitMq(workdir)
    try:
        rabbit.init()

        def init_and_start_postgres() -> None:
            pg.init()
            pg.start()

        # RabbitMQ's boot dominates (Erlang start-up): initdb and both starts at once.
        await asyncio.gather(
            asyncio.to_thread(init_and_start_postgres), asyncio.to_thread(rabbit.start)
        )
        admin = await asyncpg.connect(pg.admin_url)
        try:
            for name in SERVICES:
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        platform = DirectPlatform({n: pg.url(n) for n in SERVICES}, rabbit.url, workdir)
        try:
            for name in SERVICES:
                platform.start(name)
            await platform.wait_ready(timeout=90)
            restarted = Restarted(platform, pg, rabbit)
            yield restarted
            for client in [*restarted.clients.values(), *restarted.retired]:
                await client.aclose()
        finally:
            platform.stop_all()
    finally:
        await asyncio.to_thread(rabbit.destroy)
        await asyncio.to_thread(pg.destroy)


async def _issue(r: Restarted, answers: Answers, order: dict[str, Any] = ORDER) -> str:
    """Create and finalize one invoice, retrying through 503s with the same keys."""
    created = await r.send(
        answers, "invoice", "POST", "/v1/invoices", json=order, headers={"Idempotency-Key": key()}
    )
    assert created.status_code in (200, 201), created.text
    invoice_id = str(created.json()["id"])
    finalized = await r.send(answers, "invoice", "POST", f"/v1/invoices/{invoice_id}/finalize")
    if finalized.status_code == 409:
        # A 503 answered a commit that went through after all: the retry finds it issued.
        current = await r.send(answers, "invoice", "GET", f"/v1/invoices/{invoice_id}")
        assert current.json()["status"] == "issued", current.text
    else:
        assert finalized.status_code == 200, finalized.text
    return invoice_id


async def _pay(r: Restarted, answers: Answers, invoice_id: str) -> dict[str, Any]:
    """Pay an invoice in full, exactly as a client must: one Idempotency-Key for the payment,
    sent again after a 503 (and after a 409 that only says the payment service has not seen
    the invoice yet) until the payment has an outcome."""
    payment_key = key()

    def settled(response: httpx.Response) -> bool:
        return response.status_code in (200, 201) and response.json()["status"] in (
            "succeeded",
            "failed",
        )

    deadline = time.monotonic() + RETRY_FOR
    while True:
        response = await r.send(
            answers,
            "payment",
            "POST",
            "/v1/payments",
            json={"invoice_id": invoice_id, "payment_method": "tok_visa"},
            headers={"Idempotency-Key": payment_key},
            done=settled,
        )
        if settled(response):
            body: dict[str, Any] = response.json()
            assert body["status"] == "succeeded", response.text
            return body
        assert response.status_code in (200, 201, 404, 409), response.text
        if time.monotonic() > deadline:
            raise AssertionError(f"payment for {invoice_id} not settled: {response.text}")
        await asyncio.sleep(0.3)


async def _assert_paid_exactly_once(r: Restarted, answers: Answers, invoice_ids: list[str]) -> None:
    async def invoices() -> list[dict[str, Any]]:
        found = []
        for invoice_id in invoice_ids:
            response = await r.send(answers, "invoice", "GET", f"/v1/invoices/{invoice_id}")
            assert response.status_code == 200, response.text
            found.append(response.json())
        return found

    await eventually(invoices, lambda found: all(i["status"] == "paid" for i in found), timeout=45)
    await r.drained()
    await asyncio.sleep(1.0)  # a late redelivery applied twice would show now
    for invoice in await invoices():
        assert invoice["status"] == "paid", invoice
        assert Decimal(invoice["amount_paid"]) == Decimal(invoice["total"]), invoice
        assert len(invoice["payments"]) == 1, invoice["payments"]
    ids = ", ".join(f"'{i}'" for i in invoice_ids)
    assert await r.query(
        "payment", f"SELECT count(*) FROM payment_payments WHERE invoice_id IN ({ids})"
    ) == len(invoice_ids)
    assert await r.query(
        "payment",
        f"SELECT count(*) FROM payment_payments WHERE invoice_id IN ({ids}) "
        "AND status = 'succeeded'",
    ) == len(invoice_ids)
    assert await r.query(
        "invoice", f"SELECT count(*) FROM invoice_payments WHERE invoice_id IN ({ids})"
    ) == len(invoice_ids)
    dead = await r.dead_lettered()
    assert {"invoice", "payment"} <= dead.keys() and not any(dead.values()), dead


async def test_postgres_restart_under_load_gives_503s_and_loses_nothing(
    restarted: Restarted,
) -> None:
    r = restarted
    answers = Answers()
    pids = r.pids()
    invoice_ids: list[str] = []
    stop = asyncio.Event()

    async def client() -> None:
        # Create, finalize and pay invoice after invoice until told to stop.
        while not stop.is_set():
            invoice_id = await _issue(r, answers)
            invoice_ids.append(invoice_id)
            await _pay(r, answers, invoice_id)

    async def reader() -> None:
        while not stop.is_set():
            await r.send(answers, "invoice", "GET", "/v1/invoices", done=lambda _: True)
            await r.send(answers, "tax", "GET", "/v1/tax/rules", done=lambda _: True)
            await asyncio.sleep(0.1)

    load = asyncio.gather(*(client() for _ in range(3)), reader())
    try:
        await asyncio.sleep(1.0)
        # Fast shutdown: every connection of every service is closed, new ones refused.
        await asyncio.to_thread(r.pg.stop, "fast")
        await asyncio.sleep(3.0)
        await asyncio.to_thread(r.pg.start)
        await asyncio.sleep(2.0)
    except BaseException:
        load.cancel()  # what went wrong here is the story, not the clients cut short by it
        with contextlib.suppress(BaseException):
            await load
        raise
    stop.set()
    await load

    assert not answers.bad, "\n".join(answers.bad)
    assert not answers.transport_errors, answers.transport_errors
    assert answers.unavailable > 0, f"the outage was never seen: {answers.statuses}"
    r.same_processes(pids)
    await _assert_paid_exactly_once(r, answers, invoice_ids)
    assert not answers.bad, "\n".join(answers.bad)


async def test_rabbitmq_restart_consumers_and_relay_reconnect_by_themselves(
    restarted: Restarted,
) -> None:
    r = restarted
    answers = Answers()
    invoice_ids: list[str] = []
    stop = asyncio.Event()

    async def client() -> None:
        # Events stream the whole time: created, finalized, paid, each crossing the broker.
        while not stop.is_set():
            invoice_id = await _issue(r, answers)
            invoice_ids.append(invoice_id)
            await _pay(r, answers, invoice_id)

    load = asyncio.gather(*(client() for _ in range(3)))
    try:
        await asyncio.sleep(2.0)
        # A crash: no orderly close, unacked deliveries and unconfirmed publishes in flight.
        await asyncio.to_thread(r.rabbit.stop, signal.SIGKILL)
        # A service (re)started while the broker is down must come up and serve, not exit.
        await r.restart_service("payment")
        pids = r.pids()
        await asyncio.to_thread(r.rabbit.start)
        await asyncio.sleep(2.0)
    except BaseException:
        load.cancel()  # what went wrong here is the story, not the clients cut short by it
        with contextlib.suppress(BaseException):
            await load
        raise
    stop.set()
    await load

    # Nobody restarted the services since: the relays delivered what waited in the outboxes
    # and the consumers, old and new, took it.
    r.same_processes(pids)
    await _assert_paid_exactly_once(r, answers, invoice_ids)
    assert not answers.bad, "\n".join(answers.bad)
    assert not answers.transport_errors, answers.transport_errors
