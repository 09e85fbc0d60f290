"""The OpenAPI document a service publishes, completed with what every route can answer.

FastAPI documents a route's success and its request validation (as `application/json`, which
is not what is sent). Every error leaves a service as an RFC 9457 problem
(`application/problem+json`, billing_common.problems), from layers a route does not see: the
bearer check (401/403), the body limit (413), malformed JSON (400), a database or peer that
is down (503). `install_contract` adds those to every operation, with the `Problem` schema,
so a generated client (and schemathesis) knows every status it may get and its body. What
only a route knows (a 404 for its resource, a 409 for its conflicts) the route declares with
`responses=` (descriptions only: the problem body is added here)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Header

from billing_common.idempotency import (
    IDEMPOTENCY_KEY,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    idempotency_key_pattern,
)
from billing_common.problems import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; `type` names the problem (`/problems/<slug>`), "
    "extension members such as `errors`, `code` or `reason` carry its details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "examples": ["/problems/validation"]},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "trace_id": {"type": "string"},
    },
    "additionalProperties": True,
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

# Statuses a layer below the route answers, with what they mean to a client.
_AUTH = {
    "401": "missing, expired or invalid bearer token (`/problems/unauthorized`)",
    "403": "the token lacks the route's scope (`/problems/insufficient-scope`)",
}
_BODY = {
    "400": "the body is not valid JSON (`/problems/malformed-json`)",
    "413": "the body is over the size limit (`/problems/payload-too-large`)",
}
_NOT_FOUND = "no such resource for this tenant"
_VALIDATION = "the request does not match the schema, or breaks a business rule "
_UNAVAILABLE = "a database or peer service is unavailable; retry later (`Retry-After`)"


def problem(description: str) -> dict[str, Any]:
    """A response of `responses=` whose body is a problem document."""
    return {"description": description, "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}}}


def install_contract(app: FastAPI) -> None:
    """Publish the completed document at /openapi.json (and in Swagger)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "contract_complete", False) and app.openapi_schema:
            return app.openapi_schema
        document = complete(generate())
        app.openapi_schema = document
        app.state.contract_complete = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                _complete_operation(path, operation)
    return document


def _complete_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    added: dict[str, str] = {}
    if operation.get("security"):
        added.update(_AUTH)
    if operation.get("requestBody"):
        added.update(_BODY)
    parameters = operation.get("parameters", [])
    if parameters or operation.get("requestBody"):
        added["422"] = _VALIDATION
    if "{" in path:
        added["404"] = _NOT_FOUND
    if path.startswith("/v1/"):
        added["503"] = _UNAVAILABLE
    for parameter in parameters:
        if parameter.get("in") == "query" and parameter.get("name") == "cursor":
            added["400"] = "the cursor is not one this service handed out (`invalid-cursor`)"
        if parameter.get("in") == "header" and parameter.get("name") == IDEMPOTENCY_KEY:
            _require(parameter)
            added["400"] = (
                "Idempotency-Key missing or malformed (`/problems/idempotency-key-required`, "
                "`/problems/invalid-idempotency-key`), or the body is not valid JSON"
            )
            added.setdefault("409", "the Idempotency-Key was used with another request")
    if path == "/readyz":
        added["503"] = "a dependency is not reachable (`/problems/not-ready`)"
    for status, description in added.items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if status[0] in "45":
            # Whatever FastAPI put there (application/json, HTTPValidationError) is not sent.
            response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}}
            if response.get("description") in (None, "", "Validation Error"):
                response["description"] = added.get(status, "problem")
    if path == "/metrics":
        responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}


def _require(parameter: dict[str, Any]) -> None:
    """Declared required: the route answers 400 without it. (The route takes it as optional
    only to answer that 400 problem itself rather than a generic 422.)"""
    parameter["required"] = True
    schema = parameter.get("schema", {})
    variants = [v for v in schema.pop("anyOf", []) if v.get("type") != "null"]
    if variants:
        schema.update(variants[0])
    schema.setdefault("type", "string")
    parameter["schema"] = schema


def idempotency_key_header(
    description: str, *, max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH
) -> Any:
    """The Idempotency-Key header parameter, `Annotated[str | None, idempotency_key_header(...)]`,
    publishing the kernel's rule. Optional to FastAPI so that the route answers a missing key
    with its own 400 problem (billing_common.idempotency.check_idempotency_key) after the body
    is validated; `complete` declares it required."""
    return Header(
        alias=IDEMPOTENCY_KEY,
        description=description,
        json_schema_extra={
            "pattern": idempotency_key_pattern(max_length),
            "maxLength": max_length,
        },
    )
