"""Inspecting and recovering a consumer's dead-letter queue (`<queue>.dlq`) of the RabbitMQ
bus: what the dead-letters CLI and the direct runtime's operators use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from billing_common.adapters.rabbitmq_bus_topology import (
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    carried_headers,
    copy_message,
    dead_letter_queue_name,
    int_header,
    str_header,
)
from billing_common.events import CloudEvent


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
                replayed = copy_message(message, carried_headers(message.headers))
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
        attempts=int_header(headers, ATTEMPTS_HEADER),
        error=str_header(headers, ERROR_HEADER) or "",
        error_type=str_header(headers, ERROR_TYPE_HEADER) or "",
        dead_lettered_at=str_header(headers, DEAD_LETTERED_AT_HEADER) or "",
        event=event,
        body=message.body,
    )
