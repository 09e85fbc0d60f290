"""RabbitMqEventBus against the real RabbitMQ on this machine, one fresh vhost per test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aio_pika.abc import DeliveryMode
from loguru import logger
from sqlmodel import SQLModel

from billing_common.adapters.rabbitmq_bus import (
    ATTEMPTS_HEADER,
    CONTENT_TYPE,
    BrokerUnavailable,
    DeadLetter,
    RabbitMqEventBus,
)
from billing_common.db import DatabaseUnavailable, create_engine, session_factory
from billing_common.event_schemas import INVOICE_CREATED, InvoiceCreated
from billing_common.events import CloudEvent, new_event
from billing_common.outbox import OutboxMessage, OutboxRelay, SqlUnitOfWork
from billing_common.ports import PermanentEventError
from billing_common.tracing import bind, new_traceparent, parse_trace_id

pytestmark = pytest.mark.integration

OTHER_TYPE = "billing.test.other.v1"


def invoice_created(invoice_id: str) -> CloudEvent:
    bind(new_traceparent())
    return new_event(
        source="/billing/invoice",
        event_type=INVOICE_CREATED,
        subject=invoice_id,
        tenant="t1",
        data=InvoiceCreated(
            invoice_id=invoice_id,
            customer_id="c1",
            currency="EUR",
            total=Decimal("12.34"),
            amount_due=Decimal("12.34"),
            status="issued",
        ),
    )


class Recorder:
    """A handler that records what it got and fails as told."""

    def __init__(self, *, fail_times: int = 0, fail_ids: set[str] | None = None) -> None:
        self.calls: list[CloudEvent] = []
        self.fail_times = fail_times
        self.fail_ids = fail_ids or set()
        self.permanent = False

    async def __call__(self, event: CloudEvent) -> None:
        self.calls.append(event)
        if event.id in self.fail_ids:
            if self.permanent:
                raise PermanentEventError(f"cannot apply {event.id}")
            raise RuntimeError(f"boom on {event.id}")
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("transient failure")

    def ids(self) -> list[str]:
        return [event.id for event in self.calls]


async def dead_letters_of(bus: RabbitMqEventBus, consumer: str, count: int) -> list[DeadLetter]:
    """Wait until `consumer`'s dead-letter queue holds `count` messages; return them."""
    dlq = await bus.dead_letters(consumer)
    async with asyncio.timeout(10):
        while len(letters := await dlq.peek()) < count:
            await asyncio.sleep(0.05)
    return letters


async def queue_depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def test_round_trip_delivers_the_cloud_event(make_bus, eventually) -> None:
    bus = make_bus()
    handler = Recorder()
    bus.subscribe("invoice", INVOICE_CREATED, handler)
    await bus.start()

    event = invoice_created("inv-1")
    await bus.publish(event)

    await eventually(lambda: len(handler.calls) == 1)
    got = handler.calls[0]
    assert got == event  # id, type, source, time, data, tenant and traceparent survive
    assert got.data["total"] == "12.34"


async def test_each_consumer_gets_its_own_copy_of_what_it_subscribed(make_bus, eventually) -> None:
    bus = make_bus()
    invoice, payment, tax = Recorder(), Recorder(), Recorder()
    bus.subscribe("invoice", INVOICE_CREATED, invoice)
    bus.subscribe("payment", INVOICE_CREATED, payment)
    bus.subscribe("tax", OTHER_TYPE, tax)
    await bus.start()

    event = invoice_created("inv-2")
    await bus.publish(event)

    await eventually(lambda: len(invoice.calls) == 1 and len(payment.calls) == 1)
    await asyncio.sleep(0.2)
    assert invoice.ids() == payment.ids() == [event.id]
    assert tax.calls == []


async def _declare_the_invoice_queue(make_bus) -> None:
    """A consumer's run that declares the invoice's durable queue and goes away, so that
    what is published next waits in the queue to be read."""
    first = make_bus()
    first.subscribe("invoice", INVOICE_CREATED, Recorder())
    await first.start()
    await first.stop()


