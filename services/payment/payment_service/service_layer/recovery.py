"""The recovery sweep: attempts whose lease ran out with no outcome recorded (the process
died, the commit was cut, the database stayed away longer than outcomes.recorded waits) are
resumed with the same gateway idempotency key, so the gateway answers with what it did the
first time. Without it such a payment stayed pending until the client happened to send its
request again, possibly with the card charged meanwhile."""

from __future__ import annotations

from loguru import logger

from payment_service.service_layer.dependencies import Dependencies
from payment_service.service_layer.payments import resume_payment
from payment_service.service_layer.ports import StalledAttempts
from payment_service.service_layer.refunds import resume_refund


async def resume_stalled(deps: Dependencies, stalled: StalledAttempts, limit: int = 100) -> int:
    """Resume every payment and refund attempt whose lease ran out with no outcome; returns
    how many were resumed. One that fails again is logged and left for the next sweep."""
    now = deps.clock()
    resumed = 0
    for location in await stalled.payments(now, limit):
        try:
            payment = await resume_payment(location.tenant, location.payment_id, deps)
        except Exception as exc:  # noqa: BLE001 - one payment must not stop the sweep
            logger.warning("resuming payment {} failed: {}", location.payment_id, exc)
            continue
        resumed += 1
        logger.info("resumed stalled payment {}: {}", payment.id, payment.status)
    for location in await stalled.refunds(now, limit):
        assert location.refund_id is not None
        try:
            await resume_refund(location.tenant, location.payment_id, location.refund_id, deps)
        except Exception as exc:  # noqa: BLE001 - see above
            logger.warning("resuming refund {} failed: {}", location.refund_id, exc)
            continue
        resumed += 1
        logger.info("resumed stalled refund {}", location.refund_id)
    return resumed
