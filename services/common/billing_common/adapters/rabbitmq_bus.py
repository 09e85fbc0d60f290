"""Direct-runtime event bus: RabbitMQ through aio-pika, at-least-once, never blocking on poison.

Topology (all durable, declared by `start`; the exchange also by the first `publish`):

- exchange `<exchange>` (topic); an event is published with routing key = its type, as a
  persistent message whose body is the CloudEvent in structured JSON mode.
- queue `<exchange>.<consumer>` per consuming service, bound to the types it subscribed.
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

The broker being down is never a reason for a service not to run: `start` does not wait for
it. A lost connection is restored by aio-pika's robust connection (channels, QoS, topology and
consumers included); a broker that is unreachable when the service starts is connected to in
the background, and the consumers start then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
    ExchangeType,
    HeadersType,
)
from loguru import logger
from pydantic import ValidationError

from billing_common.db import DatabaseUnavailable
from billing_common.events import CloudEvent
from billing_common.ports import EventHandler, PermanentEventError
from billing_common.tracing import bind, current_trace_id

CONTENT_TYPE = "application/cloudevents+json"

# Message headers this bus owns. Everything else a producer sets (traceparent) travels along.
ATTEMPTS_HEADER = "x-attempts"  # deliveries that failed so far
LAST_ERROR_HEADER = "x-last-error"
ERROR_HEADER = "x-error"
ERROR_TYPE_HEADER = "x-error-type"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
_OWN_HEADERS = frozenset(
    {
        ATTEMPTS_HEADER,
        LAST_ERROR_HEADER,
        ERROR_HEADER,
        ERROR_TYPE_HEADER,
        DEAD_LETTERED_AT_HEADER,
        ORIGINAL_QUEUE_HEADER,
        ORIGINAL_ROUTING_KEY_HEADER,
    }
)
# What RabbitMQ adds when it dead-letters a message (our retry queues do, on expiry).
_BROKER_DEATH_HEADERS = ("x-death", "x-first-death", "x-last-death")
_MAX_ERROR_CHARS = 1000


class BrokerUnavailable(ConnectionError):
    """RabbitMQ did not accept the message (unreachable, reconnecting, or too slow)."""


# What an unreachable or restarting broker raises (OSError covers refused, reset, timed out).
_BROKER_DOWN = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,
)


def queue_name(exchange: str, consumer: str) -> str:
    return f"{exchange}.{consumer}"


def retry_queue_name(queue: str, attempt: int) -> str:
    return f"{queue}.retry.{attempt}"


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dlq"


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
        self._retry_delay = retry_delay_seconds
        self._max_retry_delay = max_retry_delay_seconds
        self._publish_timeout = publish_timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._reconnect_interval = reconnect_interval_seconds
        self._stop_timeout = stop_timeout_seconds
        self._handlers: dict[str, dict[str, EventHandler]] = {}
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._connect_lock = asyncio.Lock()
        self._connector: asyncio.Task[None] | None = None
        self._subject_locks: dict[tuple[str, str], _SubjectLock] = {}
        self._started = False
        self._stopping = False

    # -- EventBus protocol ---------------------------------------------------------------

    def subscribe(self, consumer: str, event_type: str, handler: EventHandler) -> None:
        if self._started:
            # The queue's bindings and the consumer are set up in `start`.
            raise RuntimeError("subscribe before starting the RabbitMQ event bus")
        self._handlers.setdefault(consumer, {})[event_type] = handler

    async def publish(self, event: CloudEvent) -> None:
        headers: HeadersType = {}
        if event.traceparent:
            headers["traceparent"] = event.traceparent
        message = aio_pika.Message(
            body=event.to_json(),
            content_type=CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=event.id,
            timestamp=event.time,
            type=event.type,
            headers=headers,
        )
        if self._connector is not None and not self._connector.done():
            raise BrokerUnavailable(f"not connected to RabbitMQ yet; event {event.id} waits")
        try:
            async with asyncio.timeout(self._publish_timeout):
                _, exchange = await self._publisher()
                # Not mandatory: an event type nobody subscribes to (yet) is normal pub/sub,
                # and refusing it would stall the outbox behind it forever.
                await exchange.publish(message, routing_key=event.type, mandatory=False)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ did not confirm event {event.id} within {self._publish_timeout}s"
            ) from exc
        except (
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            OSError,
        ) as exc:
            raise BrokerUnavailable(f"RabbitMQ refused event {event.id}: {exc!r}") from exc

    async def start(self) -> None:
        """Connect and start consuming; if RabbitMQ cannot be reached now, keep connecting in
        the background (every `reconnect_interval_seconds`) and return: the service serves
        meanwhile and its outbox keeps the events."""
        if self._started:
            return
        self._stopping = False
        self._started = True
        try:
            await self._connect_and_consume()
        except _BROKER_DOWN as exc:
            logger.warning(
                "RabbitMQ is unreachable ({!r}); starting without it and connecting in the "
                "background",
                exc,
            )
            self._connector = asyncio.create_task(self._keep_connecting(), name="rabbitmq-connect")

    async def _connect_and_consume(self) -> None:
        try:
            await self._publisher()
            connection = self._connection
            assert connection is not None  # set by _publisher
            for consumer, handlers in self._handlers.items():
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=self._prefetch)
                queue = await self._declare_consumer_topology(channel, consumer, handlers)
                tag = await queue.consume(partial(self._on_message, consumer))
                self._consumers.append((queue, tag))
        except BaseException:
            # Half a topology on a live connection would consume twice after the next try.
            await self._disconnect()
            raise

    async def _keep_connecting(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._reconnect_interval)
            try:
                await self._connect_and_consume()
            except _BROKER_DOWN as exc:
                logger.info("RabbitMQ still unreachable: {!r}", exc)
                continue
            logger.info("connected to RabbitMQ; consuming")
            return

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._publish_channel = None
        self._exchange = None
        self._consumers.clear()
        if connection is not None:
            with contextlib.suppress(Exception):  # it may be half gone already
                await connection.close()

    async def stop(self) -> None:
        """Stop taking deliveries, let the handlers in flight finish and ack, then close.
        Whatever is still unacked after `stop_timeout_seconds` goes back to its queue."""
        self._stopping = True
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):  # the channel may already be gone
                await queue.cancel(tag)
        self._consumers.clear()
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=self._stop_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        connection, self._connection = self._connection, None
        self._publish_channel = None
        self._exchange = None
        self._started = False
        if connection is not None:
            await connection.close()

    # -- dead letters --------------------------------------------------------------------

    async def dead_letters(self, consumer: str) -> DeadLetterQueue:
        """The dead-letter queue of `consumer`, on this bus's connection."""
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
                connection = await aio_pika.connect_robust(
                    self._url,
                    timeout=self._connect_timeout,
                    reconnect_interval=self._reconnect_interval,
                    client_properties={"connection_name": f"billing {self._exchange_name}"},
                )
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

    async def _declare_consumer_topology(
        self, channel: AbstractChannel, consumer: str, handlers: Mapping[str, EventHandler]
    ) -> AbstractQueue:
        exchange = await channel.declare_exchange(
            self._exchange_name, ExchangeType.TOPIC, durable=True
        )
        name = queue_name(self._exchange_name, consumer)
        queue = await channel.declare_queue(name, durable=True)
        for event_type in handlers:
            await queue.bind(exchange, routing_key=event_type)
        for attempt in range(1, self._max_retries + 1):
            await channel.declare_queue(
                retry_queue_name(name, attempt),
                durable=True,
                arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name},
            )
        await channel.declare_queue(dead_letter_queue_name(name), durable=True)
        return queue

    def retry_delay(self, attempt: int) -> float:
        """Back-off before retry number `attempt` (1-based)."""
        return float(min(self._max_retry_delay, self._retry_delay * 2 ** (attempt - 1)))

    async def _on_message(self, consumer: str, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            # Arrived while the consumer was being cancelled: hand it back untouched.
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(consumer, message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, consumer: str, message: AbstractIncomingMessage) -> None:
        queue = queue_name(self._exchange_name, consumer)
        failed_before = _int_header(message.headers, ATTEMPTS_HEADER)
        attempt = failed_before + 1
        try:
            event = CloudEvent.from_json(message.body)
        except ValidationError as exc:
            bind(_str_header(message.headers, "traceparent"))
            await self._settle_failure(queue, message, None, exc, attempt, retry=False)
            return
        bind(event.traceparent)
        if not event.subject:
            await self._dispatch(consumer, queue, message, event, attempt)
            return
        # Events about one subject (an invoice, a payment) are handled one after the other, in
        # the order they arrived, as the relay published them: handled concurrently, a
        # `created` that read no row yet could overwrite the `finalized` committed meanwhile.
        # Deliveries arrive in order and nothing awaits before the (FIFO) lock is taken.
        key = (consumer, event.subject)
        lock = self._subject_locks.get(key)
        if lock is None:
            lock = self._subject_locks[key] = _SubjectLock()
        lock.users += 1
        try:
            async with lock.lock:
                await self._dispatch(consumer, queue, message, event, attempt)
        finally:
            lock.users -= 1
            if lock.users == 0:
                del self._subject_locks[key]

    async def _dispatch(
        self,
        consumer: str,
        queue: str,
        message: AbstractIncomingMessage,
        event: CloudEvent,
        attempt: int,
    ) -> None:
        handler = self._handlers.get(consumer, {}).get(event.type)
        if handler is None:
            # A binding left from an earlier version of the service: keep the event visible.
            error = LookupError(f"{consumer} has no handler for {event.type}")
            await self._settle_failure(queue, message, event, error, attempt, retry=False)
            return
        try:
            await handler(event)
        except DatabaseUnavailable as exc:
            # Not the event's fault: it waits for the database without spending its retries,
            # which a restart longer than their back-offs would exhaust into the DLQ.
            await self._wait_for_database(queue, message, event, exc)
            return
        except PermanentEventError as exc:
            await self._settle_failure(queue, message, event, exc, attempt, retry=False)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means: deliver again later
            retry = attempt <= self._max_retries
            await self._settle_failure(queue, message, event, exc, attempt, retry=retry)
            return
        await message.ack()

    async def _wait_for_database(
        self,
        queue: str,
        message: AbstractIncomingMessage,
        event: CloudEvent,
        exc: DatabaseUnavailable,
    ) -> None:
        logger.bind(trace_id=current_trace_id() or "-", consumer=queue).warning(
            "event {} {} for {} waits for the database ({}); delivering it again in {:.2f}s",
            event.type,
            event.id,
            queue,
            exc,
            self._retry_delay,
        )
        await asyncio.sleep(self._retry_delay)
        with contextlib.suppress(Exception):  # a dead channel requeues it anyway
            await message.nack(requeue=True)

    async def _settle_failure(
        self,
        queue: str,
        message: AbstractIncomingMessage,
        event: CloudEvent | None,
        exc: BaseException,
        attempt: int,
        *,
        retry: bool,
    ) -> None:
        """Park the delivery in a retry queue or the dead-letter queue, then ack it. The copy
        is confirmed before the ack, so a failure in between redelivers instead of losing."""
        log = logger.bind(trace_id=current_trace_id() or "-", consumer=queue)
        event_type = event.type if event is not None else message.type or "?"
        event_id = event.id if event is not None else message.message_id or "?"
        headers = _carried_headers(message.headers)
        headers[ORIGINAL_ROUTING_KEY_HEADER] = _str_header(
            message.headers, ORIGINAL_ROUTING_KEY_HEADER
        ) or (message.routing_key or "")
        error = (str(exc) or type(exc).__name__)[:_MAX_ERROR_CHARS]
        if retry:
            delay = self.retry_delay(attempt)
            headers[ATTEMPTS_HEADER] = attempt
            headers[LAST_ERROR_HEADER] = error
            target = retry_queue_name(queue, attempt)
            copy = _copy_message(message, headers, expiration=delay)
            log.warning(
                "event {} {} for {} failed (attempt {}/{}), retrying in {:.2f}s: {}",
                event_type,
                event_id,
                queue,
                attempt,
                self._max_retries + 1,
                delay,
                error,
            )
        else:
            headers[ATTEMPTS_HEADER] = attempt
            headers[ERROR_HEADER] = error
            headers[ERROR_TYPE_HEADER] = type(exc).__name__
            headers[DEAD_LETTERED_AT_HEADER] = datetime.now(UTC).isoformat()
            headers[ORIGINAL_QUEUE_HEADER] = queue
            target = dead_letter_queue_name(queue)
            copy = _copy_message(message, headers)
            log.error(
                "event {} {} for {} dead-lettered to {} after {} attempt(s): {}: {}",
                event_type,
                event_id,
                queue,
                target,
                attempt,
                type(exc).__name__,
                error,
            )
        try:
            async with asyncio.timeout(self._publish_timeout):
                channel, _ = await self._publisher()
                # Mandatory, and returns raise: if the target queue were missing, the broker
                # would otherwise drop the copy silently after we ack the original.
                await channel.default_exchange.publish(copy, routing_key=target, mandatory=True)
            await message.ack()
        except Exception as publish_error:  # noqa: BLE001 - never lose the delivery
            log.error(
                "could not move event {} to {} ({!r}); handing it back to {}",
                event_id,
                target,
                publish_error,
                queue,
            )
            # Back-off so a broker in trouble is not hit with a tight redelivery loop.
            await asyncio.sleep(self._retry_delay)
            with contextlib.suppress(Exception):  # a dead channel requeues it anyway
                await message.nack(requeue=True)


@dataclass
class _SubjectLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting; the lock is dropped when none is left


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, as the CLI shows it."""

    message_id: str
    event_type: str
    attempts: int
    error: str
    error_type: str
    dead_lettered_at: str
    event: CloudEvent | None
    body: bytes


class DeadLetterQueue:
    """Inspect and recover `<queue>.dlq`. Every operation uses its own channel: messages it
    looks at but does not remove go back to the queue, in order, when that channel closes."""

    def __init__(
        self,
        connection: AbstractConnection,
        queue: str,
        *,
        publish_timeout_seconds: float = 10.0,
    ) -> None:
        self._connection = connection
        self.queue = queue.removesuffix(".dlq")
        self.name = dead_letter_queue_name(self.queue)
        self._publish_timeout = publish_timeout_seconds

    async def peek(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first, leaving them in the queue."""
        found: list[DeadLetter] = []
        async with self._messages() as messages:
            async for message in messages.take(limit):
                found.append(_describe(message))
        return found

    async def replay(self, message_id: str | None = None) -> int:
        """Move dead letters (all, or the one(s) with `message_id`) back to the consumer's
        queue with a fresh retry budget. Only this consumer sees them again: they go to its
        queue directly, not through the topic exchange. Returns how many moved."""
        moved = 0
        async with self._messages() as messages:
            channel = messages.channel
            async for message in messages.take():
                if message_id is not None and message.message_id != message_id:
                    continue
                replayed = _copy_message(message, _carried_headers(message.headers))
                async with asyncio.timeout(self._publish_timeout):
                    await channel.default_exchange.publish(
                        replayed, routing_key=self.queue, mandatory=True
                    )
                await message.ack()
                moved += 1
        return moved

    async def purge(self, message_id: str | None = None) -> int:
        """Drop dead letters for good (all, or the one(s) with `message_id`)."""
        if message_id is None:
            async with self._messages() as messages:
                result = await messages.queue.purge()
                return int(result.message_count or 0)
        dropped = 0
        async with self._messages() as messages:
            async for message in messages.take():
                if message.message_id == message_id:
                    await message.ack()
                    dropped += 1
        return dropped

    @contextlib.asynccontextmanager
    async def _messages(self) -> AsyncIterator[_Snapshot]:
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            # Passive: a mistyped queue name is an error, not a new empty queue.
            queue = await channel.declare_queue(self.name, passive=True)
            count = queue.declaration_result.message_count or 0
            yield _Snapshot(channel, queue, count)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()  # unacked messages go back to the queue


class _Snapshot:
    """The messages that were in a queue when we looked: bounded, so a replayed message that
    fails again and comes back to the DLQ is not visited twice."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, count: int) -> None:
        self.channel = channel
        self.queue = queue
        self._count = count

    async def take(self, limit: int | None = None) -> AsyncIterator[AbstractIncomingMessage]:
        count = self._count if limit is None else min(limit, self._count)
        for _ in range(count):
            message = await self.queue.get(no_ack=False, fail=False)
            if message is None:
                return
            yield message


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    try:
        event: CloudEvent | None = CloudEvent.from_json(message.body)
    except ValidationError:
        event = None
    headers = message.headers
    return DeadLetter(
        message_id=message.message_id or (event.id if event else ""),
        event_type=event.type if event else (message.type or ""),
        attempts=_int_header(headers, ATTEMPTS_HEADER),
        error=_str_header(headers, ERROR_HEADER) or "",
        error_type=_str_header(headers, ERROR_TYPE_HEADER) or "",
        dead_lettered_at=_str_header(headers, DEAD_LETTERED_AT_HEADER) or "",
        event=event,
        body=message.body,
    )


def _copy_message(
    message: AbstractIncomingMessage, headers: HeadersType, *, expiration: float | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type or CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        expiration=expiration,
    )


def _carried_headers(headers: HeadersType | None) -> HeadersType:
    """The producer's headers, without this bus's bookkeeping or RabbitMQ's x-death trail."""
    return {
        key: value
        for key, value in (headers or {}).items()
        if key not in _OWN_HEADERS and not key.startswith(_BROKER_DEATH_HEADERS)
    }


def _str_header(headers: HeadersType | None, key: str) -> str | None:
    value = (headers or {}).get(key)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _int_header(headers: HeadersType | None, key: str) -> int:
    value = (headers or {}).get(key)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes) and value.isdigit():
        return int(value)
    return 0