async def test_messages_are_persistent_and_wait_for_a_consumer_started_later(
    make_bus, amqp_url, eventually
) -> None:
    # The consumer's first run declares its durable queue, then it goes away.
    await _declare_the_invoice_queue(make_bus)

    publisher = make_bus()
    event = invoice_created("inv-3")
    await publisher.publish(event)

    # On the wire: persistent, CloudEvents structured mode, id and trace context.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("billing.events.invoice", passive=True)
        raw = await queue.get(no_ack=False)
        assert raw.delivery_mode == DeliveryMode.PERSISTENT
        assert raw.content_type == CONTENT_TYPE
        assert raw.message_id == event.id
        assert raw.routing_key == INVOICE_CREATED
        assert raw.headers["traceparent"] == event.traceparent
        assert json.loads(raw.body)["specversion"] == "1.0"
        await raw.nack(requeue=True)

    later = make_bus()
    handler = Recorder()
    later.subscribe("invoice", INVOICE_CREATED, handler)
    await later.start()
    await eventually(lambda: handler.ids() == [event.id])


async def test_a_stored_payload_goes_out_as_the_same_message_as_its_event(
    make_bus, amqp_url
) -> None:
    """The outbox relay publishes the payload it stored, not a re-serialised envelope: the
    message is the one `publish(event)` sends, byte for byte and property for property."""
    await _declare_the_invoice_queue(make_bus)
    publisher = make_bus()
    event = invoice_created("inv-stored")
    await publisher.publish(event)
    await publisher.publish_stored(event.to_json().decode())
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        # What the bus sent before it built the properties itself: aio-pika's Message.
        exchange = await channel.get_exchange("billing.events")
        await exchange.publish(
            aio_pika.Message(
                body=event.to_json(),
                content_type=CONTENT_TYPE,
                delivery_mode=DeliveryMode.PERSISTENT,
                message_id=event.id,
                timestamp=event.time,
                type=event.type,
                headers={"traceparent": event.traceparent},
            ),
            routing_key=INVOICE_CREATED,
        )
        queue = await channel.declare_queue("billing.events.invoice", passive=True)
        sent, stored, before = [await queue.get(no_ack=True) for _ in range(3)]
    assert stored.body == sent.body == before.body == event.to_json()
    assert stored.headers == sent.headers == {"traceparent": event.traceparent}
    for message in (sent, stored):
        assert message.delivery_mode == DeliveryMode.PERSISTENT
        assert message.content_type == CONTENT_TYPE
        assert message.message_id == event.id
        assert message.type == INVOICE_CREATED
        assert message.routing_key == INVOICE_CREATED
        assert message.priority == 0
        assert message.timestamp == event.time.replace(microsecond=0)
    assert stored.properties.marshal() == sent.properties.marshal() == before.properties.marshal()


async def test_a_stored_payload_that_is_no_envelope_is_refused(make_bus) -> None:
    bus = make_bus()
    for payload in ("not json", "[]", '{"type": "x"}', '{"id": "", "type": "x"}'):
        with pytest.raises(ValueError):
            await bus.publish_stored(payload)


async def test_transient_failures_are_retried_until_the_handler_succeeds(
    make_bus, amqp_url, eventually
) -> None:
    bus = make_bus(max_retries=3)
    handler = Recorder(fail_times=2)
    bus.subscribe("invoice", INVOICE_CREATED, handler)
    await bus.start()

    event = invoice_created("inv-4")
    await bus.publish(event)

    await eventually(lambda: len(handler.calls) == 3)
    await asyncio.sleep(0.4)  # longer than any back-off: no fourth delivery may follow
    assert handler.ids() == [event.id] * 3
    dlq = await bus.dead_letters("invoice")
    assert await dlq.peek() == []
    assert await queue_depth(amqp_url, "billing.events.invoice") == 0


async def test_a_poison_message_is_dead_lettered_without_blocking_the_queue(
    make_bus, eventually
) -> None:
    # prefetch=1 and a long back-off: if a retry waited inside the consumer, the good event
    # published right after the poison one would wait for it.
    bus = make_bus(prefetch=1, max_retries=2, retry_delay_seconds=0.5)
    poison, good = invoice_created("inv-poison"), invoice_created("inv-good")
    handler = Recorder(fail_ids={poison.id})
    bus.subscribe("invoice", INVOICE_CREATED, handler)
    await bus.start()

    await bus.publish(poison)
    await bus.publish(good)
    published = time.monotonic()

    await eventually(lambda: good.id in handler.ids())
    assert time.monotonic() - published < 0.4, "the good event waited for the poison one"
    letters = await dead_letters_of(bus, "invoice", 1)
    assert handler.ids() == [poison.id, good.id, poison.id, poison.id]
    assert [letter.message_id for letter in letters] == [poison.id]
    assert letters[0].attempts == 3
    assert letters[0].error_type == "RuntimeError"
    assert letters[0].error == f"boom on {poison.id}"
    assert letters[0].event == poison


