"""Creating an invoice: discount first (with coupons, the redemption itself; otherwise a quote
and, if it finds a discount, the redemption), then tax on the discounted lines, then one write.

Peers are called outside any transaction (no database connection is held while waiting on
the network); the invoice, its history and its outbox events are written in one transaction
at the end, so a failure anywhere before leaves nothing behind. A creation that redeemed a
discount is recorded as pending until its invoice is stored; one that never stores it is
given back (at once, or later by the sweeper: release_abandoned).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from loguru import logger

from billing_common.uniqueness import UniqueViolation
from invoice_service.domain.errors import (
    CouponNotApplicable,
    CreationAbandoned,
    IdempotencyConflict,
)
from invoice_service.domain.model import Customer, Invoice, PriceMode
from invoice_service.domain.numbering import DEFAULT_SERIES
from invoice_service.domain.pricing import (
    DiscountResult,
    LineDraft,
    TaxResult,
    allocate_discount,
    build_lines,
    check_discount,
    line_id,
)
from invoice_service.domain.sellers import DocumentType, SellerSnapshot
from invoice_service.service_layer import events
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import (
    AbandonedCreations,
    PendingCreation,
    TaxLineRequest,
)
from invoice_service.service_layer.sellers import seller_for_new_invoice

# Invoice ids derive from (tenant, Idempotency-Key): a retried request sends the peers the
# very same reference, so the discount service recognises its redemption as a replay.
INVOICE_ID_NAMESPACE = uuid.UUID("6f1c3f56-8a7e-4c51-9a53-1c1e2b0e7a10")


@dataclass(frozen=True, slots=True)
class CreateInvoice:
    tenant: str
    actor: str
    idempotency_key: str
    # Fingerprint of the normalised request body: same key + other body -> conflict.
    request_hash: str
    customer: Customer
    currency: str
    lines: tuple[LineDraft, ...]
    coupon_codes: tuple[str, ...] = ()
    price_mode: PriceMode = PriceMode.EXCLUSIVE
    # None: the seller's invoice series (DEFAULT_SERIES without a seller).
    series: str | None = None
    due_days: int = 30
    memo: str | None = None
    # None: the tenant's default seller, if it has one.
    seller_id: str | None = None
    # The customer's document language, normalised (domain/languages.py); None: the seller's.
    language: str | None = None


@dataclass(frozen=True, slots=True)
class CreateResult:
    invoice: Invoice
    created: bool  # False: an earlier request with this Idempotency-Key made it


def invoice_id_for(tenant: str, idempotency_key: str) -> str:
    return str(uuid.uuid5(INVOICE_ID_NAMESPACE, f"{tenant}\n{idempotency_key}"))


def redemption_key(tenant: str, idempotency_key: str) -> str:
    return f"invoice:{tenant}:{idempotency_key}"


async def create_invoice(cmd: CreateInvoice, deps: Dependencies) -> CreateResult:
    now = deps.clock()
    invoice_id = invoice_id_for(cmd.tenant, cmd.idempotency_key)
    drafts = list(cmd.lines)
    subtotals = [draft.subtotal(cmd.currency) for draft in drafts]
    amount = sum(subtotals, Decimal(0))
    pending = PendingCreation(
        tenant_id=cmd.tenant,
        invoice_id=invoice_id,
        redemption_key=redemption_key(cmd.tenant, cmd.idempotency_key),
        started_at=now,
    )

    # The idempotency lookup and, for a new request, the pending record in one transaction.
    # From the pending record on the peers keep records for this invoice (the tax
    # calculation, the redemption that spends coupon uses): if the invoice is not stored in
    # the end, they are given back — at once when this request fails, by the sweeper
    # (release_abandoned) when the process died. Written before the quote, which has no side
    # effect, so that it shares the lookup's transaction: a failed quote only drops it.
    begun = seller_unread = False
    try:
        async with deps.uow(cmd.tenant) as uow:
            if cmd.seller_id is None:
                # The tenant's default seller (or none) never refuses a creation: the lookup
                # and the pending record go at once (one statement on PostgreSQL), the
                # seller is read after them.
                stored, begun = await uow.start_creation(cmd.idempotency_key, pending)
                if stored is not None:
                    return _replay(stored.invoice, stored.request_hash, cmd)
                seller_unread = True
                seller = await seller_for_new_invoice(uow, None)
                seller_unread = False
            else:
                stored = await uow.invoices.find_by_idempotency_key(cmd.idempotency_key)
                if stored is not None:
                    return _replay(stored.invoice, stored.request_hash, cmd)
                # A named seller may be refused: checked first, so that nothing is written.
                seller = await seller_for_new_invoice(uow, cmd.seller_id)
                begun = await uow.pending.begin(pending)
            earlier = None if begun else await uow.pending.get(invoice_id)
            await uow.commit()
    except Exception:
        if begun and seller_unread:
            # The seller could not be read (the database): as when a quote fails, nothing
            # was asked of the peers yet, so the record is only dropped.
            await _drop_pending(deps, pending)
        raise
    if not begun:
        await _take_over(deps, cmd, pending, earlier)
    snapshot = seller.snapshot() if seller else None
    series = cmd.series or (seller.series_for(DocumentType.INVOICE) if seller else DEFAULT_SERIES)

    quoted: DiscountResult | None = None
    try:
        if not cmd.coupon_codes:
            # Only automatic policies can apply: a quote (no side effect) says whether there
            # is anything to redeem, so an invoice without a discount leaves no redemption.
            quoted = await _quote(deps, cmd, invoice_id, amount)
        elif amount == 0:
            # Nothing to discount; a coupon asked for here could never apply.
            raise CouponNotApplicable(cmd.coupon_codes[0], "the invoice amount is zero")
    except Exception:
        await _drop_pending(deps, pending)  # nothing to give back: the peers keep nothing
        raise
    try:
        # 1. Discount first, on the subtotal. With coupons the redemption is the quote: it
        # answers what it applied, and a refusal is given back like any later failure.
        discount = quoted or _NO_DISCOUNT
        if quoted is None or quoted.total_discount > 0:
            discount = await _redeem(deps, cmd, pending, amount)
        # 2. Tax on the discounted lines.
        shares, tax = await _tax_after_discount(
            cmd, deps, invoice_id, now, subtotals, discount, snapshot
        )
        lines = build_lines(drafts, shares, tax, currency=cmd.currency, price_mode=cmd.price_mode)
        invoice = Invoice.create(
            id=invoice_id,
            tenant_id=cmd.tenant,
            customer=cmd.customer,
            currency=cmd.currency,
            price_mode=cmd.price_mode,
            series=series,
            lines=lines,
            discounts=list(discount.applied),
            due_days=cmd.due_days,
            at=now,
            actor=cmd.actor,
            tax_calculation_id=tax.calculation_id,
            discount_redemption_id=discount.redemption_id,
            memo=cmd.memo,
            seller=snapshot,
            tax_treatment=tax.treatment,
            tax_breakdown=tax.breakdown,
            requested_language=cmd.language,
            seller_language=seller.language if seller else None,
        )
        return await _store(cmd, deps, invoice, pending)
    except Exception:
        await _give_back_safely(deps, pending)
        raise


async def _store(
    cmd: CreateInvoice, deps: Dependencies, invoice: Invoice, pending: PendingCreation
) -> CreateResult:
    """4. Invoice, history, the created event and the end of the pending record at once
    (one transaction; one statement on PostgreSQL): either the invoice exists and keeps its
    redemption, or neither does."""
    try:
        async with deps.uow(cmd.tenant) as uow:
            stored_now = await uow.finish_creation(
                invoice,
                idempotency_key=cmd.idempotency_key,
                request_hash=cmd.request_hash,
                event=events.created(invoice),
                aggregate=events.aggregate(invoice),
            )
    except UniqueViolation as exc:
        # A concurrent request with the same key won the insert: answer as its replay.
        return await _replay_stored(deps, cmd, otherwise=exc)
    if not stored_now:
        # The pending record was gone: a concurrent request with this key stored the
        # invoice (answer as its replay), or the sweeper judged this attempt abandoned and
        # is giving the discount back.
        return await _replay_stored(deps, cmd, otherwise=CreationAbandoned(cmd.idempotency_key))
    return CreateResult(invoice, created=True)


async def _replay_stored(
    deps: Dependencies, cmd: CreateInvoice, *, otherwise: Exception
) -> CreateResult:
    """The stored invoice of this Idempotency-Key as a replay; `otherwise` if there is none."""
    async with deps.uow(cmd.tenant) as uow:
        stored = await uow.invoices.find_by_idempotency_key(cmd.idempotency_key)
    if stored is None:
        raise otherwise
    return _replay(stored.invoice, stored.request_hash, cmd)


async def _take_over(
    deps: Dependencies,
    cmd: CreateInvoice,
    pending: PendingCreation,
    earlier: PendingCreation | None,
) -> None:
    """An earlier attempt with this key is being given back (its release failed, or the
    sweeper is at it): finish that first, so this attempt starts from nothing (503 if a peer
    is down), then record this one."""
    if earlier is not None:
        await give_back(deps, earlier)
    async with deps.uow(cmd.tenant) as uow:
        if not await uow.pending.begin(pending):
            raise CreationAbandoned(cmd.idempotency_key)
        await uow.commit()


async def give_back(deps: Dependencies, pending: PendingCreation) -> bool:
    """Release the redemption and discard the tax calculations of a creation that did not
    store its invoice; True if it did. Safe to repeat and to run from several places at
    once: the record is marked `releasing` first (a late final write then refuses to store
    the invoice), both peer calls are idempotent, and an invoice that does exist keeps its
    redemption and calculations."""
    async with deps.uow(pending.tenant_id) as uow:
        current = await uow.pending.get(pending.invoice_id, for_update=True)
        if current is None:
            return False  # the invoice was stored, or the release is done
        if await uow.invoices.stamp(pending.invoice_id) is not None:
            await uow.pending.remove(pending.invoice_id)
            await uow.commit()
            return False
        if not current.releasing:
            await uow.pending.put(replace(current, releasing=True))
            await uow.commit()
    await deps.discounts.release(tenant=pending.tenant_id, idempotency_key=current.redemption_key)
    await deps.tax.discard(tenant=pending.tenant_id, reference=pending.invoice_id)
    async with deps.uow(pending.tenant_id) as uow:
        await uow.pending.remove(pending.invoice_id)
        await uow.commit()
    return True


async def _drop_pending(deps: Dependencies, pending: PendingCreation) -> None:
    try:
        async with deps.uow(pending.tenant_id) as uow:
            await uow.pending.remove(pending.invoice_id, unless_releasing=True)
            await uow.commit()
    except Exception as exc:  # noqa: BLE001 - the sweeper removes it; the request's error wins
        logger.warning("could not drop the pending creation {} yet: {}", pending.invoice_id, exc)


async def _give_back_safely(deps: Dependencies, pending: PendingCreation) -> None:
    try:
        await give_back(deps, pending)
    except Exception as exc:  # noqa: BLE001 - the sweeper retries; the request's error wins
        logger.warning("could not release the redemption of {} yet: {}", pending.invoice_id, exc)


async def release_abandoned(
    deps: Dependencies, abandoned: AbandonedCreations, *, older_than: timedelta, limit: int = 100
) -> int:
    """Give back the redemptions (and discard the tax calculations) of creations started
    more than `older_than` ago that never stored their invoice (the process died, or the
    release failed before); returns how many were given back. `older_than` must exceed the
    longest a creation request can take."""
    released = 0
    for pending in await abandoned.older_than(deps.clock() - older_than, limit):
        try:
            released += await give_back(deps, pending)
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            logger.warning("releasing the redemption of {} failed: {}", pending.invoice_id, exc)
    return released


_NO_DISCOUNT = DiscountResult(total_discount=Decimal(0), applied=())


async def _redeem(
    deps: Dependencies, cmd: CreateInvoice, pending: PendingCreation, amount: Decimal
) -> DiscountResult:
    """Redeem (spending the coupons' uses) and check what it applied. The caller gives the
    redemption back if this or anything after it fails."""
    redeemed = await deps.discounts.redeem(
        tenant=cmd.tenant,
        idempotency_key=pending.redemption_key,
        customer=cmd.customer,
        currency=cmd.currency,
        amount=amount,
        coupon_codes=cmd.coupon_codes,
        reference=pending.invoice_id,
    )
    # The client asked for these coupons: creating the invoice without them would bill more
    # than expected. Refuse with the peer's reason (the redemption is given back).
    if redeemed.rejected:
        code, reason = redeemed.rejected[0]
        raise CouponNotApplicable(code, reason)
    check_discount(redeemed, amount, cmd.currency)
    if redeemed.total_discount == 0:
        # The coupons applied but took nothing off (rounding): as when a quote says so, no
        # redemption is kept and no use is spent.
        await deps.discounts.release(tenant=cmd.tenant, idempotency_key=pending.redemption_key)
        return replace(redeemed, redemption_id=None)
    return redeemed


def _replay(invoice: Invoice, request_hash: str, cmd: CreateInvoice) -> CreateResult:
    if request_hash != cmd.request_hash:
        raise IdempotencyConflict(cmd.idempotency_key)
    return CreateResult(invoice, created=False)


async def _quote(
    deps: Dependencies, cmd: CreateInvoice, invoice_id: str, amount: Decimal
) -> DiscountResult:
    if amount == 0:
        return _NO_DISCOUNT
    quote = await deps.discounts.quote(
        tenant=cmd.tenant,
        customer=cmd.customer,
        currency=cmd.currency,
        amount=amount,
        coupon_codes=cmd.coupon_codes,
        reference=invoice_id,
    )
    # The client asked for these coupons: creating the invoice without them would bill
    # more than expected, and redeeming would fail anyway. Refuse with the peer's reason.
    if quote.rejected:
        code, reason = quote.rejected[0]
        raise CouponNotApplicable(code, reason)
    check_discount(quote, amount, cmd.currency)
    return quote


async def _tax_after_discount(
    cmd: CreateInvoice,
    deps: Dependencies,
    invoice_id: str,
    now: datetime,
    subtotals: list[Decimal],
    discount: DiscountResult,
    seller: SellerSnapshot | None,
) -> tuple[list[Decimal], TaxResult]:
    """Spread the discount over the lines and have tax computed on what remains of each.
    Each line goes to the tax service as quantity 1 at its discounted amount: the tax base
    is exact to the cent, while the invoice line keeps its own quantity and unit price."""
    shares = allocate_discount(subtotals, discount.total_discount, cmd.currency)
    requests = [
        TaxLineRequest(
            id=line_id(position),
            description=draft.description,
            unit_price=subtotal - share,
            quantity=Decimal(1),
            category=draft.category,
        )
        for position, (draft, subtotal, share) in enumerate(
            zip(cmd.lines, subtotals, shares, strict=True), 1
        )
    ]
    tax = await deps.tax.calculate(
        tenant=cmd.tenant,
        currency=cmd.currency,
        customer=cmd.customer,
        price_mode=cmd.price_mode,
        on=now.date(),
        reference=invoice_id,
        lines=requests,
        seller=seller,
    )
    return shares, tax
