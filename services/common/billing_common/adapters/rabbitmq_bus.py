"""Direct-runtime event bus: RabbitMQ through aio-pika, at-least-once, never blocking on poison.

Topology (all durable, declared by `start`; the exchange also by the first `publish`):

- exchange `<exchange>` (topic); an event is published with routing key = its type, as a
  persistent message whose body is the CloudEvent in structured JSON mode.
- queue `<exchange>.<consumer>` per consuming service, bound to the types it subscribed;
  and `<exchange>.<consumer>.<lane>` for the types it subscribed in a lane (below).
- queues `<queue>.retry.<n>`, one per retry: a failed delivery is parked there with a
  per-message TTL (the back-off for that attempt); on expiry RabbitMQ dead-letters it straight
  back to `<queue>` (default exchange), not to the topic exchange, so other consumers do not
  see it twice. One queue per attempt because RabbitMQ only expires messages at the head of a
  queue: in a single retry queue a long back-off would hold up every shorter one behind it.
- queue `<queue>.dlq`: deliveries that failed `max_retries + 1` times, raised
  PermanentEventError, could not be decoded or have no handler; headers say why. A handler
  failing because the database is unavailable spends no retry: its delivery goes back to the
  queue after `retry_delay_seconds`, for as long as the outage lasts.

Publishing waits for the broker's confirm and fails fast (never hangs) while the broker is
unreachable, so the outbox relay keeps the row. Consumers ack only after the handler returned,
i.e. after its transaction committed; a crash before the ack makes RabbitMQ deliver again.

Publishing and consuming use two connections. RabbitMQ's flow control throttles a connection
that publishes faster than its queues persist by no longer reading from its socket, and that
would hold back the acks of consumers on the same connection too: with the prefetch window
full of unacked deliveries, nothing more is delivered, and a service whose relay was being
throttled (a burst of invoice creations) stopped receiving (payment events waited seconds).

The broker being down is never a reason for a service not to run: `start` does not wait for
it. A lost connection is restored by aio-pika's robust connection (channels, QoS, topology and
consumers included); a broker that is unreachable when the service starts is connected to in
the background, and the consumers start then.

Lanes: a consumer may subscribe some types in a named lane, which gets its own queue (with
its own retry queues and DLQ), channel and prefetch window. A delivery cannot overtake the
ones before it in its queue, nor a full prefetch window: in one queue, an invoice's payment
events waited behind every peer event the invoice creations under way had queued. Only
events whose relative order does not matter may go in different lanes (events of different
publishers: the broker never ordered those anyway). At start the lane's types are unbound
from the consumer's own queue, so a service that moved them does not get them twice; what
was queued there before still finds its handler (handlers are the consumer's, not a lane's).

Modules: this one supervises the connection and publishes; `rabbitmq_bus_topology` names
queues and headers and declares a consumer's queues; `rabbitmq_bus_delivery` handles
deliveries (retry, dead-lettering); `rabbitmq_bus_dead_letters` inspects and recovers DLQs.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from functools import partial

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
    ExchangeType,
    HeadersType,
)
from aiormq import spec
from loguru import logger

from billing_common.adapters.rabbitmq_bus_dead_letters import DeadLetter, DeadLetterQueue
from billing_common.adapters.rabbitmq_bus_delivery import Deliveries
from billing_common.adapters.rabbitmq_bus_topology import (
    ATTEMPTS_HEADER,
    BROKER_DOWN,
    CONTENT_TYPE,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    LAST_ERROR_HEADER,
    ORIGINAL_QUEUE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    BrokerUnavailable,
    dead_letter_queue_name,
    declare_consumer_topology,
    lane_consumer,
    queue_name,
    retry_queue_name,
)
from billing_common.events import CloudEvent, stored_envelope
from billing_common.ports import EventHandler

__all__ = [  # what the bus's users import from here, wherever it is defined
    "ATTEMPTS_HEADER",
    "CONTENT_TYPE",
    "DEAD_LETTERED_AT_HEADER",
    "ERROR_HEADER",
    "ERROR_TYPE_HEADER",
    "LAST_ERROR_HEADER",
    "ORIGINAL_QUEUE_HEADER",
    "ORIGINAL_ROUTING_KEY_HEADER",
    "BrokerUnavailable",
    "DeadLetter",
    "DeadLetterQueue",
    "RabbitMqEventBus",
    "dead_letter_queue_name",
    "lane_consumer",
    "queue_name",
    "retry_queue_name",
]


class RabbitMqEventBus:
    """EventBus on RabbitMQ. `max_retries` counts redeliveries after the first attempt; the
    n-th retry waits `retry_delay_seconds * 2**(n-1)`, capped at `max_retry_delay_seconds`."""

    def __init__(
        self,
        amqp_url: str,
        *,
        exchange: str = "billing.events",
        prefetch: int = 32,
        max_retries: int = 5,
        retry_delay_seconds: float = 1.0,
        max_retry_delay_seconds: float = 60.0,
        publish_timeout_seconds: float = 5.0,
        connect_timeout_seconds: float = 5.0,
        reconnect_interval_seconds: float = 2.0,
        stop_timeout_seconds: float = 10.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._url = amqp_url
        self._exchange_name = exchange
        self._prefetch = prefetch
        self._max_retries = max_retries
        self._publish_timeout = publish_timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._reconnect_interval = reconnect_interval_seconds
        self._stop_timeout = stop_timeout_seconds
        self._connection: AbstractRobustConnection | None = None  # publishing
        self._consume_connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._lanes: dict[str, dict[str, str | None]] = {}  # consumer -> event type -> lane
        self._connect_lock = asyncio.Lock()
        self._connector: asyncio.Task[None] | None = None
        self._started = False
        self._deliveries = Deliveries(
            self._publisher,
            exchange=exchange,
            max_retries=max_retries,
            retry_delay_seconds=retry_delay_seconds,
            max_retry_delay_seconds=max_retry_delay_seconds,
            publish_timeout_seconds=publish_timeout_seconds,
        )

    # -- EventBus protocol ---------------------------------------------------------------

    def subscribe(
        self, consumer: str, event_type: str, handler: EventHandler, *, lane: str | None = None
    ) -> None:
        if self._started:
            # The queue's bindings and the consumer are set up in `start`.
            raise RuntimeError("subscribe before starting the RabbitMQ event bus")
        if lane is not None and (not lane or "." in lane or lane in ("retry", "dlq")):
            raise ValueError(f"a lane is one word, not retry or dlq: {lane!r}")
        self._deliveries.handlers.setdefault(consumer, {})[event_type] = handler
        self._lanes.setdefault(consumer, {})[event_type] = lane

    async def publish(self, event: CloudEvent) -> None:
        await self._send(event.to_json(), event.id, event.type, event.time, event.traceparent)

    async def publish_stored(self, payload: str) -> None:
        """Publish an event as the outbox stored it (`CloudEvent.to_json`'s text): the same
        message `publish` sends for that event, its body these bytes as they are, not parsed
        into an envelope to be serialised again."""
        event_id, event_type, time, traceparent = stored_envelope(payload)
        await self._send(payload.encode(), event_id, event_type, time, traceparent)

    async def _send(
        self,
        body: bytes,
        event_id: str,
        event_type: str,
        time: datetime,
        traceparent: str | None,
    ) -> None:
        headers: HeadersType = {}
        if traceparent:
            headers["traceparent"] = traceparent
        # The properties aio_pika.Message(content_type, delivery_mode, message_id, timestamp,
        # type, headers).properties has (priority 0 included), built without the Message:
        # its per-attribute conversions and lock checks cost ten times these properties.
        properties = spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT,
            priority=0,
            message_id=event_id,
            timestamp=time,
            message_type=event_type,
            headers=headers,
        )
        if self._connector is not None and not self._connector.done():
            raise BrokerUnavailable(f"not connected to RabbitMQ yet; event {event_id} waits")
        try:
            async with asyncio.timeout(self._publish_timeout):
                channel, _ = await self._publisher()
                underlay = await channel.get_underlay_channel()
                # Not mandatory: an event type nobody subscribes to (yet) is normal pub/sub,
                # and refusing it would stall the outbox behind it forever. A nack raises.
                await underlay.basic_publish(
                    body,
                    exchange=self._exchange_name,
                    routing_key=event_type,
                    properties=properties,
                    mandatory=False,
                )
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ did not confirm event {event_id} within {self._publish_timeout}s"
            ) from exc
        except BROKER_DOWN as exc:
            raise BrokerUnavailable(f"RabbitMQ refused event {event_id}: {exc!r}") from exc

    async def start(self) -> None:
        """Connect and start consuming; if RabbitMQ cannot be reached now, keep connecting in
        the background (every `reconnect_interval_seconds`) and return: the service serves
        meanwhile and its outbox keeps the events."""
        if self._started:
            return
        self._deliveries.stopping = False
        self._started = True
        try:
            await self._connect_and_consume()
        except BROKER_DOWN as exc:
            logger.warning(
                "RabbitMQ is unreachable ({!r}); starting without it and connecting in the "
                "background",
                exc,
            )
            self._connector = asyncio.create_task(self._keep_connecting(), name="rabbitmq-connect")

    async def _connect_and_consume(self) -> None:
        try:
            await self._publisher()
            if not self._deliveries.handlers:
                return
            connection = self._consume_connection = await self._connect("consume")
            for consumer, lanes in self._lanes.items():
                by_lane: dict[str | None, list[str]] = {}
                for event_type, lane in lanes.items():
                    by_lane.setdefault(lane, []).append(event_type)
                moved = [event_type for event_type, lane in lanes.items() if lane is not None]
                if moved and None not in by_lane:
                    # Every type in a lane: the consumer's own queue, if an earlier version
                    # left it, must not keep taking them.
                    await self._unbind_if_present(connection, consumer, moved)
                for lane, event_types in sorted(by_lane.items(), key=lambda item: bool(item[0])):
                    # Its own channel: a prefetch window (QoS) is the channel's.
                    channel = await connection.channel()
                    await channel.set_qos(prefetch_count=self._prefetch)
                    queue = await declare_consumer_topology(
                        channel,
                        self._exchange_name,
                        lane_consumer(consumer, lane),
                        event_types,
                        self._max_retries,
                        moved=moved if lane is None else (),
                    )
                    tag = await queue.consume(
                        partial(self._deliveries.on_message, consumer, queue.name)
                    )
                    self._consumers.append((queue, tag))
        except BaseException:
            # Half a topology on a live connection would consume twice after the next try.
            await self._disconnect()
            raise

    async def _unbind_if_present(
        self, connection: AbstractRobustConnection, consumer: str, event_types: list[str]
    ) -> None:
        """Unbind `event_types` from `consumer`'s own queue if it exists (a passive declare
        of a missing queue closes its channel: a channel of its own)."""
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(
                queue_name(self._exchange_name, consumer), passive=True
            )
            for event_type in event_types:
                await queue.unbind(self._exchange_name, routing_key=event_type)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _keep_connecting(self) -> None:
        while not self._deliveries.stopping:
            await asyncio.sleep(self._reconnect_interval)
            try:
                await self._connect_and_consume()
            except BROKER_DOWN as exc:
                logger.info("RabbitMQ still unreachable: {!r}", exc)
                continue
            logger.info("connected to RabbitMQ; consuming")
            return

    async def _disconnect(self) -> None:
        connections = (self._consume_connection, self._connection)
        self._connection = self._consume_connection = None
        self._publish_channel = None
        self._exchange = None
        self._consumers.clear()
        for connection in connections:
            if connection is not None:
                with contextlib.suppress(Exception):  # it may be half gone already
                    await connection.close()

    async def stop(self) -> None:
        """Stop taking deliveries, let the handlers in flight finish and ack, then close.
        Whatever is still unacked after `stop_timeout_seconds` goes back to its queue."""
        self._deliveries.stopping = True
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):  # the channel may already be gone
                await queue.cancel(tag)
        self._consumers.clear()
        in_flight = self._deliveries.in_flight
        if in_flight:
            _, pending = await asyncio.wait(set(in_flight), timeout=self._stop_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        connections = (self._consume_connection, self._connection)
        self._connection = self._consume_connection = None
        self._publish_channel = None
        self._exchange = None
        self._started = False
        for connection in connections:
            if connection is not None:
                await connection.close()

    # -- dead letters --------------------------------------------------------------------

    async def dead_letters(self, consumer: str) -> DeadLetterQueue:
        """The dead-letter queue of `consumer`, on this bus's connection (of a lane's queue:
        `lane_consumer(consumer, lane)`)."""
        await self._publisher()
        assert self._connection is not None
        return DeadLetterQueue(
            self._connection,
            queue_name(self._exchange_name, consumer),
            publish_timeout_seconds=self._publish_timeout,
        )

    # -- internals -----------------------------------------------------------------------

    async def _publisher(self) -> tuple[AbstractChannel, AbstractExchange]:
        """The confirming publish channel and the exchange, connecting on first use."""
        async with self._connect_lock:
            if self._connection is None:
                connection = await self._connect("publish")
                try:
                    channel = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    exchange = await channel.declare_exchange(
                        self._exchange_name, ExchangeType.TOPIC, durable=True
                    )
                except BaseException:
                    await connection.close()
                    raise
                self._connection = connection
                self._publish_channel = channel
                self._exchange = exchange
        assert self._publish_channel is not None and self._exchange is not None
        if self._publish_channel.is_closed:
            # The robust connection is re-establishing itself in the background; failing now
            # lets the outbox keep the row instead of waiting on a broker that may be gone.
            raise BrokerUnavailable("the connection to RabbitMQ is down; reconnecting")
        return self._publish_channel, self._exchange

    async def _connect(self, purpose: str) -> AbstractRobustConnection:
        return await aio_pika.connect_robust(
            self._url,
            timeout=self._connect_timeout,
            reconnect_interval=self._reconnect_interval,
            client_properties={"connection_name": f"billing {self._exchange_name} {purpose}"},
        )

    def retry_delay(self, attempt: int) -> float:
        """Back-off before retry number `attempt` (1-based)."""
        return self._deliveries.retry_delay(attempt)