async def test_a_permanent_error_goes_straight_to_the_dead_letter_queue_and_is_logged(
    make_bus, eventually
) -> None:
    bus = make_bus(max_retries=5)
    event = invoice_created("inv-5")
    handler = Recorder(fail_ids={event.id})
    handler.permanent = True
    bus.subscribe("invoice", INVOICE_CREATED, handler)
    lines: list[Any] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        await bus.start()
        await bus.publish(event)
        found = await dead_letters_of(bus, "invoice", 1)
    finally:
        logger.remove(sink)

    assert handler.ids() == [event.id]
    assert found[0].attempts == 1
    assert found[0].error_type == "PermanentEventError"
    dead_lettered = [line for line in lines if "dead-lettered" in line.record["message"]]
    assert len(dead_lettered) == 1
    assert event.id in dead_lettered[0].record["message"]
    assert dead_lettered[0].record["extra"]["trace_id"] == parse_trace_id(event.traceparent)


async def test_an_undecodable_message_is_dead_lettered_and_the_next_one_handled(
    make_bus, amqp_url, eventually
) -> None:
    bus = make_bus()
    handler = Recorder()
    bus.subscribe("invoice", INVOICE_CREATED, handler)
    await bus.start()

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("billing.events")
        await exchange.publish(
            aio_pika.Message(b"{not json", message_id="garbage-1"), routing_key=INVOICE_CREATED
        )
    good = invoice_created("inv-6")
    await bus.publish(good)

    await eventually(lambda: handler.ids() == [good.id])
    letters = await dead_letters_of(bus, "invoice", 1)
    assert letters[0].message_id == "garbage-1"
    assert letters[0].error_type == "ValidationError"
    assert letters[0].event is None


async def test_publish_to_a_closed_port_fails_fast_and_the_outbox_keeps_the_row(
    tmp_path, make_bus, eventually
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = RabbitMqEventBus(f"amqp://guest:guest@127.0.0.1:{closed_port}/", max_retries=1)

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await down.publish(invoice_created("inv-7"))
    assert time.monotonic() - started < 3

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=[OutboxMessage.__table__])
    try:
        async with SqlUnitOfWork(session_factory(engine)) as uow:
            event = invoice_created("inv-8")
            uow.emit(event, aggregate="inv-8")
            await uow.commit()

        relay = OutboxRelay(engine, down)
        with pytest.raises(BrokerUnavailable):
            await relay.publish_pending()
        assert await relay.pending_count() == 1

        # Once a broker is reachable, the same row goes out.
        up = make_bus()
        handler = Recorder()
        up.subscribe("invoice", INVOICE_CREATED, handler)
        await up.start()
        assert await OutboxRelay(engine, up).publish_pending() == 1
        await eventually(lambda: handler.ids() == [event.id])
    finally:
        await down.stop()
        await engine.dispose()


async def test_the_bus_reconnects_after_losing_the_broker_connection(
    make_bus, vhost, eventually
) -> None:
    bus = make_bus(publish_timeout_seconds=1.0)
    handler = Recorder()
    bus.subscribe("invoice", INVOICE_CREATED, handler)
    await bus.start()
    await bus.publish(invoice_created("inv-9"))
    await eventually(lambda: len(handler.calls) == 1)

    subprocess.run(
        ["rabbitmqctl", "close_all_connections", "-p", vhost, "test: broker went away"],
        check=True,
        capture_output=True,
    )

    # Every publish returns or raises promptly; once reconnected, one gets through and the
    # consumer (restored by the robust connection) receives it.
    delivered: CloudEvent | None = None
    async with asyncio.timeout(15):
        while delivered is None:
            event = invoice_created("inv-10")
            started = time.monotonic()
            try:
                await bus.publish(event)
                delivered = event
            except BrokerUnavailable:
                await asyncio.sleep(0.1)
            assert time.monotonic() - started < 1.5
    await eventually(lambda: delivered.id in handler.ids())


