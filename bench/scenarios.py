"""The requests the benchmark sends, and the measurements that are not a load generator's:
event settlement, the broker-hop floor under it, and the PDF render in-process."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import aio_pika
import asyncpg
import httpx

from bench.infra import BenchError, plain_url
from bench.platform import Platform
from billing_launcher import seed_flows

# The seed's invoice flow (billing_launcher.seed_flows): Germany, two categories, coupon
# WELCOME10, so an invoice costs a discount quote, a tax calculation and a redemption.
ORDER: dict[str, Any] = seed_flows.seed_order("cust-bench")

TAX_CALCULATION: dict[str, Any] = {
    "currency": "EUR",
    "jurisdiction": {"country": "DE", "region": None},
    "customer": {"id": "cust-bench", "tax_status": "standard", "tax_id": None},
    "lines": [
        {"id": "1", "unit_price": "100.00", "quantity": "2", "category": "standard"},
        {"id": "2", "unit_price": "20.00", "quantity": "1", "category": "books"},
    ],
}

DISCOUNT_QUOTE: dict[str, Any] = {
    "customer": {"id": "cust-bench", "type": "regular"},
    "currency": "EUR",
    "amount": "220.00",
    "coupon_codes": ["WELCOME10"],
}


def body(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


async def check_requests(platform: Platform, headers: dict[str, str]) -> None:
    """Each benchmarked request once, checked, before any load: a 4xx would otherwise only
    show up as wrk's error count."""
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        seed_flows.expect(
            await http.post(f"{platform.url('tax')}/v1/tax/calculations", json=TAX_CALCULATION),
            201,
        )
        quote = seed_flows.expect(
            await http.post(f"{platform.url('discount')}/v1/discounts/quotes", json=DISCOUNT_QUOTE),
            200,
        )
        if not quote.get("applied"):
            raise BenchError(f"the discount quote applied nothing: {quote}")


async def issued_invoices(platform: Platform, headers: dict[str, str], count: int) -> list[str]:
    """Create and finalize `count` invoices and wait until the payment service may take them."""
    ids: list[str] = []
    async with (
        httpx.AsyncClient(base_url=platform.url("invoice"), timeout=30) as invoice,
        httpx.AsyncClient(base_url=platform.url("payment"), timeout=30) as payment,
    ):
        for _ in range(count):
            created = await seed_flows.create_invoice(
                invoice, headers, ORDER, seed_flows.key("bench-setup")
            )
            await seed_flows.finalize(invoice, headers, created["id"])
            ids.append(str(created["id"]))
        deadline = time.monotonic() + 60
        for invoice_id in ids:
            await seed_flows.wait_payable(
                payment, headers, invoice_id, timeout=max(0.0, deadline - time.monotonic())
            )
    return ids


async def settlement(
    platform: Platform,
    headers: dict[str, str],
    invoice_ids: list[str],
    *,
    spread_seconds: float,
    poll_seconds: float = 0.001,
) -> list[float]:
    """Pay each invoice in full, spread over `spread_seconds` (while other load runs), and
    time from the payment POST answering `succeeded` to the invoice reading `paid`.

    "Reading paid" is watched in the invoice service's database with a primary-key SELECT
    every millisecond: the row is what GET /v1/invoices/{id} answers from, it is visible the
    instant the event's transaction commits, and polling the API that often would add load to
    the very core being measured. Milliseconds; one per invoice. One payment at a time: the
    next is posted `spread_seconds / len(invoice_ids)` after the one before was posted, or
    as soon as it settled if it took longer."""
    gap = spread_seconds / max(1, len(invoice_ids))
    samples: list[float] = []
    conn = await asyncpg.connect(plain_url(platform.database_urls["invoice"]))
    try:
        async with httpx.AsyncClient(
            base_url=platform.url("payment"), timeout=30
        ) as payment_client:
            for invoice_id in invoice_ids:
                began = time.perf_counter()
                answer = await seed_flows.pay(
                    payment_client,
                    headers,
                    invoice_id,
                    None,
                    "tok_visa",
                    seed_flows.key("bench-pay"),
                )
                payment = seed_flows.expect(answer, 201)
                if payment.get("status") != "succeeded":
                    raise BenchError(f"the payment did not succeed: {payment}")
                succeeded = time.perf_counter()
                deadline = succeeded + 30
                while (
                    await conn.fetchval(
                        "SELECT status FROM invoice_invoices WHERE id = $1", invoice_id
                    )
                ) != "paid":
                    if time.perf_counter() > deadline:
                        raise BenchError(f"invoice {invoice_id} was not paid within 30 s")
                    await asyncio.sleep(poll_seconds)
                samples.append((time.perf_counter() - succeeded) * 1000)
                rest = gap - (time.perf_counter() - began)
                if rest > 0:
                    await asyncio.sleep(rest)
    finally:
        await conn.close()
    return samples


async def broker_hop(amqp_url: str, count: int) -> list[float]:
    """The settlement floor: one persistent, confirmed publish to RabbitMQ, consumed and acked
    by a subscriber — the one broker hop every settlement needs. Milliseconds."""
    connection = await aio_pika.connect(amqp_url)
    samples: list[float] = []
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            "bench.floor", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queue = await channel.declare_queue("bench.floor", durable=True, auto_delete=True)
        await queue.bind(exchange, routing_key="bench.#")
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            arrived.put_nowait(time.perf_counter())

        consumer_channel = await connection.channel()
        consumer_queue = await consumer_channel.get_queue("bench.floor")
        tag = await consumer_queue.consume(on_message)
        payload = body({"id": str(uuid.uuid4()), "type": "bench.floor", "data": ORDER})
        for _ in range(count):
            sent = time.perf_counter()
            await exchange.publish(
                aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="bench.floor",
            )
            received = await asyncio.wait_for(arrived.get(), timeout=10)
            samples.append((received - sent) * 1000)
        await consumer_queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
    return samples


async def invoice_html(platform: Platform, headers: dict[str, str], invoice_id: str) -> str:
    async with httpx.AsyncClient(timeout=60, headers=headers) as http:
        answer = await http.get(f"{platform.url('invoice')}/v1/invoices/{invoice_id}/html")
        seed_flows.expect(answer, 200)
        pdf = await http.get(f"{platform.url('invoice')}/v1/invoices/{invoice_id}/pdf")
        seed_flows.expect(pdf, 200)  # renders once and fills the cache for the download benchmark
        if not pdf.content.startswith(b"%PDF"):
            raise BenchError("the PDF endpoint did not answer a PDF")
        return answer.text


def render_pdf(html: str, count: int) -> tuple[list[float], int]:
    """The invoice service's own renderer as the service runs it, warm: a worker process
    with the stylesheet parsed once, given the document without its embedded stylesheet.
    (milliseconds per render, pages of the document)."""
    from weasyprint import HTML

    from invoice_service.adapters.html import JinjaInvoiceHtml, Seller
    from invoice_service.adapters.pdf import ProcessPoolRenderer

    pages = len(HTML(string=html).render().pages)
    stylesheet = JinjaInvoiceHtml(Seller("bench")).stylesheet  # the service's, a static file
    document = re.sub(r"<style>.*?</style>\s*", "", html, count=1, flags=re.S)
    renderer = ProcessPoolRenderer(stylesheet, workers=1)
    try:
        for _ in range(3):  # warm: the worker's start, fonts, Pango
            renderer.render(document)
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            pdf = renderer.render(document)
            samples.append((time.perf_counter() - started) * 1000)
            if not pdf.startswith(b"%PDF"):
                raise BenchError("the renderer did not produce a PDF")
    finally:
        renderer.close()
    return samples, pages
