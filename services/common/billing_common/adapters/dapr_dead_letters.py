"""Dead letters of the dapr runtime, where Dapr's RabbitMQ component keeps them.

With `enableDeadLetter: true` the component (components-contrib pubsub/rabbitmq) declares, for
each subscription of app `<app-id>` to `<topic>`:

- the durable queue `<app-id>-<topic>` (the app's copy of the topic), bound to the exchange
  `<topic>`, with `x-dead-letter-exchange: dlx-<app-id>-<topic>`;
- the fanout exchange `dlx-<app-id>-<topic>` and the durable (lazy) queue
  `dlq-<app-id>-<topic>` bound to it.

A delivery that failed for good is nacked without requeue (`requeueInFailure: false`) and
RabbitMQ moves it to `dlq-<app-id>-<topic>`, with an `x-death` header saying where from and
how often. The message body is the CloudEvent exactly as daprd published it.

Replay publishes the message to the default exchange with routing key `<app-id>-<topic>`, so
only that app's sidecar gets it again (other subscribers of the topic already had their copy),
as a fresh message: no `x-death` trail, and the Resiliency policy starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue, DeliveryMode
from pydantic import ValidationError

from billing_common.adapters.rabbitmq_bus import DeadLetter
from billing_common.events import CloudEvent


def subscriber_queue(app_id: str, topic: str) -> str:
    """The component's queue for `app_id`'s subscription (consumerID = app id)."""
    return f"{app_id}-{topic}"


def dead_letter_queue(app_id: str, topic: str) -> str:
    return f"dlq-{subscriber_queue(app_id, topic)}"


def dead_letter_exchange(app_id: str, topic: str) -> str:
    return f"dlx-{subscriber_queue(app_id, topic)}"


class DaprDeadLetterQueue:
    """List, replay and purge `dlq-<app-id>-<topic>`. Every operation uses its own channel:
    messages it looks at but does not remove go back to the queue when that channel closes."""

    def __init__(
        self,
        connection: AbstractConnection,
        app_id: str,
        topic: str,
        *,
        publish_timeout_seconds: float = 10.0,
    ) -> None:
        self._connection = connection
        self.topic = topic
        self.queue = subscriber_queue(app_id, topic)
        self.name = dead_letter_queue(app_id, topic)
        self._publish_timeout = publish_timeout_seconds

    async def exists(self) -> bool:
        channel = await self._connection.channel()
        try:
            await channel.declare_queue(self.name, passive=True)
            return True
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def peek(self, limit: int = 100) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async with self._messages() as (_, queue, count):
            for _ in range(min(limit, count)):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                found.append(_describe(message.body, message.headers, self.queue))
        return found

    async def replay(self, event_id: str | None = None) -> int:
        """Move dead letters (all, or those of the CloudEvent `event_id`) back to the app's
        queue. Returns how many moved."""
        moved = 0
        async with self._messages() as (channel, queue, count):
            for _ in range(count):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                if event_id is not None and _event_id(message.body) != event_id:
                    continue
                again = aio_pika.Message(
                    body=message.body,
                    content_type=message.content_type,
                    delivery_mode=DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    headers=_without_death_trail(message.headers),
                )
                async with asyncio.timeout(self._publish_timeout):
                    # Mandatory and confirmed: a replay never vanishes into an unbound route.
                    await channel.default_exchange.publish(
                        again, routing_key=self.queue, mandatory=True
                    )
                await message.ack()
                moved += 1
        return moved

    async def purge(self, event_id: str | None = None) -> int:
        dropped = 0
        async with self._messages() as (_, queue, count):
            if event_id is None:
                result = await queue.purge()
                return int(result.message_count or 0)
            for _ in range(count):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                if _event_id(message.body) == event_id:
                    await message.ack()
                    dropped += 1
        return dropped

    @contextlib.asynccontextmanager
    async def _messages(self) -> AsyncIterator[tuple[AbstractChannel, AbstractQueue, int]]:
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            # Passive: a mistyped name is an error, not a new empty queue. The count bounds
            # the walk, so a replayed message that fails again is not visited twice.
            queue = await channel.declare_queue(self.name, passive=True)
            yield channel, queue, queue.declaration_result.message_count or 0
        finally:
            with contextlib.suppress(Exception):
                await channel.close()  # unacked messages go back to the queue


async def existing_queues(
    connection: AbstractConnection, app_id: str, topics: Iterable[str]
) -> list[DaprDeadLetterQueue]:
    """The dead-letter queues of `app_id` that exist (one per topic it ever subscribed)."""
    found = []
    for topic in topics:
        dlq = DaprDeadLetterQueue(connection, app_id, topic)
        if await dlq.exists():
            found.append(dlq)
    return found


def _event_id(body: bytes) -> str | None:
    try:
        return CloudEvent.from_json(body).id
    except (ValidationError, ValueError):
        return None


def _describe(body: bytes, headers: dict[str, Any] | None, queue: str) -> DeadLetter:
    try:
        event: CloudEvent | None = CloudEvent.from_json(body)
    except (ValidationError, ValueError):
        event = None
    death = _death(headers, queue)
    when = death.get("time")
    return DeadLetter(
        message_id=event.id if event else "",
        event_type=event.type if event else "",
        attempts=int(death.get("count") or 0),
        error=f"{_text(death.get('reason')) or 'dead-lettered'} by {queue}",
        error_type="",
        dead_lettered_at=when.isoformat() if isinstance(when, datetime) else _text(when),
        event=event,
        body=body,
    )


def _death(headers: dict[str, Any] | None, queue: str) -> dict[str, Any]:
    """RabbitMQ's x-death entry for the app's queue (one per queue and reason)."""
    for entry in (headers or {}).get("x-death") or []:
        if isinstance(entry, dict) and _text(entry.get("queue")) == queue:
            return entry
    return {}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _without_death_trail(headers: dict[str, Any] | None) -> dict[str, Any]:
    return {
        key: value
        for key, value in (headers or {}).items()
        if key != "x-death" and not key.startswith(("x-first-death", "x-last-death"))
    }
