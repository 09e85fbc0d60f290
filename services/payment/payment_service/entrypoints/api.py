"""HTTP API of the payment service: payments, refunds, payable invoices, webhooks, sandbox."""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from billing_common import json_body
from billing_common.idempotency import check_idempotency_key
from billing_common.openapi import idempotency_key_header
from billing_common.problems import Problem
from billing_common.web import StrictJsonRoute
from payment_service.domain.errors import MalformedWebhook, UnknownGateway
from payment_service.domain.model import PaymentStatus
from payment_service.domain.signatures import sign, verify
from payment_service.entrypoints.deps import Deps, Reader, Refunder, Writer
from payment_service.entrypoints.schemas import (
    PayableInvoiceOut,
    PaymentOut,
    PaymentPage,
    PayRequest,
    RefundRequest,
    RefundResponse,
    SandboxConfirmOut,
    SandboxConfirmRequest,
    WebhookAck,
    payable_invoice_out,
    payment_out,
    refund_out,
)
from payment_service.service_layer import payments, queries, refunds, webhooks
from payment_service.service_layer.payments import PayCommand

router = APIRouter(tags=["payments"], route_class=StrictJsonRoute)
webhook_router = APIRouter(tags=["webhooks"], route_class=StrictJsonRoute)
sandbox_router = APIRouter(tags=["sandbox"], route_class=StrictJsonRoute)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


IdempotencyKeyHeader = Annotated[
    str | None,
    idempotency_key_header(
        "Required. The same key with the same body returns the first result; "
        "with a different body it is a 409."
    ),
]


def _idempotency_key(value: str | None) -> str:
    return check_idempotency_key(
        value, why="a fresh one (a UUID, say) per request lets it be retried safely"
    )


def _replayed(response: Response, created: bool) -> None:
    response.status_code = 201 if created else 200
    if not created:
        response.headers["Idempotent-Replayed"] = "true"


@router.post(
    "/v1/payments",
    response_model=PaymentOut,
    status_code=201,
    summary="Pay an invoice (Idempotency-Key required)",
    responses={
        200: {"model": PaymentOut, "description": "Replay of an earlier request with the same key"},
        404: {"description": "the invoice is not known"},
        409: {"description": "the invoice is not payable, or the key was used for another body"},
        422: {"description": "invalid request, amount over what is outstanding"},
        502: {"description": "the gateway answered outside its contract"},
    },
)
async def create_payment(
    body: PayRequest,
    response: Response,
    deps: Deps,
    principal: Writer,
    idempotency_key: IdempotencyKeyHeader = None,
) -> PaymentOut:
    key = _idempotency_key(idempotency_key)
    result = await payments.pay(
        principal.tenant,
        key,
        PayCommand(
            invoice_id=body.invoice_id,
            payment_method=body.payment_method,
            gateway=body.gateway,
            amount=body.amount,
            currency=body.currency,
        ),
        deps,
    )
    _replayed(response, result.created)
    return payment_out(result.payment)


