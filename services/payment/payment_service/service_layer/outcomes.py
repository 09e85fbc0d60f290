"""A gateway's answer must not be lost.

Once the gateway has answered, the money has moved (or not) whatever our database says. Two
things keep that answer from being lost:

* `recorded` keeps trying to write the answer while the database is away for a moment (a
  restart, a failover), within the attempt's lease;
* when that fails too, the lease (`attempt_lease`) ends soon after, and the recovery sweep
  (recovery.py) resumes the attempt with the same gateway idempotency key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from loguru import logger

from payment_service.domain.gateway import PaymentGateway
from payment_service.service_layer.dependencies import Dependencies

Result = TypeVar("Result")

# Beyond the gateway's longest call and the recording window, for clock skew between
# replicas and the sweep's own interval.
LEASE_MARGIN = timedelta(seconds=5)
FIRST_RETRY_DELAY_SECONDS = 0.1
LONGEST_RETRY_DELAY_SECONDS = 1.0


def attempt_lease(gateway: PaymentGateway, deps: Dependencies) -> timedelta:
    """How long an attempt keeps others off: the gateway call, then recording its answer."""
    return gateway.longest_call + deps.record_outcome_within + LEASE_MARGIN


async def recorded(write: Callable[[], Awaitable[Result]], what: str, deps: Dependencies) -> Result:
    """Run `write` (a unit of work recording a gateway's answer; safe to repeat, since it
    reloads the row and applies the answer only if not yet applied) until it commits, while
    the database is unreachable, for at most `deps.record_outcome_within`. Then the error
    goes to the caller (503); the recovery sweep takes over when the lease ends."""
    deadline = time.monotonic() + deps.record_outcome_within.total_seconds()
    delay = FIRST_RETRY_DELAY_SECONDS
    while True:
        try:
            return await write()
        except ConnectionError as exc:  # DatabaseUnavailable and its kin
            if time.monotonic() + delay > deadline:
                logger.error("{}: the gateway's answer could not be recorded: {}", what, exc)
                raise
            logger.warning("{}: recording the gateway's answer again in {:.1f} s", what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LONGEST_RETRY_DELAY_SECONDS)
