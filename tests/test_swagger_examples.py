"""Swagger's "Try it out" works as shown: the request body Swagger UI pre-fills for every
operation (from the schema's examples, as its sample generator builds it) is accepted, on the
embedded runtime with the sample data and `make token`'s tenant. Path parameters are what a
user would type: the id the previous example created."""

from __future__ import annotations

from typing import Any

import httpx

from billing_launcher.seed_flows import key
from tests.conftest import Platform

_SCALARS: dict[str, Any] = {"string": "string", "integer": 0, "number": 0, "boolean": True}


def swagger_sample(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """The value Swagger UI's sample generator shows for `schema`: an example or default when
    the schema has one, else the first enum value or variant, else a sample per property."""
    if "$ref" in schema:
        return swagger_sample(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("allOf", "oneOf", "anyOf"):
        if combinator in schema:
            variants = [v for v in schema[combinator] if v.get("type") != "null"]
            return swagger_sample(variants[0], components) if variants else None
    kind = schema.get("type", "object")
    if kind == "object":
        return {
            name: swagger_sample(prop, components)
            for name, prop in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [swagger_sample(schema.get("items", {}), components)]
    if kind == "string" and schema.get("format") == "date-time":
        return "2026-11-24T10:00:00Z"
    if kind == "string" and schema.get("format") == "date":
        return "2026-11-24"
    return _SCALARS.get(kind)


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _example_body(document: dict[str, Any], method: str, path: str) -> Any:
    operation = document["paths"][path][method]
    media = operation["requestBody"]["content"]["application/json"]
    if "example" in media:
        return media["example"]
    return swagger_sample(media["schema"], document["components"]["schemas"])


async def _try_it_out(
    platform: Platform, service: str, method: str, path: str, values: dict[str, str]
) -> httpx.Response:
    client = platform.clients[service]
    document = await _document(client)
    body = _example_body(document, method, path)
    headers = platform.headers()
    if any(
        p["name"] == "Idempotency-Key"
        for p in document["paths"][path][method].get("parameters", [])
    ):
        headers["Idempotency-Key"] = key()
    return await client.request(method, path.format(**values), json=body, headers=headers)


async def test_every_request_body_example_is_accepted(platform: Platform) -> None:
    created: dict[str, str] = {}

    async def expect(
        service: str, method: str, path: str, statuses: tuple[int, ...] = (200, 201)
    ) -> dict[str, Any]:
        response = await _try_it_out(platform, service, method, path, created)
        assert response.status_code in statuses, (method, path, response.text)
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    await expect("tax", "post", "/v1/tax/calculations")
    created["rule_id"] = (await expect("tax", "post", "/v1/tax/rules"))["id"]
    await expect("tax", "put", "/v1/tax/rules/{rule_id}")
    created["key"] = "swagger-example"
    await expect("tax", "put", "/v1/tax/rules/by-key/{key}")

    created["code"] = (await expect("discount", "post", "/v1/discounts/coupons"))["code"]
    await expect("discount", "put", "/v1/discounts/coupons/{code}")
    await expect("discount", "put", "/v1/discounts/policies/{key}")
    await expect("discount", "put", "/v1/discounts/settings/stacking")
    await expect("discount", "post", "/v1/discounts/quotes")
    await expect("discount", "post", "/v1/discounts/redemptions")

    created["invoice_id"] = (await expect("invoice", "post", "/v1/invoices"))["id"]
    await expect("invoice", "post", "/v1/invoices/{invoice_id}/void")
    created["invoice_id"] = (await expect("invoice", "post", "/v1/invoices"))["id"]
    await platform.clients["invoice"].post(
        f"/v1/invoices/{created['invoice_id']}/finalize", headers=platform.headers()
    )
    await expect("invoice", "post", "/v1/invoices/{invoice_id}/mark-uncollectible")
    # The credit note example (a full credit, applied) on an issued invoice.
    created["invoice_id"] = (await expect("invoice", "post", "/v1/invoices"))["id"]
    await platform.clients["invoice"].post(
        f"/v1/invoices/{created['invoice_id']}/finalize", headers=platform.headers()
    )
    await expect("invoice", "post", "/v1/invoices/{invoice_id}/credit-notes")

    # The payment example names an invoice the user has not made ("inv_123"): a documented
    # 404/409 problem about that invoice, not a validation error about the example itself.
    await expect("payment", "post", "/v1/payments", (201, 404, 409))
    created["payment_id"] = "pay_unknown"
    await expect("payment", "post", "/v1/payments/{payment_id}/refunds", (404,))
    created["gateway_reference"] = "ref_unknown"
    await expect("payment", "post", "/v1/sandbox/payments/{gateway_reference}/confirm", (200, 404))
