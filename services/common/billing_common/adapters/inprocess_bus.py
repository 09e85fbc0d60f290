"""Embedded event bus: one process, asynchronous, at-least-once.

Each consumer has its own queue (like a RabbitMQ queue per service). Events are copied through
JSON on publish so no consumer shares objects with the producer. A handler that raises gets the
event again after a back-off; after `max_attempts` (or a PermanentEventError) the event goes to
`dead_letters`. Events live in memory: what was accepted but not yet handled is lost if the
process dies, which is why the direct and dapr runtimes use a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass

from loguru import logger

from billing_common.events import CloudEvent
from billing_common.ports import EventHandler, PermanentEventError
from billing_common.tracing import bind


@dataclass
class DeadLetter:
    consumer: str
    event: CloudEvent
    error: str


class InProcessEventBus:
    def __init__(self, *, max_attempts: int = 5, backoff_seconds: float = 0.05) -> None:
        self._handlers: dict[str, dict[str, EventHandler]] = defaultdict(dict)
        self._queues: dict[str, asyncio.Queue[tuple[bytes, int]]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self.dead_letters: list[DeadLetter] = []
        self._started = False
        self._in_flight = 0  # events accepted and not yet handled or dead-lettered

    def subscribe(
        self, consumer: str, event_type: str, handler: EventHandler, *, lane: str | None = None
    ) -> None:
        # `lane` is ignored: in one process, a consumer's events are handled one at a time
        # in the order they were published, which the embedded runtime's tests rely on.
        self._handlers[consumer][event_type] = handler
        if consumer not in self._queues:
            self._queues[consumer] = asyncio.Queue()
            if self._started:  # services may join a bus that is already running
                self._spawn(consumer)

    async def publish(self, event: CloudEvent) -> None:
        raw = event.to_json()
        for consumer, handlers in self._handlers.items():
            if event.type in handlers:
                self._in_flight += 1
                self._queues[consumer].put_nowait((raw, 1))

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for consumer in self._queues:
            self._spawn(consumer)

    def _spawn(self, consumer: str) -> None:
        self._workers.append(asyncio.create_task(self._consume(consumer), name=f"bus-{consumer}"))

    async def stop(self) -> None:
        for task in [*self._workers, *self._retries]:
            task.cancel()
        for task in [*self._workers, *self._retries]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._retries.clear()
        self._started = False

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every queue is drained and no retry is pending (tests, demo)."""
        async with asyncio.timeout(timeout):
            while self._retries or self._in_flight:
                await asyncio.sleep(0.01)

    async def _consume(self, consumer: str) -> None:
        queue = self._queues[consumer]
        while True:
            raw, attempt = await queue.get()
            try:
                await self._deliver(consumer, raw, attempt)
            finally:
                queue.task_done()

    async def _deliver(self, consumer: str, raw: bytes, attempt: int) -> None:
        event = CloudEvent.from_json(raw)
        handler = self._handlers[consumer][event.type]
        bind(event.traceparent)
        try:
            await handler(event)
            self._in_flight -= 1
        except PermanentEventError as exc:
            self._dead_letter(consumer, event, exc)
        except Exception as exc:  # noqa: BLE001 - any failure means: deliver again later
            if attempt >= self._max_attempts:
                self._dead_letter(consumer, event, exc)
                return
            logger.warning(
                "event {} for {} failed (attempt {}), retrying: {}",
                event.type,
                consumer,
                attempt,
                exc,
            )
            retry = asyncio.create_task(self._redeliver(consumer, raw, attempt + 1))
            self._retries.add(retry)
            retry.add_done_callback(self._retries.discard)

    async def _redeliver(self, consumer: str, raw: bytes, attempt: int) -> None:
        await asyncio.sleep(self._backoff * 2 ** (attempt - 2))
        self._queues[consumer].put_nowait((raw, attempt))

    def _dead_letter(self, consumer: str, event: CloudEvent, exc: BaseException) -> None:
        self._in_flight -= 1
        logger.error("event {} dead-lettered for {}: {}", event.id, consumer, exc)
        self.dead_letters.append(DeadLetter(consumer, event, str(exc)))
