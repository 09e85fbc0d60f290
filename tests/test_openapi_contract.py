"""Schemathesis over the four OpenAPI specs, every check, on the embedded runtime served as by
`make run` (real sockets, a valid token for tenant "demo"): what the specs promise (statuses,
media types, bodies, headers, required parameters) is what the services answer, for generated
valid and invalid requests alike. A bounded number of examples per operation keeps it quick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_launcher.registry import app_factory
from tests.served_platform import ServedPlatform, served_platform

EXAMPLES_PER_OPERATION = 10


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedPlatform]:
    with served_platform(tmp_path_factory.mktemp("contract")) as served:
        yield served


def _spec(service: str) -> dict[str, Any]:
    """The service's OpenAPI document as its app publishes it at /openapi.json (building the
    app starts nothing: engines and servers come with its lifespan)."""
    app = app_factory(service)(
        ServiceSettings.for_service(service, runtime="embedded", secrets_file=None),
        EmbeddedPlatform(),
    )
    spec: dict[str, Any] = app.openapi()
    return spec


# What the schema cannot say. A cursor is opaque: only one the service handed out is valid,
# any other string is a 400 problem. Business rules over schema-valid data are 422 problems:
# unknown currencies, jurisdictions and categories, amounts off a currency's minor unit,
# windows ending before they start, amounts over what is outstanding or refundable (or, for a
# credit note, over what is invoiced, or a quantity and an amount on one line), VAT ids,
# IBANs and BICs whose check digits fail.
# Unknown query parameters are ignored (as HTTP APIs commonly do), so requests that add some
# are not "invalid" here.
_CONFIG = SchemathesisConfig.from_str(
    """
[generation]
allow-extra-parameters = false

[[operations]]
include-name = [
  "GET /v1/tax/calculations",
  "GET /v1/discounts/redemptions",
  "GET /v1/discounts/coupons",
  "GET /v1/invoices",
  "GET /v1/sellers",
]
# a foreign cursor is 400 (`invalid-cursor`), in every service
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "422"]

[[operations]]
include-name = [
  "POST /v1/tax/calculations",
  "POST /v1/tax/rules",
  "PUT /v1/tax/rules/{rule_id}",
  "PUT /v1/tax/rules/by-key/{key}",
  "POST /v1/discounts/coupons",
  "PUT /v1/discounts/coupons/{code}",
  "PUT /v1/discounts/policies/{key}",
  "PUT /v1/discounts/settings/stacking",
  "POST /v1/discounts/quotes",
  "POST /v1/discounts/redemptions",
  "POST /v1/invoices",
  "POST /v1/invoices/{invoice_id}/credit-notes",
  "POST /v1/sellers",
  "PATCH /v1/sellers/{seller_id}",
  "POST /v1/payments",
  "POST /v1/payments/{payment_id}/refunds",
]
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""
)

tax = schemathesis.openapi.from_dict(_spec("tax"), config=_CONFIG)
discount = schemathesis.openapi.from_dict(_spec("discount"), config=_CONFIG)
invoice = schemathesis.openapi.from_dict(_spec("invoice"), config=_CONFIG)
payment = schemathesis.openapi.from_dict(_spec("payment"), config=_CONFIG)

_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _check(case: Any, platform: ServedPlatform, service: str) -> None:
    case.call_and_validate(
        base_url=platform.urls[service],
        headers={"Authorization": f"Bearer {platform.token()}"},
    )


@tax.parametrize()
@_SETTINGS
def test_tax_api_keeps_its_contract(case: Any, platform: ServedPlatform) -> None:
    _check(case, platform, "tax")


@discount.parametrize()
@_SETTINGS
def test_discount_api_keeps_its_contract(case: Any, platform: ServedPlatform) -> None:
    _check(case, platform, "discount")


@invoice.parametrize()
@_SETTINGS
def test_invoice_api_keeps_its_contract(case: Any, platform: ServedPlatform) -> None:
    _check(case, platform, "invoice")


@payment.parametrize()
@_SETTINGS
def test_payment_api_keeps_its_contract(case: Any, platform: ServedPlatform) -> None:
    _check(case, platform, "payment")
