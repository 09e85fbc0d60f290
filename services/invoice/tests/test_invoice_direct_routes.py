"""The creation answers well-formed requests itself and hands everything else to FastAPI's
handler (entrypoints.api._CreationRoute): sent as `application/json` a request may be
answered directly, with a charset it always takes FastAPI's way, and both must give the same
answer: status, headers (Location, Idempotent-Replayed) and problems byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from billing_common.testing import record_direct_answers
from billing_common.web import model_response
from invoice_service.entrypoints import api as routes
from invoice_service.entrypoints.invoice_response_schemas import InvoiceOut

from .conftest import invoice_body

INVOICES = "/v1/invoices"
DIRECT = "application/json"
VIA_FASTAPI = "application/json; charset=utf-8"
BODY = invoice_body(coupon_codes=["WELCOME10"])


@pytest.fixture
def answered_directly(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the direct route answered so far (see record_direct_answers)."""
    return record_direct_answers(monkeypatch, routes._CreationRoute)


def _seen(response: httpx.Response, *, varying: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """The answer without what differs per request (the trace id, in a header and in a
    problem, and the length that follows from it; `varying` fields of a JSON answer, and
    the Location naming them)."""
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("x-trace-id", "content-length") and not (varying and name == "location")
    }
    body = response.json()
    if isinstance(body, dict):
        for name in ("trace_id", *varying):
            body.pop(name, None)
    return response.status_code, headers, body


def _post(api: Any, content_type: str, body: Any, headers: list[tuple[str, str]]) -> Any:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return api.client.post(
        INVOICES, content=content, headers=[("content-type", content_type), *headers]
    )


def _token(api: Any, *scopes: str) -> list[tuple[str, str]]:
    token = api.token(scopes=set(scopes) or {"invoice:write"})
    return [("authorization", f"Bearer {token}")]


def _keyed(api: Any, key: str, *scopes: str) -> list[tuple[str, str]]:
    return [*_token(api, *scopes), ("idempotency-key", key)]


# name -> (body, headers given the api): requests the route refuses.
Case = tuple[Any, Callable[[Any], list[tuple[str, str]]]]
REFUSED: dict[str, Case] = {
    "without a token": (BODY, lambda api: [("idempotency-key", "k")]),
    "with a bad token": (
        BODY,
        lambda api: [("authorization", "Bearer x"), ("idempotency-key", "k")],
    ),
    "with another scope": (BODY, lambda api: _keyed(api, "k", "invoice:read")),
    "with a float": (
        {**BODY, "lines": [{"description": "x", "quantity": "1", "unit_price": 1.5}]},
        lambda api: _keyed(api, "k"),
    ),
    "with an extra field": ({**BODY, "x": 1}, lambda api: _keyed(api, "k")),
    "of a list": ([BODY], lambda api: _keyed(api, "k")),
    "with a duplicate key": (
        b'{"currency": "EUR", "currency": "USD"}',
        lambda api: _keyed(api, "k"),
    ),
    "refused by the schema, without a key": ({**BODY, "currency": "XYZ"}, lambda api: _token(api)),
    "without a key": (BODY, lambda api: _token(api)),
    "with a blank key": (BODY, lambda api: _keyed(api, " ")),
    "with an empty key": (BODY, lambda api: _keyed(api, "")),
    "with a key too long": (BODY, lambda api: _keyed(api, "k" * 129)),
    "with a bad key before a good one": (
        BODY,
        lambda api: [*_keyed(api, " x"), ("idempotency-key", "good")],
    ),
    "with a coupon that cannot apply": (
        {**BODY, "coupon_codes": ["OLD"]},
        lambda api: _keyed(api, "k-old"),
    ),
    "in an unsupported language": ({**BODY, "language": "xx"}, lambda api: _keyed(api, "k-xx")),
    "for an unknown jurisdiction": (
        {**BODY, "customer": {"id": "c", "jurisdiction": {"country": "FR"}}},
        lambda api: _keyed(api, "k-fr"),
    ),
}
# Those the direct route answers itself (its token and body are well formed): the key, the
# command or the use case refuses them through the app's exception handlers.
ANSWERED_DIRECTLY = {
    "without a key",
    "with a blank key",
    "with an empty key",
    "with a key too long",
    "with a bad key before a good one",
    "with a coupon that cannot apply",
    "in an unsupported language",
    "for an unknown jurisdiction",
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_a_refused_request_gets_the_problem_fastapi_gives(
    api: Any, answered_directly: list[str], name: str
) -> None:
    body, headers = REFUSED[name]
    expected = await _post(api, VIA_FASTAPI, body, headers(api))
    assert answered_directly == []
    assert 400 <= expected.status_code < 500, expected.text
    got = await _post(api, DIRECT, body, headers(api))
    assert _seen(got) == _seen(expected)
    assert answered_directly == ([INVOICES] if name in ANSWERED_DIRECTLY else [])


async def test_a_creation_is_created_replayed_and_conflicts_directly_as_via_fastapi(
    api_any_db: Any, answered_directly: list[str]
) -> None:
    api = api_any_db
    answers: dict[str, list[httpx.Response]] = {}
    await _post(api, VIA_FASTAPI, BODY, _keyed(api, "k"))
    for content_type, key in ((VIA_FASTAPI, "k-fastapi"), (DIRECT, "k-direct")):
        created = await _post(api, content_type, BODY, _keyed(api, key))
        replayed = await _post(api, content_type, BODY, _keyed(api, key))
        # Reused with another body: both ways on one key, whose problem names it.
        reused = await _post(api, content_type, {**BODY, "currency": "USD"}, _keyed(api, "k"))
        answers[content_type] = [created, replayed, reused]
    assert [r.status_code for r in answers[VIA_FASTAPI]] == [201, 200, 409]
    varying = (
        "id",
        "created_at",
        "updated_at",
        "history",
        "tax_calculation_id",
        "discount_redemption_id",
    )
    assert [_seen(r, varying=varying) for r in answers[DIRECT]] == [
        _seen(r, varying=varying) for r in answers[VIA_FASTAPI]
    ]
    created, replayed = answers[DIRECT][:2]
    assert created.headers["location"] == f"{INVOICES}/{created.json()['id']}"
    assert replayed.headers["location"] == created.headers["location"]
    assert replayed.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in created.headers
    assert answered_directly == [INVOICES] * 3

    # One stored invoice replayed both ways: the same bytes.
    via_fastapi = await _post(api, VIA_FASTAPI, BODY, _keyed(api, "k-direct"))
    directly = await _post(api, DIRECT, BODY, _keyed(api, "k-direct"))
    assert directly.content == via_fastapi.content
    assert _seen(directly) == _seen(via_fastapi)


async def test_the_answer_is_what_fastapi_serialises_for_the_response_model(
    api_any_db: Any,
) -> None:
    """The endpoint answers `model_response(InvoiceOut)`: byte for byte what FastAPI sent
    when it returned the model under `response_model=InvoiceOut`."""
    api = api_any_db
    created = await _post(api, DIRECT, BODY, _keyed(api, "k-model"))
    assert created.status_code == 201, created.text
    async with api.app.state.deps.uow("acme") as uow:
        invoice = await uow.invoices.get(created.json()["id"])
    assert invoice is not None
    model = InvoiceOut.of(invoice)
    app = FastAPI()

    @app.get("/as-fastapi", response_model=InvoiceOut)
    async def as_fastapi() -> InvoiceOut:
        return model

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        expected = await client.get("/as-fastapi")
    assert model_response(model).body == expected.content
    assert created.content == expected.content