@router.get("/v1/payments", response_model=PaymentPage, summary="List payments, newest first")
async def list_payments(
    deps: Deps,
    principal: Reader,
    invoice_id: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    status: PaymentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> PaymentPage:
    items, total = await queries.list_payments(
        principal.tenant, deps, invoice_id=invoice_id, status=status, limit=limit, offset=offset
    )
    return PaymentPage(
        items=[payment_out(p) for p in items], total=total, limit=limit, offset=offset
    )


@router.get(
    "/v1/payments/{payment_id}",
    response_model=PaymentOut,
    summary="One payment with its status history and refunds",
)
async def get_payment(
    deps: Deps,
    principal: Reader,
    payment_id: Annotated[str, Path(max_length=64)],
) -> PaymentOut:
    return payment_out(await queries.get_payment(principal.tenant, payment_id, deps))


@router.post(
    "/v1/payments/{payment_id}/refunds",
    response_model=RefundResponse,
    status_code=201,
    summary="Refund a payment, fully or partly (Idempotency-Key required)",
    responses={
        200: {
            "model": RefundResponse,
            "description": "Replay of an earlier request with the same key",
        },
        409: {"description": "the payment is not refundable (yet), or the key was reused"},
        422: {"description": "invalid request, amount over what is refundable"},
    },
)
async def create_refund(
    response: Response,
    deps: Deps,
    principal: Refunder,
    payment_id: Annotated[str, Path(max_length=64)],
    body: RefundRequest | None = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> RefundResponse:
    key = _idempotency_key(idempotency_key)
    amount = body.amount if body is not None else None
    outcome = await refunds.refund(principal.tenant, payment_id, key, amount, deps)
    _replayed(response, outcome.created)
    return RefundResponse(refund=refund_out(outcome.refund), payment=payment_out(outcome.payment))


@router.get(
    "/v1/payable-invoices/{invoice_id}",
    response_model=PayableInvoiceOut,
    summary="What the payment service knows about an invoice",
)
async def get_payable_invoice(
    deps: Deps,
    principal: Reader,
    invoice_id: Annotated[str, Path(max_length=64)],
) -> PayableInvoiceOut:
    return payable_invoice_out(await queries.payable_invoice(principal.tenant, invoice_id, deps))


@webhook_router.post(
    "/v1/webhooks/{gateway}",
    response_model=WebhookAck,
    summary="Signed gateway webhooks (Billing-Signature; Stripe-Signature for stripe)",
)
async def receive_webhook(
    request: Request, deps: Deps, gateway: Annotated[str, Path(max_length=32)]
) -> WebhookAck:
    try:
        adapter = deps.gateways.get(gateway)
    except UnknownGateway as exc:
        raise Problem(404, "Unknown gateway", str(exc), problem_type="unknown-gateway") from exc
    secret = deps.webhooks.secrets.get(gateway)
    if not secret:
        raise Problem(
            503,
            "Webhook not configured",
            f"no webhook secret (webhook-secret-{gateway}) is configured for {gateway}",
            problem_type="webhook-not-configured",
        )
    # The signature covers the exact bytes received, so verify before parsing anything.
    raw = await request.body()
    header = request.headers.get("billing-signature")
    if header is None and gateway == "stripe":
        header = request.headers.get("stripe-signature")
    verify(
        header,
        raw,
        [secret],
        now=int(time.time()),
        tolerance_seconds=deps.webhooks.tolerance_seconds,
    )
    try:
        event = json_body.loads(raw)
    except ValueError as exc:
        raise MalformedWebhook("the webhook body is not valid JSON") from exc
    if not isinstance(event, dict):
        raise MalformedWebhook("the webhook body must be a JSON object")
    outcome = await webhooks.handle_webhook(gateway, adapter.parse_webhook(event), deps)
    return WebhookAck(
        duplicate=outcome.duplicate, effect=outcome.effect, payment_id=outcome.payment_id
    )


@sandbox_router.post(
    "/v1/sandbox/payments/{gateway_reference}/confirm",
    response_model=SandboxConfirmOut,
    summary="Sandbox: settle a pending (tok_async) payment by sending the signed webhook",
)
async def confirm_sandbox_payment(
    request: Request,
    deps: Deps,
    principal: Writer,
    gateway_reference: Annotated[str, Path(max_length=255)],
    body: SandboxConfirmRequest | None = None,
) -> SandboxConfirmOut:
    body = body or SandboxConfirmRequest()
    sandbox = deps.sandbox
    if sandbox is None:
        raise Problem(
            503,
            "Sandbox not configured",
            "this service has no sandbox gateway to confirm payments with",
            problem_type="sandbox-not-configured",
        )
    payment = await queries.payment_by_reference(
        principal.tenant, sandbox.name, gateway_reference, deps
    )
    if payment.status is not PaymentStatus.PENDING:
        raise Problem(
            409,
            "Payment not pending",
            f"payment {payment.id} is {payment.status}; only pending payments can be confirmed",
            problem_type="payment-not-pending",
        )
    secret = deps.webhooks.secrets.get(sandbox.name)
    if not secret:
        raise Problem(
            503,
            "Webhook not configured",
            "no webhook-secret-sandbox is configured",
            problem_type="webhook-not-configured",
        )
    now = int(time.time())
    raw = json.dumps(
        sandbox.settlement_event(
            reference=gateway_reference,
            outcome=body.outcome,
            created=now,
            failure_code=body.failure_code,
        )
    ).encode()
    # Through our own HTTP stack, exactly as the gateway would: signature checks included.
    # httpx is imported here, by the sandbox alone: the service itself calls out on aiohttp.
    import httpx

    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payment.sandbox") as client:
        answer = await client.post(
            f"/v1/webhooks/{sandbox.name}",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "Billing-Signature": sign(secret, raw, now),
            },
        )
    if answer.status_code != 200:
        raise Problem(
            502,
            "Sandbox webhook rejected",
            f"the webhook endpoint answered {answer.status_code}: {answer.text[:300]}",
            problem_type="sandbox-webhook-rejected",
        )
    settled = await queries.get_payment(principal.tenant, payment.id, deps)
    return SandboxConfirmOut(
        webhook=WebhookAck.model_validate(answer.json()), payment=payment_out(settled)
    )