async def test_a_crash_before_the_ack_means_the_event_is_delivered_again(
    make_bus, eventually
) -> None:
    done: list[str] = []
    hang = asyncio.Event()

    async def works_then_crashes(event: CloudEvent) -> None:
        done.append(event.id)  # the effect happened (an idempotent handler's inbox saw it)
        await hang.wait()  # ...and the process dies before acknowledging

    crashing = make_bus(stop_timeout_seconds=0.1)
    crashing.subscribe("invoice", INVOICE_CREATED, works_then_crashes)
    await crashing.start()
    event = invoice_created("inv-11")
    await crashing.publish(event)
    await eventually(lambda: done == [event.id])
    await crashing.stop()  # gives up on the hung handler: no ack is sent

    restarted = make_bus()
    handler = Recorder()
    restarted.subscribe("invoice", INVOICE_CREATED, handler)
    await restarted.start()
    await eventually(lambda: handler.ids() == [event.id])


async def test_a_handler_that_fails_after_its_work_gets_the_event_again(
    make_bus, eventually
) -> None:
    effects: set[str] = set()
    deliveries: list[str] = []

    async def idempotent_but_flaky(event: CloudEvent) -> None:
        deliveries.append(event.id)
        first_time = event.id not in effects
        effects.add(event.id)  # the effect is recorded once, whatever happens next
        if first_time:
            raise ConnectionResetError("lost the database right after the commit")

    bus = make_bus()
    bus.subscribe("invoice", INVOICE_CREATED, idempotent_but_flaky)
    await bus.start()
    event = invoice_created("inv-12")
    await bus.publish(event)

    await eventually(lambda: deliveries == [event.id, event.id])
    assert effects == {event.id}


async def test_stop_lets_the_handler_in_flight_finish_and_ack(
    make_bus, amqp_url, eventually
) -> None:
    started, finished = asyncio.Event(), []

    async def slow(event: CloudEvent) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(event.id)

    bus = make_bus(stop_timeout_seconds=5)
    bus.subscribe("invoice", INVOICE_CREATED, slow)
    await bus.start()
    event = invoice_created("inv-13")
    await bus.publish(event)
    await asyncio.wait_for(started.wait(), timeout=10)
    await bus.stop()

    assert finished == [event.id]
    assert await queue_depth(amqp_url, "billing.events.invoice") == 0


async def test_retry_bookkeeping_headers_and_back_off(make_bus, amqp_url) -> None:
    bus = make_bus(max_retries=4, retry_delay_seconds=0.5, max_retry_delay_seconds=2.0)
    assert [bus.retry_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]

    bus.subscribe("invoice", INVOICE_CREATED, Recorder(fail_times=1))
    await bus.start()
    await bus.publish(invoice_created("inv-14"))

    # After the first failure the copy waits in the first retry queue with its attempt count.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        retry = await channel.declare_queue("billing.events.invoice.retry.1", passive=True)
        parked = None
        async with asyncio.timeout(5):
            while parked is None:
                parked = await retry.get(no_ack=False, fail=False)
        assert parked.headers[ATTEMPTS_HEADER] == 1
        assert parked.expiration == 0.5
        await parked.nack(requeue=True)


async def test_subscribing_after_start_is_refused(make_bus) -> None:
    bus = make_bus()
    await bus.start()
    with pytest.raises(RuntimeError):
        bus.subscribe("invoice", INVOICE_CREATED, Recorder())


