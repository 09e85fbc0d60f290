"""The dead-letter CLI (billing_common.dead_letters) against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from billing_common.adapters.rabbitmq_bus import RabbitMqEventBus
from billing_common.dead_letters import run
from billing_common.events import CloudEvent
from billing_common.ports import PermanentEventError

pytestmark = pytest.mark.integration

EVENT_TYPE = "billing.invoice.created.v1"
QUEUE = "billing.events.invoice"


class Handler:
    """Refuses events whose id is in `broken` for good; records the others."""

    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.handled: list[str] = []
        self.calls = 0

    async def __call__(self, event: CloudEvent) -> None:
        self.calls += 1
        if event.id in self.broken:
            raise PermanentEventError(f"unknown customer in {event.id}")
        self.handled.append(event.id)


async def cli(amqp_url: str, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await run(["--amqp-url", amqp_url, "--queue", QUEUE, *args], out)
    return code, out.getvalue()


@pytest.fixture
async def dead_lettered(make_bus, amqp_url):  # type: ignore[no-untyped-def]
    """A running invoice consumer with two events in its dead-letter queue."""
    bus: RabbitMqEventBus = make_bus(max_retries=1)
    handler = Handler()
    bus.subscribe("invoice", EVENT_TYPE, handler)
    await bus.start()
    events = [
        CloudEvent(source="/billing/invoice", type=EVENT_TYPE, subject=f"inv-{n}", data={"n": n})
        for n in (1, 2)
    ]
    handler.broken.update(event.id for event in events)
    for event in events:
        await bus.publish(event)
    dlq = await bus.dead_letters("invoice")
    async with asyncio.timeout(10):
        while len(await dlq.peek()) < 2:
            await asyncio.sleep(0.05)
    return bus, handler, events


async def test_list_shows_dead_letters_without_removing_them(amqp_url, dead_lettered) -> None:
    _, _, events = dead_lettered

    code, first = await cli(amqp_url, "list")
    code_again, second = await cli(amqp_url, "list")

    assert code == code_again == 0
    assert first == second
    lines = first.strip().splitlines()
    assert [line.split("\t")[0] for line in lines[:2]] == [event.id for event in events]
    assert "attempts=1" in lines[0]
    assert f"PermanentEventError: unknown customer in {events[0].id}" in lines[0]
    assert lines[-1] == f"2 dead letter(s) shown from {QUEUE}.dlq"

    code, as_json = await cli(amqp_url, "list", "--json", "--limit", "1")
    assert code == 0
    [record] = [json.loads(line) for line in as_json.splitlines()]
    assert record["id"] == events[0].id
    assert record["type"] == EVENT_TYPE
    assert record["subject"] == "inv-1"
    assert record["error_type"] == "PermanentEventError"


async def test_replay_by_id_moves_one_back_to_its_consumer(amqp_url, dead_lettered) -> None:
    bus, handler, (first, second) = dead_lettered
    handler.broken.discard(first.id)  # the bug was fixed

    code, out = await cli(amqp_url, "replay", "--id", first.id)

    assert code == 0
    assert out == f"replayed 1 dead letter(s) from {QUEUE}.dlq to {QUEUE}\n"
    async with asyncio.timeout(10):
        while handler.handled != [first.id]:
            await asyncio.sleep(0.02)
    remaining = await (await bus.dead_letters("invoice")).peek()
    assert [letter.message_id for letter in remaining] == [second.id]

    code, out = await cli(amqp_url, "replay", "--id", "no-such-id")
    assert code == 1
    assert out.startswith("replayed 0 dead letter(s)")


async def test_replay_all_resets_the_retry_budget(amqp_url, dead_lettered) -> None:
    bus, handler, events = dead_lettered
    calls_before = handler.calls
    handler.broken.clear()
    handler.broken.add(events[1].id)  # still broken: must come back after a full new budget

    code, out = await cli(amqp_url, "replay", "--all")

    assert code == 0
    assert out.startswith("replayed 2 dead letter(s)")
    dlq = await bus.dead_letters("invoice")
    async with asyncio.timeout(10):
        while events[0].id not in handler.handled or not await dlq.peek():
            await asyncio.sleep(0.05)
    [again] = await dlq.peek()
    assert again.message_id == events[1].id
    assert again.attempts == 1  # counted afresh, not added to the first run's attempts
    assert handler.calls == calls_before + 2


async def test_purge_by_id_and_all(amqp_url, dead_lettered) -> None:
    bus, _, (first, second) = dead_lettered

    code, out = await cli(amqp_url, "purge", "--id", first.id)
    assert (code, out) == (0, f"purged 1 dead letter(s) from {QUEUE}.dlq\n")
    remaining = await (await bus.dead_letters("invoice")).peek()
    assert [letter.message_id for letter in remaining] == [second.id]

    code, out = await cli(amqp_url, "purge")
    assert (code, out) == (0, f"purged 1 dead letter(s) from {QUEUE}.dlq\n")
    assert await (await bus.dead_letters("invoice")).peek() == []


async def test_an_unknown_queue_is_an_error_not_a_new_queue(amqp_url) -> None:
    out = io.StringIO()
    code = await run(["--amqp-url", amqp_url, "--queue", "billing.events.nope", "list"], out)
    assert code == 2
    assert out.getvalue() == "no queue named billing.events.nope.dlq\n"


async def test_an_unreachable_broker_is_reported(unused_tcp_port) -> None:
    out = io.StringIO()
    url = f"amqp://guest:guest@127.0.0.1:{unused_tcp_port}/"
    code = await run(["--amqp-url", url, "--queue", QUEUE, "list"], out)
    assert code == 2
    assert out.getvalue().startswith("cannot connect to RabbitMQ")


def test_replay_needs_all_or_an_id(capsys) -> None:
    from billing_common.dead_letters import main

    with pytest.raises(SystemExit) as exited:
        main(["--queue", QUEUE, "replay"])
    assert exited.value.code == 2
    assert "one of the arguments --all --id is required" in capsys.readouterr().err


# -- the dapr runtime's dead letters: dlq-<app-id>-<topic>, as Dapr's RabbitMQ component keeps them


async def _dapr_dead_letters(amqp_url: str, events: list[CloudEvent]) -> None:
    """Declare what pubsub.rabbitmq declares for app `invoice` on EVENT_TYPE (enableDeadLetter)
    and let RabbitMQ dead-letter `events` into it the way the component's nack does."""
    import aio_pika

    queue_name = f"invoice-{EVENT_TYPE}"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        dlx = await channel.declare_exchange(f"dlx-{queue_name}", "fanout", durable=True)
        dlq = await channel.declare_queue(
            f"dlq-{queue_name}", durable=True, arguments={"x-queue-mode": "lazy"}
        )
        await dlq.bind(dlx, routing_key="")
        queue = await channel.declare_queue(
            queue_name,
            durable=True,
            arguments={"x-dead-letter-exchange": dlx.name, "x-queue-type": "classic"},
        )
        for event in events:
            await channel.default_exchange.publish(
                aio_pika.Message(event.to_json(), content_type="text/plain"), routing_key=queue_name
            )
        for _ in events:
            message = await queue.get(timeout=5)
            await message.nack(requeue=False)  # requeueInFailure: false
        async with asyncio.timeout(10):
            while (
                await channel.declare_queue(dlq.name, passive=True)
            ).declaration_result.message_count < len(events):
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def test_dapr_dead_letters_list_replay_one_and_purge(amqp_url: str) -> None:
    events = [
        CloudEvent(source="/billing/payment", type=EVENT_TYPE, subject=f"inv-{n}", data={"n": n})
        for n in (1, 2)
    ]
    await _dapr_dead_letters(amqp_url, events)

    async def dapr_cli(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        code = await run(["--amqp-url", amqp_url, "--dapr-app", "invoice", *args], out)
        return code, out.getvalue()

    code, out = await dapr_cli("list", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [item["id"] for item in listed] == [e.id for e in events]
    assert all(item["attempts"] == 1 and "rejected" in item["error"] for item in listed)

    code, out = await dapr_cli("--topic", EVENT_TYPE, "replay", "--id", events[0].id)
    assert code == 0 and f"replayed 1 dead letter(s) from dlq-invoice-{EVENT_TYPE}" in out
    code, out = await dapr_cli("purge")
    assert code == 0 and "purged 1 dead letter(s)" in out
    code, out = await dapr_cli("list")
    assert "0 dead letter(s) shown" in out
    code, out = await dapr_cli("--topic", "billing.payment.received.v1", "list")
    assert code == 2 and "no dead-letter queue dlq-invoice-<topic>" in out
