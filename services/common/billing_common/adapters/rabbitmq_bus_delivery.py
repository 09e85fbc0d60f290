"""The consuming half of the RabbitMQ bus: a delivery goes to its handler, one subject at a
time, and is acked after the handler returned, or parked in a retry queue or the dead-letter
queue (see billing_common.adapters.rabbitmq_bus for the design)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from loguru import logger
from pydantic import ValidationError

from billing_common.adapters.rabbitmq_bus_topology import (
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    LAST_ERROR_HEADER,
    MAX_ERROR_CHARS,
    ORIGINAL_QUEUE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    carried_headers,
    copy_message,
    dead_letter_queue_name,
    int_header,
    retry_queue_name,
    str_header,
)
from billing_common.db import DatabaseUnavailable
from billing_common.events import CloudEvent
from billing_common.ports import EventHandler, PermanentEventError
from billing_common.tracing import bind, current_trace_id

# The bus's confirming publish channel (connecting if needed), for parking deliveries.
Publisher = Callable[[], Awaitable[tuple[AbstractChannel, AbstractExchange]]]


@dataclass
class _SubjectLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting; the lock is dropped when none is left


class Deliveries:
    """Handles the deliveries of every consumer of one bus. `max_retries` counts
    redeliveries after the first attempt; the n-th retry waits
    `retry_delay_seconds * 2**(n-1)`, capped at `max_retry_delay_seconds`."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        exchange: str,
        max_retries: int,
        retry_delay_seconds: float,
        max_retry_delay_seconds: float,
        publish_timeout_seconds: float,
    ) -> None:
        self._publisher = publisher
        self._exchange_name = exchange
        self.max_retries = max_retries
        self._retry_delay = retry_delay_seconds
        self._max_retry_delay = max_retry_delay_seconds
        self._publish_timeout = publish_timeout_seconds
        self.handlers: dict[str, dict[str, EventHandler]] = {}
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self._subject_locks: dict[tuple[str, str], _SubjectLock] = {}

    def retry_delay(self, attempt: int) -> float:
        """Back-off before retry number `attempt` (1-based)."""
        return float(min(self._max_retry_delay, self._retry_delay * 2 ** (attempt - 1)))

    async def on_message(self, consumer: str, queue: str, message: AbstractIncomingMessage) -> None:
        """A delivery from `queue` (the consumer's own, or one of its lanes') to the
        consumer's handler of its type."""
        if self.stopping:
            # Arrived while the consumer was being cancelled: hand it back untouched.
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        try:
            await self._handle(consumer, queue, message)
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def _handle(self, consumer: str, queue: str, message: AbstractIncomingMessage) -> None:
        failed_before = int_header(message.headers, ATTEMPTS_HEADER)
        attempt = failed_before + 1
        try:
            event = CloudEvent.from_json(message.body)
        except ValidationError as exc:
            bind(str_header(message.headers, "traceparent"))
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
        handler = self.handlers.get(consumer, {}).get(event.type)
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
            retry = attempt <= self.max_retries
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
        headers = carried_headers(message.headers)
        headers[ORIGINAL_ROUTING_KEY_HEADER] = str_header(
            message.headers, ORIGINAL_ROUTING_KEY_HEADER
        ) or (message.routing_key or "")
        error = (str(exc) or type(exc).__name__)[:MAX_ERROR_CHARS]
        if retry:
            delay = self.retry_delay(attempt)
            headers[ATTEMPTS_HEADER] = attempt
            headers[LAST_ERROR_HEADER] = error
            target = retry_queue_name(queue, attempt)
            copy = copy_message(message, headers, expiration=delay)
            log.warning(
                "event {} {} for {} failed (attempt {}/{}), retrying in {:.2f}s: {}",
                event_type,
                event_id,
                queue,
                attempt,
                self.max_retries + 1,
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
            copy = copy_message(message, headers)
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
