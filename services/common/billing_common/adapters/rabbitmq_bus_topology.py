"""The RabbitMQ bus's vocabulary: queue names, the headers it owns, message copies, and the
durable topology of one consumer (see billing_common.adapters.rabbitmq_bus for the design)."""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    DeliveryMode,
    ExchangeType,
    HeadersType,
)

CONTENT_TYPE = "application/cloudevents+json"

# Message headers this bus owns. Everything else a producer sets (traceparent) travels along.
ATTEMPTS_HEADER = "x-attempts"  # deliveries that failed so far
LAST_ERROR_HEADER = "x-last-error"
ERROR_HEADER = "x-error"
ERROR_TYPE_HEADER = "x-error-type"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
OWN_HEADERS = frozenset(
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
BROKER_DEATH_HEADERS = ("x-death", "x-first-death", "x-last-death")
MAX_ERROR_CHARS = 1000


class BrokerUnavailable(ConnectionError):
    """RabbitMQ did not accept the message (unreachable, reconnecting, or too slow)."""


# What an unreachable or restarting broker raises (OSError covers refused, reset, timed out).
BROKER_DOWN = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,
)


def queue_name(exchange: str, consumer: str) -> str:
    return f"{exchange}.{consumer}"


def lane_consumer(consumer: str, lane: str | None) -> str:
    """What names the queues of `consumer`'s `lane` (the consumer itself: no lane)."""
    return consumer if lane is None else f"{consumer}.{lane}"


def retry_queue_name(queue: str, attempt: int) -> str:
    return f"{queue}.retry.{attempt}"


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dlq"


async def declare_consumer_topology(
    channel: AbstractChannel,
    exchange_name: str,
    consumer: str,
    event_types: Iterable[str],
    max_retries: int,
    *,
    moved: Iterable[str] = (),
) -> AbstractQueue:
    """The consumer's queue bound to its event types, its retry queues and its DLQ; the
    `moved` types (now in a lane's queue) unbound from it: a binding left from before the
    lane would deliver each of them twice. (RabbitMQ answers ok to an unbind of a binding
    that is not there.)"""
    exchange = await channel.declare_exchange(exchange_name, ExchangeType.TOPIC, durable=True)
    name = queue_name(exchange_name, consumer)
    queue = await channel.declare_queue(name, durable=True)
    for event_type in moved:
        await queue.unbind(exchange, routing_key=event_type)
    for event_type in event_types:
        await queue.bind(exchange, routing_key=event_type)
    for attempt in range(1, max_retries + 1):
        await channel.declare_queue(
            retry_queue_name(name, attempt),
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name},
        )
    await channel.declare_queue(dead_letter_queue_name(name), durable=True)
    return queue


def copy_message(
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


def carried_headers(headers: HeadersType | None) -> HeadersType:
    """The producer's headers, without this bus's bookkeeping or RabbitMQ's x-death trail."""
    return {
        key: value
        for key, value in (headers or {}).items()
        if key not in OWN_HEADERS and not key.startswith(BROKER_DEATH_HEADERS)
    }


def str_header(headers: HeadersType | None, key: str) -> str | None:
    value = (headers or {}).get(key)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def int_header(headers: HeadersType | None, key: str) -> int:
    value = (headers or {}).get(key)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes) and value.isdigit():
        return int(value)
    return 0
