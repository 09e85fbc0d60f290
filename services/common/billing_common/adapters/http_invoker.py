"""Direct service invocation: HTTP to the peer's URL, with one pooled client for every peer.

Same semantics as the embedded twin (`asgi_invoker`): 4xx answers come back as responses;
connection failures, timeouts and 5xx raise PeerUnavailable. On top of that, what a network
needs: idempotent calls are retried with exponential back-off and jitter, and a circuit breaker
per peer refuses calls at once while the peer keeps failing, so callers answer 503 promptly
instead of queueing behind timeouts. The calls go out on one pooled aiohttp session
(`http_semantics.PooledHttpClient`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from loguru import logger

from billing_common.adapters.circuit_breaker import CircuitBreaker
from billing_common.adapters.http_semantics import (
    BrokenAnswer,
    PooledHttpClient,
    RawAnswer,
    TransportFailure,
    build_headers,
    to_response,
)
from billing_common.ports import InvocationResponse, PeerUnavailable

# HTTP methods whose repetition has the same effect as one call (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class _RetryableFailure(Exception):
    """One attempt failed in a way a retry might fix (network trouble or a 5xx)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpServiceInvoker:
    def __init__(
        self,
        peer_urls: Mapping[str, str],
        *,
        timeout_seconds: float = 5.0,
        retries: int = 2,
        breaker_failure_threshold: int = 5,
        breaker_reset_seconds: float = 10.0,
        backoff_seconds: float = 0.1,
        max_backoff_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must not be negative")
        self._peer_urls = {app_id: url.rstrip("/") for app_id, url in peer_urls.items()}
        self._retries = retries
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._sleep = sleep
        self._breaker_threshold = breaker_failure_threshold
        self._breaker_reset = breaker_reset_seconds
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._client = PooledHttpClient(timeout_seconds=timeout_seconds)

    def breaker(self, app_id: str) -> CircuitBreaker:
        breaker = self._breakers.get(app_id)
        if breaker is None:
            breaker = CircuitBreaker(
                failure_threshold=self._breaker_threshold,
                reset_seconds=self._breaker_reset,
                clock=self._clock,
            )
            self._breakers[app_id] = breaker
        return breaker

    async def invoke(
        self,
        app_id: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = False,
    ) -> InvocationResponse:
        base_url = self._peer_urls.get(app_id)
        if base_url is None:
            raise PeerUnavailable(app_id, "no URL configured for this service")
        method = method.upper()
        url = f"{base_url}/{path.lstrip('/')}"
        outgoing = build_headers(headers)
        # A call that is not idempotent is tried once: the peer may have acted on it even
        # though we saw a failure, and a second try could then act twice.
        attempts = 1 + (self._retries if idempotent or method in IDEMPOTENT_METHODS else 0)
        breaker = self.breaker(app_id)
        for attempt in range(1, attempts + 1):
            if not breaker.allow():
                raise PeerUnavailable(app_id, "circuit open")
            try:
                response = await self._attempt(app_id, method, url, json, outgoing)
            except PeerUnavailable:
                breaker.record_failure()
                raise
            except _RetryableFailure as failure:
                breaker.record_failure()
                if attempt == attempts:
                    raise PeerUnavailable(app_id, failure.reason) from failure
                delay = self._delay(attempt)
                logger.warning(
                    "call {} {} {} failed (attempt {}/{}), retrying in {:.2f}s: {}",
                    app_id,
                    method,
                    path,
                    attempt,
                    attempts,
                    delay,
                    failure.reason,
                )
                await self._sleep(delay)
                continue
            except BaseException:
                breaker.release()  # cancelled, or our own bug: says nothing about the peer
                raise
            breaker.record_success()
            return to_response(app_id, response.status, response.content, response.headers)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self, app_id: str, method: str, url: str, json: Any, headers: dict[str, str]
    ) -> RawAnswer:
        try:
            response = await self._client.request(method, url, json=json, headers=headers)
        except TransportFailure as exc:  # connect/read/write errors and timeouts
            raise _RetryableFailure(str(exc)) from exc
        except BrokenAnswer as exc:  # e.g. a malformed answer: the same again next time
            raise PeerUnavailable(app_id, str(exc)) from exc
        if response.status >= 500:
            raise _RetryableFailure(f"answered {response.status}")
        return response

    def _delay(self, attempt: int) -> float:
        ceiling = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
        # Jitter spreads the retries of many callers so they do not hit a recovering peer
        # in lock-step; it has nothing to do with security.
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311

    async def close(self) -> None:
        await self._client.close()
