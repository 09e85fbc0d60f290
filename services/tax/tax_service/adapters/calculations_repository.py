"""The tenant-scoped SQL repository of the calculation history. It is built for one tenant
and never reads or writes another tenant's rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Table, and_, delete, insert, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.money import Money, format_amount
from tax_service.adapters.orm import TaxCalculationRow
from tax_service.domain.model import (
    AppliedTax,
    CalculationRequest,
    Customer,
    CustomerKind,
    Exemption,
    Jurisdiction,
    LineInput,
    LineResult,
    LineVat,
    PriceMode,
    Seller,
    TaxCalculation,
    TaxRounding,
    TaxStatus,
    Treatment,
    VatCategory,
    VatIdCheck,
    overall_treatment,
)
from tax_service.service_layer.ports import CalculationPosition, CalculationQuery

_CALCULATIONS: Table = TaxCalculationRow.__table__  # type: ignore[attr-defined]


def _amount(money: Money) -> str:
    return format_amount(money.amount)


def _json_text(value: Any) -> str:
    """Compact JSON text of plain values. pydantic-core's encoder: about a quarter of
    `json.dumps`'s CPU on a calculation's lines (each calculation stores them). Non-ASCII
    characters are kept as UTF-8 rather than escaped; `json.loads` reads both alike."""
    return to_json(value).decode()


def _lines_to_json(calculation: TaxCalculation) -> str:
    lines = [
        {
            "id": result.line.id,
            "description": result.line.description,
            "category": result.line.category,
            "unit_price": _amount(result.line.unit_price),
            "quantity": format_amount(result.line.quantity),
            "net": _amount(result.net),
            "tax": _amount(result.tax),
            "gross": _amount(result.gross),
            "exemption": result.exemption.value if result.exemption else None,
            "vat": {
                "category": result.vat.category.value,
                "treatment": result.vat.treatment.value,
                "reason": result.vat.reason,
                "reason_code": result.vat.reason_code,
            },
            "taxes": [
                {
                    "rule_id": tax.rule_id,
                    "name": tax.name,
                    "rate": format_amount(tax.rate),
                    "amount": _amount(tax.amount),
                    "compound": tax.compound,
                    "zero_rated": tax.zero_rated,
                }
                for tax in result.taxes
            ],
        }
        for result in calculation.lines
    ]
    return _json_text(lines)


# Lines stored before the VAT decision existed (migration 0003) carry only `exemption`.
_LEGACY_VAT = {
    None: LineVat(VatCategory.STANDARD, Treatment.DOMESTIC),
    Exemption.ZERO_RATED: LineVat(VatCategory.ZERO_RATED, Treatment.DOMESTIC),
    Exemption.EXEMPT_CUSTOMER: LineVat(VatCategory.EXEMPT, Treatment.EXEMPT, "Exempt customer"),
    Exemption.REVERSE_CHARGE: LineVat(
        VatCategory.REVERSE_CHARGE,
        Treatment.INTRA_EU_REVERSE_CHARGE,
        "Reverse charge (declared by the caller; made before the engine confirmed claims)",
    ),
}


def _vat_from_json(item: dict[str, Any], exemption: Exemption | None) -> LineVat:
    vat = item.get("vat")
    if vat is None:
        return _LEGACY_VAT[exemption]
    return LineVat(
        VatCategory(vat["category"]), Treatment(vat["treatment"]), vat["reason"], vat["reason_code"]
    )


def _location_json(location: Jurisdiction | None) -> dict[str, str | None] | None:
    return None if location is None else {"country": location.country, "region": location.region}


def _location(raw: dict[str, Any] | None) -> Jurisdiction | None:
    return None if raw is None else Jurisdiction(raw["country"], raw["region"])


def _parties_to_json(request: CalculationRequest) -> str:
    """The seller and the customer's location, kind and certificate, as the caller gave them
    (None where absent: the defaults are re-derived on read, as on the request)."""
    customer, seller = request.customer, request.seller
    return _json_text(
        {
            "seller": None
            if seller is None
            else {"location": _location_json(seller.location), "vat_id": seller.vat_id},
            "customer": {
                "location": _location_json(customer.location),
                "kind": customer.kind.value if customer.kind else None,
                "exemption_certificate": customer.exemption_certificate,
            },
        }
    )


def _evidence_to_json(check: VatIdCheck | None) -> str | None:
    if check is None:
        return None
    return _json_text(
        {
            "vat_id": check.vat_id,
            "valid": check.valid,
            "source": check.source,
            "checked_at": check.checked_at.isoformat(),
            "request_id": check.request_id,
            "detail": check.detail,
        }
    )


def _evidence_from_json(raw: str | None) -> VatIdCheck | None:
    if raw is None:
        return None
    item = json.loads(raw)
    return VatIdCheck(
        vat_id=item["vat_id"],
        valid=item["valid"],
        source=item["source"],
        checked_at=datetime.fromisoformat(item["checked_at"]),
        request_id=item["request_id"],
        detail=item["detail"],
    )


def _lines_from_json(
    raw: str, currency: str
) -> tuple[tuple[LineInput, ...], tuple[LineResult, ...]]:
    inputs: list[LineInput] = []
    results: list[LineResult] = []
    for item in json.loads(raw):
        line = LineInput(
            id=item["id"],
            unit_price=Money.of(item["unit_price"], currency),
            quantity=Decimal(item["quantity"]),
            category=item["category"],
            description=item["description"],
        )
        inputs.append(line)
        exemption = Exemption(item["exemption"]) if item["exemption"] else None
        results.append(
            LineResult(
                line=line,
                net=Money.of(item["net"], currency),
                tax=Money.of(item["tax"], currency),
                gross=Money.of(item["gross"], currency),
                exemption=exemption,
                vat=_vat_from_json(item, exemption),
                taxes=tuple(
                    AppliedTax(
                        rule_id=tax["rule_id"],
                        name=tax["name"],
                        rate=Decimal(tax["rate"]),
                        amount=Money.of(tax["amount"], currency),
                        compound=tax["compound"],
                        zero_rated=tax["zero_rated"],
                    )
                    for tax in item["taxes"]
                ),
            )
        )
    return tuple(inputs), tuple(results)


def _calculation_from_row(row: TaxCalculationRow) -> TaxCalculation:
    inputs, results = _lines_from_json(row.lines, row.currency)
    parties: dict[str, Any] = json.loads(row.parties) if row.parties else {}
    seller = parties.get("seller")
    customer = parties.get("customer") or {}
    request = CalculationRequest(
        currency=row.currency,
        jurisdiction=Jurisdiction(row.country, row.region),
        customer=Customer(
            id=row.customer_id,
            tax_status=TaxStatus(row.tax_status),
            tax_id=row.tax_id,
            location=_location(customer.get("location")),
            kind=CustomerKind(customer["kind"]) if customer.get("kind") else None,
            exemption_certificate=customer.get("exemption_certificate"),
        ),
        price_mode=PriceMode(row.price_mode),
        date=row.calculation_date,
        lines=inputs,
        reference=row.reference,
        seller=None
        if seller is None
        else Seller(Jurisdiction(**seller["location"]), seller["vat_id"]),
        rounding=TaxRounding(row.rounding) if row.rounding else TaxRounding.PER_LINE,
    )
    return TaxCalculation(
        id=row.id,
        request=request,
        lines=results,
        total_net=Money.of(row.total_net, row.currency),
        total_tax=Money.of(row.total_tax, row.currency),
        total_gross=Money.of(row.total_gross, row.currency),
        created_at=row.created_at,
        treatment=Treatment(row.treatment) if row.treatment else overall_treatment(results),
        evidence=_evidence_from_json(row.evidence),
    )


def calculation_columns(calculation: TaxCalculation, tenant: str) -> dict[str, Any]:
    """The row of one calculation, column by column: the one place a new column is added
    (the SQLite and the PostgreSQL paths both insert exactly this)."""
    request = calculation.request
    return {
        "id": calculation.id,
        "tenant_id": tenant,
        "created_at": calculation.created_at,
        "calculation_date": request.date,
        "currency": request.currency,
        "price_mode": request.price_mode.value,
        "country": request.jurisdiction.country,
        "region": request.jurisdiction.region,
        "customer_id": request.customer.id,
        "tax_status": request.customer.tax_status.value,
        "tax_id": request.customer.tax_id,
        "reference": request.reference,
        "total_net": calculation.total_net.amount,
        "total_tax": calculation.total_tax.amount,
        "total_gross": calculation.total_gross.amount,
        "line_count": len(calculation.lines),
        "lines": _lines_to_json(calculation),
        "treatment": calculation.treatment.value,
        "parties": _parties_to_json(request),
        "evidence": _evidence_to_json(calculation.evidence),
        "rounding": request.rounding.value,
    }


class SqlCalculationRepository:
    def __init__(
        self, session: Callable[[], AsyncSession], tenant: str, *, defer_inserts: bool = False
    ) -> None:
        """`session`: the unit of work's, opened when first asked for. With `defer_inserts`
        (PostgreSQL), `add` only queues the row: the unit of work writes it at commit in one
        statement with its outbox row (`take_pending`)."""
        self._sessions = session
        self._tenant = tenant
        self._defer_inserts = defer_inserts
        self._pending: list[dict[str, Any]] = []

    @property
    def _session(self) -> AsyncSession:
        return self._sessions()

    async def add(self, calculation: TaxCalculation) -> None:
        values = calculation_columns(calculation, self._tenant)
        if self._defer_inserts:
            self._pending.append(values)
            return
        # A core INSERT: the row is never read back in this transaction, so the ORM's unit of
        # work (identity map, flush planning) would be pure overhead on the hot path.
        await (await self._session.connection()).execute(insert(_CALCULATIONS).values(values))

    def take_pending(self) -> list[tuple[str, dict[str, Any]]]:
        """The queued rows as (table, columns), for the unit of work's commit."""
        pending, self._pending = self._pending, []
        return [(_CALCULATIONS.name, values) for values in pending]

    async def discard_for_reference(self, reference: str) -> int:
        """Delete the calculations made for `reference`; returns how many."""
        result = await (await self._session.connection()).execute(
            delete(_CALCULATIONS).where(
                _CALCULATIONS.c.tenant_id == self._tenant,
                _CALCULATIONS.c.reference == reference,
            )
        )
        return int(result.rowcount)

    async def get(self, calculation_id: str) -> TaxCalculation | None:
        row = await self._session.get(TaxCalculationRow, calculation_id)
        if row is None or row.tenant_id != self._tenant:
            return None
        return _calculation_from_row(row)

    async def history(
        self,
        *,
        limit: int,
        after: CalculationPosition | None = None,
        calculation_query: CalculationQuery | None = None,
    ) -> Sequence[TaxCalculation]:
        """Newest first (created_at, then id, descending); `after` is the position of the
        last item of the previous page (keyset pagination: stable under concurrent inserts)."""
        conditions: list[Any] = [col(TaxCalculationRow.tenant_id) == self._tenant]
        if calculation_query is not None and calculation_query.reference is not None:
            conditions.append(col(TaxCalculationRow.reference) == calculation_query.reference)
        if calculation_query is not None and calculation_query.customer_id is not None:
            conditions.append(col(TaxCalculationRow.customer_id) == calculation_query.customer_id)
        if after is not None:
            created, calculation_id = after
            conditions.append(
                or_(
                    col(TaxCalculationRow.created_at) < created,
                    and_(
                        col(TaxCalculationRow.created_at) == created,
                        col(TaxCalculationRow.id) < calculation_id,
                    ),
                )
            )
        rows = (
            await self._session.exec(
                select(TaxCalculationRow)
                .where(*conditions)
                .order_by(
                    col(TaxCalculationRow.created_at).desc(), col(TaxCalculationRow.id).desc()
                )
                .limit(limit)
            )
        ).all()
        return [_calculation_from_row(row) for row in rows]
