"""Domain errors. Each says its HTTP status; the class name names the problem type
(`InvoiceNotPayable` -> `/problems/invoice-not-payable`), keyword arguments extension
members (billing_common.errors)."""

from __future__ import annotations

from billing_common.errors import DomainError


class PaymentDomainError(DomainError):
    """Base of the payment service's rule violations."""


class InvoiceNotPayable(PaymentDomainError):
    """The invoice is unknown here, still a draft, or void (409)."""

    status = 409


class NothingOutstanding(PaymentDomainError):
    """The invoice is fully paid or covered by payments in flight (409)."""

    status = 409


class InvalidAmount(PaymentDomainError):
    """Not positive, or finer than the currency's minor unit (422)."""

    status = 422


class AmountExceedsOutstanding(PaymentDomainError):
    """A payment larger than what is still owed (422)."""

    status = 422


class AmountExceedsRefundable(PaymentDomainError):
    """A refund larger than what was captured and not yet refunded (422)."""

    status = 422


class PaymentCurrencyMismatch(PaymentDomainError):
    """A payment in another currency than the invoice's (422)."""

    status = 422


class PaymentNotRefundable(PaymentDomainError):
    """Only captured payments can be refunded (409)."""

    status = 409


class InvalidStatusTransition(PaymentDomainError):
    """A change the payment status machine does not allow (409)."""

    status = 409


class PaymentNotFound(PaymentDomainError):
    """No such payment for this tenant (404)."""

    status = 404


class PayableInvoiceNotFound(PaymentDomainError):
    """The service has not heard of this invoice (404)."""

    status = 404


class IdempotencyKeyReused(PaymentDomainError):
    """An Idempotency-Key seen before with a different request (409)."""

    status = 409


class UnknownGateway(PaymentDomainError):
    """The named gateway does not exist or is not configured here (422)."""

    status = 422


class InvalidSignatureHeader(PaymentDomainError):
    """A webhook signature header that is missing or cannot be parsed (400)."""

    status = 400


class SignatureMismatch(PaymentDomainError):
    """No signature in the header matches the body (401)."""

    status = 401


class SignatureExpired(PaymentDomainError):
    """The signed timestamp is outside the replay window (401)."""

    status = 401


class MalformedWebhook(PaymentDomainError):
    """A correctly signed webhook whose body is not an event we can read (400)."""

    status = 400
