"""Domain exceptions. Each says its HTTP status; the class name becomes the problem type
(InvalidTransition -> /problems/invalid-transition), keyword arguments extension members
(billing_common.errors)."""

from __future__ import annotations

from typing import Any

from billing_common.errors import DomainError


class InvoiceError(DomainError):
    """Base class of every invoice rule violation."""


class InvoiceNotFound(InvoiceError):
    status = 404

    def __init__(self, invoice_id: str) -> None:
        super().__init__(f"no invoice {invoice_id!r}", invoice_id=invoice_id)


class InvalidTransition(InvoiceError):
    """The requested status change is not allowed from the invoice's current status."""

    status = 409

    def __init__(self, current: str, target: str, why: str | None = None) -> None:
        message = f"an invoice in status {current!r} cannot become {target!r}"
        super().__init__(
            f"{message}: {why}" if why else message, current_status=current, target_status=target
        )


class InvalidInvoice(InvoiceError):
    """The invoice request breaks a domain rule that a schema cannot express."""

    status = 422


class IdempotencyConflict(InvoiceError):
    """The Idempotency-Key was used before with a different request body."""

    status = 409

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request",
            idempotency_key=key,
        )


class ConcurrentModification(InvoiceError):
    """Another transaction changed the invoice between read and write; retry the request."""

    status = 409

    def __init__(self, invoice_id: str) -> None:
        super().__init__(
            f"invoice {invoice_id!r} was changed concurrently; retry", invoice_id=invoice_id
        )


class CreationAbandoned(InvoiceError):
    """An earlier attempt with this Idempotency-Key was abandoned and its discount given back
    while this one ran: nothing was stored; send the request again (409)."""

    status = 409

    def __init__(self, key: str) -> None:
        super().__init__(
            f"an earlier attempt with Idempotency-Key {key!r} was abandoned and its discount "
            "released meanwhile; nothing was stored, retry the request",
            idempotency_key=key,
        )


class PeerRejected(InvoiceError):
    """A peer service refused the request for a reason the client can act on (unknown
    jurisdiction, coupon not applicable): passed on as 422 with the peer's detail."""

    status = 422

    def __init__(
        self, peer: str, peer_status: int, problem_type: str | None, detail: str, **extra: Any
    ) -> None:
        super().__init__(
            detail, peer=peer, peer_status=peer_status, peer_type=problem_type, **extra
        )
        self.peer = peer
        self.peer_status = peer_status
        self.peer_problem_type = problem_type


class CouponNotApplicable(InvoiceError):
    """A coupon the client asked for cannot apply; the invoice is not created without it."""

    status = 422

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"coupon {code!r} cannot be applied: {reason}", code=code, reason=reason)


class PeerContractViolation(InvoiceError):
    """A peer answered something the contract does not allow (bad shape, totals that do not
    add up). Our side cannot proceed safely: 502."""

    status = 502


class PdfUnavailable(InvoiceError):
    """PDF rendering is not possible on this machine (WeasyPrint's system libraries are
    missing): 503."""

    status = 503
    retry_after_seconds = 10  # answered as Retry-After


class PdfRenderTimeout(InvoiceError):
    """The PDF took longer than the render timeout; the render was stopped. Retrying later
    may succeed when the renderers are less busy."""

    status = 503
    retry_after_seconds = 10


class PdfRenderBusy(InvoiceError):
    """This tenant already has as many PDF renders running as it may have at once."""

    status = 503
    retry_after_seconds = 2


class InvalidSeller(InvoiceError):
    """A seller's data breaks a rule: an invalid VAT id, IBAN or BIC (with the checker's
    reason), a bad country, series or language: 422."""

    status = 422


class SellerNotFound(InvoiceError):
    status = 404

    def __init__(self, seller_id: str) -> None:
        super().__init__(f"no seller {seller_id!r}", seller_id=seller_id)


class SellerInactive(InvoiceError):
    """The seller is deactivated: it issues no new invoices (422)."""

    status = 422

    def __init__(self, seller_id: str) -> None:
        super().__init__(
            f"seller {seller_id!r} is deactivated and issues no new invoices", seller_id=seller_id
        )


class SellerInUse(InvoiceError):
    """A seller that invoices name cannot be deleted (their history needs it): deactivate it."""

    status = 409

    def __init__(self, seller_id: str) -> None:
        super().__init__(
            f"seller {seller_id!r} is named by invoices and cannot be deleted; "
            "deactivate it instead (PATCH active=false)",
            seller_id=seller_id,
        )


class CreditExceedsInvoiced(InvoiceError):
    """A credit note would credit more than was invoiced (per line or in total, net or tax)
    and not yet credited, or more than can be applied or refunded: 422."""

    status = 422


class InvoiceNotCreditable(InvoiceError):
    """Only an issued invoice is credited: a draft is still changed, a void one owes nothing
    (409)."""

    status = 409

    def __init__(self, invoice_id: str, status: str) -> None:
        super().__init__(
            f"invoice {invoice_id!r} is {status}: only an issued invoice can be credited",
            invoice_id=invoice_id,
            invoice_status=status,
        )


class CreditNoteNotFound(InvoiceError):
    status = 404

    def __init__(self, credit_note_id: str) -> None:
        super().__init__(f"no credit note {credit_note_id!r}", credit_note_id=credit_note_id)


class UnsupportedLanguage(InvalidInvoice):
    """A document language the platform has no translations for (or a tag that is not one):
    422, listing the supported languages."""

    def __init__(self, tag: str, supported: tuple[str, ...]) -> None:
        super().__init__(
            f"language {tag!r} is not supported for documents: use one of "
            f"{', '.join(supported)}, optionally with a region (de-CH, fr-BE, en-GB)",
            language=tag,
            supported_languages=list(supported),
        )