class _LateBroker:
    """A port that refuses connections until `open()`, then forwards them to the broker:
    RabbitMQ that is down when the service starts and comes up afterwards."""

    def __init__(self, amqp_url: str) -> None:
        parts = urlsplit(amqp_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = urlunsplit(parts._replace(netloc=f"guest:guest@127.0.0.1:{self.port}"))
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_bus_started_while_the_broker_is_down_connects_and_consumes_later(
    make_bus, amqp_url, eventually
) -> None:
    broker = _LateBroker(amqp_url)
    bus = make_bus(amqp_url=broker.url, reconnect_interval_seconds=0.2)
    handler = Recorder()
    bus.subscribe("invoice", INVOICE_CREATED, handler)
    try:
        await bus.start()  # returns: the service serves without the broker
        with pytest.raises(BrokerUnavailable):  # and its outbox keeps what it would publish
            await bus.publish(invoice_created("inv-20"))

        await broker.open()
        delivered = invoice_created("inv-21")

        async def published() -> bool:
            try:
                await bus.publish(delivered)
            except BrokerUnavailable:
                return False
            return True

        async with asyncio.timeout(15):
            while not await published():
                await asyncio.sleep(0.1)
        await eventually(lambda: handler.ids() == [delivered.id])
    finally:
        await bus.stop()
        await broker.close()


async def test_a_database_outage_spends_no_retry_and_dead_letters_nothing(
    make_bus, amqp_url, eventually
) -> None:
    # One retry allowed; the database is down for five deliveries, then back.
    bus = make_bus(max_retries=1, retry_delay_seconds=0.05)
    outage = {"left": 5}
    calls: list[str] = []

    async def handler(event: CloudEvent) -> None:
        calls.append(event.id)
        if outage["left"] > 0:
            outage["left"] -= 1
            raise DatabaseUnavailable("PostgreSQL is unavailable: connection refused")

    bus.subscribe("invoice", INVOICE_CREATED, handler)
    await bus.start()
    event = invoice_created("inv-22")
    await bus.publish(event)

    await eventually(lambda: len(calls) == 6)
    await asyncio.sleep(0.3)  # nothing more may follow the successful delivery
    assert calls == [event.id] * 6
    assert await (await bus.dead_letters("invoice")).peek() == []
    assert await queue_depth(amqp_url, "billing.events.invoice") == 0


async def test_events_about_one_subject_are_handled_in_order_others_meanwhile(
    make_bus, eventually
) -> None:
    # The relay publishes an invoice's events in order; handled concurrently, a slow first
    # one would finish after the second (a `created` overwriting a `finalized`).
    bus = make_bus(prefetch=8)
    first, second = invoice_created("inv-30"), invoice_created("inv-30")
    other = invoice_created("inv-31")
    finished: list[str] = []

    async def handler(event: CloudEvent) -> None:
        if event.id == first.id:
            await asyncio.sleep(0.5)
        finished.append(event.id)

    bus.subscribe("payment", INVOICE_CREATED, handler)
    await bus.start()
    for event in (first, second, other):
        await bus.publish(event)

    await eventually(lambda: len(finished) == 3)
    # inv-31 did not wait for inv-30; inv-30's second event waited for its first.
    assert finished == [other.id, first.id, second.id]


class StallingProxy:
    """A TCP proxy in front of RabbitMQ that can stop passing on what one client connection
    sends, as the broker's flow control does to a publishing connection (it stops reading
    that connection's socket: its publishes, and any acks sent on it, wait)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.connections: list[asyncio.Event] = []  # set: pass on; cleared: stall
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        flowing = asyncio.Event()
        flowing.set()
        self.connections.append(flowing)
        for task in (
            self._pipe(reader, upstream_writer, flowing),
            self._pipe(upstream_reader, writer, None),
        ):
            running = asyncio.create_task(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if flowing is not None:
                    await flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    def resume(self) -> None:
        for flowing in self.connections:
            flowing.set()

    async def close(self) -> None:
        self.resume()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


async def test_consumers_keep_receiving_while_the_publishing_connection_is_throttled(
    make_bus, amqp_url, eventually
) -> None:
    # One connection for both would carry the consumer's acks on the throttled connection:
    # with prefetch 1, the second event would never be delivered while the relay waits.
    parts = urlsplit(amqp_url)
    proxy = StallingProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    port = await proxy.start()
    credentials = f"{parts.username}:{parts.password}@" if parts.username else ""
    proxied = urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))
    bus = make_bus(amqp_url=proxied, prefetch=1)
    try:
        handler = Recorder()
        bus.subscribe("invoice", INVOICE_CREATED, handler)
        await bus.start()
        proxy.connections[0].clear()  # the bus's first connection: the one it publishes on

        events = [invoice_created(f"inv-4{n}") for n in range(3)]
        connection = await aio_pika.connect(amqp_url)  # another service, not throttled
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("billing.events")
            for event in events:
                await exchange.publish(
                    aio_pika.Message(event.to_json(), message_id=event.id, type=event.type),
                    routing_key=event.type,
                )
        await eventually(lambda: handler.ids() == [event.id for event in events])
    finally:
        proxy.resume()
        await bus.stop()  # through the proxy, before it goes
        await proxy.close()


def other_event(subject: str) -> CloudEvent:
    return CloudEvent(
        id=f"other-{subject}", source="/billing/test", type=OTHER_TYPE, subject=subject
    )


async def test_a_lane_is_delivered_while_the_consumers_own_queue_is_stuck(
    make_bus, eventually
) -> None:
    # One delivery in flight per queue: in one queue, the lane's event would wait for the
    # stuck one (the invoice's payment events behind the creations' peer events).
    bus = make_bus(prefetch=1)
    release = asyncio.Event()
    stuck: list[str] = []

    async def blocking(event: CloudEvent) -> None:
        stuck.append(event.id)
        await release.wait()

    lane = Recorder()
    bus.subscribe("invoice", INVOICE_CREATED, blocking)
    bus.subscribe("invoice", OTHER_TYPE, lane, lane="settlement")
    await bus.start()
    first, behind = invoice_created("inv-l1"), invoice_created("inv-l2")
    await bus.publish(first)
    await bus.publish(behind)
    await eventually(lambda: stuck == [first.id])
    event = other_event("pay-1")
    await bus.publish(event)
    await eventually(lambda: lane.ids() == [event.id])
    assert stuck == [first.id]  # the consumer's own queue is still stuck meanwhile
    release.set()
    await eventually(lambda: stuck == [first.id, behind.id])


async def test_a_type_moved_into_a_lane_is_delivered_once_and_what_waited_is_handled(
    make_bus, amqp_url, eventually
) -> None:
    before = make_bus()  # an earlier version: the type in the consumer's own queue
    before.subscribe("invoice", INVOICE_CREATED, Recorder())
    before.subscribe("invoice", OTHER_TYPE, Recorder())
    await before.start()
    await before.stop()
    waiting = other_event("pay-2")
    await make_bus().publish(waiting)  # queued in billing.events.invoice while nobody runs

    after = make_bus()
    handler = Recorder()
    after.subscribe("invoice", INVOICE_CREATED, Recorder())
    after.subscribe("invoice", OTHER_TYPE, handler, lane="settlement")
    await after.start()
    await eventually(lambda: handler.ids() == [waiting.id])
    fresh = other_event("pay-3")
    await after.publish(fresh)
    await eventually(lambda: handler.ids() == [waiting.id, fresh.id])
    await asyncio.sleep(0.3)  # a second copy through a binding left behind would show now
    assert handler.ids() == [waiting.id, fresh.id]
    assert await queue_depth(amqp_url, "billing.events.invoice") == 0
    assert await queue_depth(amqp_url, "billing.events.invoice.settlement") == 0


async def test_a_lane_whose_consumer_has_no_other_type_unbinds_its_old_queue(
    make_bus, amqp_url, eventually
) -> None:
    before = make_bus()
    before.subscribe("invoice", OTHER_TYPE, Recorder())
    await before.start()
    await before.stop()

    after = make_bus()
    handler = Recorder()
    after.subscribe("invoice", OTHER_TYPE, handler, lane="settlement")
    await after.start()
    event = other_event("pay-4")
    await after.publish(event)
    await eventually(lambda: handler.ids() == [event.id])
    await asyncio.sleep(0.3)
    assert await queue_depth(amqp_url, "billing.events.invoice") == 0  # no longer bound
    assert handler.ids() == [event.id]


async def test_a_lanes_failures_go_to_the_lanes_own_dead_letter_queue(
    make_bus, amqp_url, eventually
) -> None:
    bus = make_bus(max_retries=0)
    event = other_event("pay-5")
    handler = Recorder(fail_ids={event.id})
    handler.permanent = True
    bus.subscribe("invoice", INVOICE_CREATED, Recorder())
    bus.subscribe("invoice", OTHER_TYPE, handler, lane="settlement")
    await bus.start()
    await bus.publish(event)
    letters = await dead_letters_of(bus, "invoice.settlement", 1)
    assert [letter.message_id for letter in letters] == [event.id]
    assert await queue_depth(amqp_url, "billing.events.invoice.dlq") == 0


def test_a_lane_is_one_word(make_bus) -> None:
    bus = make_bus()
    for bad in ("", "a.b", "retry", "dlq"):
        with pytest.raises(ValueError, match="lane"):
            bus.subscribe("invoice", OTHER_TYPE, Recorder(), lane=bad)
