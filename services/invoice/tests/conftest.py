"""Fixtures for the invoice service's tests.

The tax and discount services are replaced by a *test peer*: a real FastAPI app per peer that
implements the HTTP contract of docs/api-contracts.md with deterministic rules, registered in
the EmbeddedPlatform under "tax" and "discount". The invoice service reaches them through its
real ServiceInvoker (AsgiServiceInvoker), bearer tokens and problem documents included.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from billing_common.auth import ALL_SCOPES, AuthError, TokenService
from billing_common.events import CloudEvent
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_common.testing import ServiceMigrations
from invoice_service.bootstrap import MIGRATIONS_DIR, create_app

CENT = Decimal("0.01")

# (country, region) -> category -> [(rule name, rate)]
TAX_RULES: dict[tuple[str, str | None], dict[str, list[tuple[str, Decimal]]]] = {
    ("DE", None): {
        "standard": [("DE VAT standard", Decimal("0.19"))],
        "reduced": [("DE VAT reduced", Decimal("0.07"))],
        "zero": [("DE VAT zero", Decimal("0"))],
    },
    ("CA", "QC"): {
        "standard": [("CA GST", Decimal("0.05")), ("QC QST", Decimal("0.09975"))],
    },
}
COUPONS: dict[str, tuple[str, str, Decimal]] = {
    # code -> (name, kind percent|fixed, value)
    "WELCOME10": ("Welcome 10%", "percent", Decimal("0.10")),
    "FIVEOFF": ("5 off", "fixed", Decimal("5.00")),
}
REJECTED_COUPONS = {"OLD": "expired", "GONE": "exhausted"}
USER_TYPE_RATES = {"premium": ("Premium customers 5%", Decimal("0.05"))}


def _problem(status: int, slug: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {
            "type": f"/problems/{slug}",
            "title": slug.replace("-", " ").capitalize(),
            "status": status,
            "detail": detail,
            **extra,
        },
        status_code=status,
        media_type="application/problem+json",
    )


def _amount(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError("amounts must be decimal strings")
    return Decimal(value)


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _s(value: Decimal) -> str:
    return format(value, "f")


def _breakdown(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (VAT category, rate), summing the lines exactly."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        key = (line["vat_category"], line["rate"])
        entry = groups.setdefault(
            key,
            {
                "vat_category": key[0],
                "rate": key[1],
                "taxable_amount": Decimal(0),
                "tax_amount": Decimal(0),
                "exemption_reason": line["vat_exemption_reason"],
                "exemption_reason_code": line["vat_exemption_reason_code"],
            },
        )
        entry["taxable_amount"] += Decimal(line["net"])
        entry["tax_amount"] += Decimal(line["tax"])
    return [
        {**e, "taxable_amount": _s(e["taxable_amount"]), "tax_amount": _s(e["tax_amount"])}
        for e in groups.values()
    ]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Jurisdiction(_Strict):
    country: str
    region: str | None = None


class _TaxCustomer(_Strict):
    id: str
    tax_status: str = "standard"
    tax_id: str | None = None
    # Issue 12 (docs/api-contracts.md): optional, sent only when the invoice has them.
    country: str | None = None
    region: str | None = None
    kind: str | None = None
    exemption_certificate: str | None = None


class _TaxSeller(_Strict):
    country: str
    region: str | None = None
    vat_id: str | None = None


EU = {"AT", "BE", "DE", "ES", "FR", "IT", "NL", "PL"}
REVERSE_CHARGE_REASON = "Reverse charge"


class _TaxLine(_Strict):
    id: str
    description: str
    unit_price: str
    quantity: str
    category: str


class _TaxRequest(_Strict):
    currency: str
    jurisdiction: _Jurisdiction
    customer: _TaxCustomer
    seller: _TaxSeller | None = None
    price_mode: str = "exclusive"
    date: str | None = None
    reference: str | None = None
    lines: list[_TaxLine]


class _DiscountCustomer(_Strict):
    id: str
    type: str | None = None


class _DiscountRequest(_Strict):
    customer: _DiscountCustomer
    currency: str
    amount: str
    coupon_codes: list[str] = []
    reference: str | None = None


@dataclass
class Peers:
    """Deterministic tax and discount services, plus switches and call logs for tests."""

    tokens: TokenService | None = None
    tax_down: bool = False
    discount_down: bool = False
    # A redemption that differs from the quote (as if a coupon changed in between).
    redeem_rate_override: Decimal | None = None
    tax_calls: list[dict[str, Any]] = field(default_factory=list)
    # The same requests with only the fields the invoice service sent (no peer defaults).
    tax_sent: list[dict[str, Any]] = field(default_factory=list)
    quote_calls: list[dict[str, Any]] = field(default_factory=list)
    redeem_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    redemptions: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    tenants_seen: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)  # tax references discarded

    def _authorize(self, authorization: str | None, scope: str) -> JSONResponse | None:
        if self.tokens is None or not authorization or not authorization.startswith("Bearer "):
            return _problem(401, "unauthorized", "bearer token required")
        try:
            principal = self.tokens.verify(authorization.removeprefix("Bearer "))
        except AuthError as exc:
            return _problem(401, "unauthorized", str(exc))
        if scope not in principal.scopes or principal.subject != "svc:invoice":
            return _problem(403, "insufficient-scope", f"needs {scope}")
        self.tenants_seen.append(principal.tenant)
        return None

    # ---- tax -----------------------------------------------------------------------------

    def tax_app(self) -> FastAPI:
        app = FastAPI()

        @app.exception_handler(RequestValidationError)
        async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
            return _problem(422, "validation", "invalid request", errors=str(exc.errors()))

        @app.delete("/v1/tax/calculations")
        async def discard(
            reference: str, authorization: Annotated[str | None, Header()] = None
        ) -> Any:
            if self.tax_down:
                return _problem(503, "unavailable", "tax is down")
            if (denied := self._authorize(authorization, "tax:calculate")) is not None:
                return denied
            self.discarded.append(reference)
            return JSONResponse({"discarded": 0})

        @app.post("/v1/tax/calculations")
        async def calculate(
            body: _TaxRequest, authorization: Annotated[str | None, Header()] = None
        ) -> JSONResponse:
            if self.tax_down:
                return _problem(503, "unavailable", "tax is down")
            if (denied := self._authorize(authorization, "tax:calculate")) is not None:
                return denied
            self.tax_calls.append(body.model_dump())
            self.tax_sent.append(body.model_dump(exclude_unset=True))
            rules = TAX_RULES.get((body.jurisdiction.country, body.jurisdiction.region))
            if rules is None:
                return _problem(
                    422,
                    "unknown-jurisdiction",
                    f"no tax rules for {body.jurisdiction.country}/{body.jurisdiction.region}",
                )
            if body.customer.tax_status == "reverse_charge" and not body.customer.tax_id:
                return _problem(422, "validation", "reverse charge needs a tax_id")
            # With a seller the peer answers like the issue-12 engine: an intra-EU supply to
            # a business with a VAT id is reverse charged (category AE), and every line and
            # the breakdown carry their EN 16931 VAT category.
            seller, buyer = body.seller, body.customer
            buyer_country = buyer.country or body.jurisdiction.country
            intra_eu_b2b = (
                seller is not None
                and seller.country in EU
                and buyer_country in EU
                and seller.country != buyer_country
                and buyer.tax_id is not None
                and (buyer.kind or "business") == "business"
            )
            lines = []
            for line in body.lines:
                if line.category not in rules:
                    return _problem(422, "unknown-category", f"unknown category {line.category}")
                amount = _round(_amount(line.unit_price) * _amount(line.quantity))
                exemption = None
                components = rules[line.category]
                if body.customer.tax_status == "exempt":
                    exemption, components = "exempt_customer", []
                elif body.customer.tax_status == "reverse_charge" or intra_eu_b2b:
                    exemption, components = "reverse_charge", []
                total_rate = sum((rate for _, rate in components), Decimal(0))
                if body.price_mode == "inclusive":
                    gross = amount
                    net = _round(gross / (1 + total_rate))
                else:
                    net = amount
                    gross = None
                taxes = []
                for name, rate in components:
                    taxes.append(
                        {
                            "rule_id": hashlib.md5(name.encode()).hexdigest()[:12],
                            "name": name,
                            "rate": _s(rate),
                            "amount": _round(net * rate),
                            "compound": False,
                        }
                    )
                tax = sum((t["amount"] for t in taxes), Decimal(0))
                if gross is not None and taxes:
                    # Inclusive: the components must add up to gross - net exactly.
                    taxes[-1]["amount"] += gross - net - tax
                    tax = gross - net
                gross = net + tax
                answer_line: dict[str, Any] = {
                    "id": line.id,
                    "category": line.category,
                    "net": _s(net),
                    "tax": _s(tax),
                    "gross": _s(gross),
                    "exemption": exemption,
                    "taxes": [{**t, "amount": _s(t["amount"])} for t in taxes],
                }
                if seller is not None:
                    reverse = exemption == "reverse_charge"
                    answer_line |= {
                        "vat_category": "AE" if reverse else ("S" if total_rate else "Z"),
                        "vat_exemption_reason": REVERSE_CHARGE_REASON if reverse else None,
                        "vat_exemption_reason_code": "VATEX-EU-AE" if reverse else None,
                        "rate": _s(total_rate),
                    }
                lines.append(answer_line)
            totals = {
                k: _s(sum((Decimal(line[k]) for line in lines), Decimal(0)))
                for k in ("net", "tax", "gross")
            }
            extra: dict[str, Any] = {}
            if seller is not None:
                extra = {
                    "treatment": "intra_eu_reverse_charge" if intra_eu_b2b else "domestic",
                    "breakdown": _breakdown(lines),
                    "evidence": None,
                }
                for answer_line in lines:
                    answer_line.pop("rate")
            return JSONResponse(
                {
                    **extra,
                    "id": str(uuid.uuid4()),
                    "currency": body.currency,
                    "price_mode": body.price_mode,
                    "jurisdiction": body.jurisdiction.model_dump(),
                    "total_net": totals["net"],
                    "total_tax": totals["tax"],
                    "total_gross": totals["gross"],
                    "lines": lines,
                    "created_at": datetime.now(UTC).isoformat(),
                },
                status_code=201,
            )

        return app

    # ---- discount ------------------------------------------------------------------------

    def _discount(
        self, body: _DiscountRequest, rate_override: Decimal | None = None
    ) -> dict[str, Any]:
        amount = _amount(body.amount)
        remaining = amount
        applied, rejected = [], []
        for code in body.coupon_codes:
            key = code.upper()
            if key in REJECTED_COUPONS:
                rejected.append({"code": code, "reason": REJECTED_COUPONS[key]})
                continue
            if key not in COUPONS:
                rejected.append({"code": code, "reason": "unknown"})
                continue
            name, kind, value = COUPONS[key]
            if rate_override is not None and kind == "percent":
                value = rate_override
            off = _round(amount * value) if kind == "percent" else value
            off = min(off, remaining)
            remaining -= off
            applied.append({"kind": "coupon", "code": key, "name": name, "amount": _s(off)})
        if body.customer.type in USER_TYPE_RATES:
            name, rate = USER_TYPE_RATES[body.customer.type]
            off = min(_round(amount * rate), remaining)
            remaining -= off
            applied.append({"kind": "user_type", "code": None, "name": name, "amount": _s(off)})
        return {
            "currency": body.currency,
            "amount": _s(amount),
            "total_discount": _s(amount - remaining),
            "amount_after": _s(remaining),
            "applied": applied,
            "rejected": rejected,
        }

    def discount_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/discounts/quotes")
        async def quote(
            body: _DiscountRequest, authorization: Annotated[str | None, Header()] = None
        ) -> JSONResponse:
            if self.discount_down:
                return _problem(503, "unavailable", "discount is down")
            if (denied := self._authorize(authorization, "discount:quote")) is not None:
                return denied
            self.quote_calls.append(body.model_dump())
            return JSONResponse(self._discount(body))

        @app.post("/v1/discounts/redemptions/releases")
        async def release(
            body: dict[str, str], authorization: Annotated[str | None, Header()] = None
        ) -> Any:
            if self.discount_down:
                return _problem(503, "unavailable", "discount is down")
            if (denied := self._authorize(authorization, "discount:redeem")) is not None:
                return denied
            gone = self.redemptions.pop(body["idempotency_key"], None)
            return JSONResponse({"released": gone is not None, "redemption_id": None})

        @app.post("/v1/discounts/redemptions")
        async def redeem(
            body: _DiscountRequest,
            authorization: Annotated[str | None, Header()] = None,
            idempotency_key: Annotated[str | None, Header()] = None,
        ) -> JSONResponse:
            if self.discount_down:
                return _problem(503, "unavailable", "discount is down")
            if (denied := self._authorize(authorization, "discount:redeem")) is not None:
                return denied
            if not idempotency_key:
                return _problem(400, "idempotency-key-required", "send an Idempotency-Key")
            fingerprint = json.dumps(body.model_dump(), sort_keys=True)
            self.redeem_calls.append((idempotency_key, body.model_dump()))
            if idempotency_key in self.redemptions:
                seen, answer = self.redemptions[idempotency_key]
                if seen != fingerprint:
                    return _problem(409, "idempotency-conflict", "key used with another body")
                return JSONResponse(answer, status_code=200)
            result = self._discount(body, self.redeem_rate_override)
            if result["rejected"]:
                first = result["rejected"][0]
                return _problem(
                    422,
                    "coupon-not-applicable",
                    f"coupon {first['code']} cannot apply: {first['reason']}",
                    code=first["code"],
                    reason=first["reason"],
                )
            answer = {"id": str(uuid.uuid4()), **result}
            self.redemptions[idempotency_key] = (fingerprint, answer)
            return JSONResponse(answer, status_code=201)

        return app


@dataclass
class InvoiceApi:
    app: FastAPI
    client: httpx.AsyncClient
    platform: EmbeddedPlatform
    peers: Peers
    database_url: str

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    def token(self, tenant: str = "acme", scopes: frozenset[str] | set[str] = ALL_SCOPES) -> str:
        return str(self.ctx.tokens.mint(subject="user:alice", tenant=tenant, scopes=scopes))

    def headers(self, tenant: str = "acme", key: str | None = None, **extra: str) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self.token(tenant)}", **extra}
        if key is not None:
            headers["idempotency-key"] = key
        return headers

    async def create(
        self, body: dict[str, Any], *, key: str | None = None, tenant: str = "acme"
    ) -> httpx.Response:
        return await self.client.post(
            "/v1/invoices", json=body, headers=self.headers(tenant, key or uuid.uuid4().hex)
        )

    def record(self, *event_types: str) -> list[CloudEvent]:
        """Collect the events of these types the invoice service publishes."""
        seen: list[CloudEvent] = []

        async def keep(event: CloudEvent) -> None:
            seen.append(event)

        for event_type in event_types:
            self.platform.bus.subscribe("test-recorder", event_type, keep)
        return seen

    async def settle(self) -> None:
        """Publish what the outbox holds and let every consumer finish."""
        for _ in range(3):
            while await self.ctx.relay.publish_pending():
                pass
            await self.platform.bus.wait_idle()


def invoice_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {
            "id": "c-1",
            "type": "standard",
            "jurisdiction": {"country": "DE", "region": None},
            "tax_status": "standard",
            "tax_id": None,
            "name": "Erika Mustermann",
        },
        "currency": "EUR",
        "lines": [
            {"description": "Widget", "quantity": "2", "unit_price": "100.00"},
            {"description": "Book", "quantity": "1", "unit_price": "33.33", "category": "reduced"},
        ],
        "coupon_codes": [],
    }
    body.update(overrides)
    return body


@pytest.fixture
def make_body() -> Callable[..., dict[str, Any]]:
    return invoice_body


async def _invoice_api(database_url: str) -> AsyncIterator[InvoiceApi]:
    platform = EmbeddedPlatform()
    peers = Peers()
    platform.apps["tax"] = peers.tax_app()
    platform.apps["discount"] = peers.discount_app()
    settings = ServiceSettings.for_service(
        "invoice",
        runtime="embedded",
        database_url=database_url,
        secrets_file=None,
        load_sample_data=False,
        outbox_poll_seconds=0.2,
    )
    app = create_app(settings, platform)
    async with app.router.lifespan_context(app):
        peers.tokens = app.state.ctx.tokens
        await platform.bus.start()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://invoice"
            ) as client:
                yield InvoiceApi(app, client, platform, peers, database_url)
        finally:
            await platform.bus.stop()


@pytest.fixture(autouse=True)
def _pdf_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests render PDFs with the in-process renderer (no worker processes to start
    per test); the worker-process renderer has its own tests (test_invoice_pdf_workers)."""
    monkeypatch.setenv("INVOICE_PDF_WORKERS", "0")


@pytest.fixture(scope="session")
def service_migrations() -> ServiceMigrations:
    """What the kernel's `migrated_database_url` copies from its once-per-session template."""
    return ServiceMigrations(MIGRATIONS_DIR, "alembic_version_invoice")


@pytest.fixture
async def api(migrated_sqlite_url: str) -> AsyncIterator[InvoiceApi]:
    """The invoice service on SQLite with the test peers."""
    async for value in _invoice_api(migrated_sqlite_url):
        yield value


@pytest.fixture
async def api_any_db(migrated_database_url: str) -> AsyncIterator[InvoiceApi]:
    """The invoice service on SQLite and on PostgreSQL, with the test peers."""
    async for value in _invoice_api(migrated_database_url):
        yield value
