"""The quote and the redemption answer well-formed requests themselves and hand everything
else to FastAPI's handler (entrypoints.api._QuoteRoute, _RedemptionRoute): sent as
`application/json` a request may be answered directly, with a charset it always takes
FastAPI's way, and both must give the same answer, problems byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from billing_common.testing import record_direct_answers
from discount_service.entrypoints import api as routes

from .test_discount_api import REQUEST, WELCOME, setup_welcome_and_premium

QUOTES = "/v1/discounts/quotes"
REDEMPTIONS = "/v1/discounts/redemptions"
DIRECT = "application/json"
VIA_FASTAPI = "application/json; charset=utf-8"


@pytest.fixture
def answered_directly(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the direct routes answered so far (see record_direct_answers)."""
    return record_direct_answers(monkeypatch, routes._QuoteRoute, routes._RedemptionRoute)


def _seen(response: httpx.Response, *, varying: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """The answer without what differs per request (the trace id, in a header and in a
    problem, and the length that follows from it; `varying` fields of a JSON answer)."""
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("x-trace-id", "content-length")
    }
    body = response.json()
    if isinstance(body, dict):
        for name in ("trace_id", *varying):
            body.pop(name, None)
    return response.status_code, headers, body


def _post(api: Any, path: str, content_type: str, body: Any, headers: list[tuple[str, str]]) -> Any:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return api.client.post(
        path, content=content, headers=[("content-type", content_type), *headers]
    )


def _token(api: Any, *scopes: str) -> list[tuple[str, str]]:
    return list(api.headers(*scopes).items())


# name -> (path, body, headers given the api): requests each route refuses or answers oddly.
Case = tuple[str, Any, Callable[[Any], list[tuple[str, str]]]]
REFUSED: dict[str, Case] = {
    "quote without a token": (QUOTES, REQUEST, lambda api: []),
    "quote with a bad token": (QUOTES, REQUEST, lambda api: [("authorization", "Bearer x")]),
    "quote with another scope": (QUOTES, REQUEST, lambda api: _token(api, "discount:redeem")),
    "quote with a float": (QUOTES, {**REQUEST, "amount": 1.5}, lambda api: _token(api)),
    "quote with an extra field": (QUOTES, {**REQUEST, "x": 1}, lambda api: _token(api)),
    "quote of a list": (QUOTES, [REQUEST], lambda api: _token(api)),
    "quote with a duplicate key": (
        QUOTES,
        b'{"currency": "EUR", "currency": "USD"}',
        lambda api: _token(api),
    ),
    "redemption without a token": (REDEMPTIONS, REQUEST, lambda api: [("idempotency-key", "k")]),
    "redemption with another scope": (
        REDEMPTIONS,
        REQUEST,
        lambda api: [*_token(api, "discount:quote"), ("idempotency-key", "k")],
    ),
    "redemption refused by the schema, without a key": (
        REDEMPTIONS,
        {**REQUEST, "currency": "XYZ"},
        lambda api: _token(api),
    ),
    "redemption without a key": (REDEMPTIONS, REQUEST, lambda api: _token(api)),
    "redemption with a blank key": (
        REDEMPTIONS,
        REQUEST,
        lambda api: [*_token(api), ("idempotency-key", " ")],
    ),
    "redemption with an empty key": (
        REDEMPTIONS,
        REQUEST,
        lambda api: [*_token(api), ("idempotency-key", "")],
    ),
    "redemption with a key too long": (
        REDEMPTIONS,
        REQUEST,
        lambda api: [*_token(api), ("idempotency-key", "k" * 256)],
    ),
    "redemption with a bad key before a good one": (
        REDEMPTIONS,
        REQUEST,
        lambda api: [*_token(api), ("idempotency-key", " x"), ("idempotency-key", "good")],
    ),
    "redemption of a coupon that cannot apply": (
        REDEMPTIONS,
        {**REQUEST, "coupon_codes": ["NOPE"]},
        lambda api: [*_token(api), ("idempotency-key", "k-nope")],
    ),
}
# Those the direct route answers itself (its token and body are well formed): the key, or
# the use case, refuses them through the app's exception handlers.
ANSWERED_DIRECTLY = {
    "redemption without a key",
    "redemption with a blank key",
    "redemption with an empty key",
    "redemption with a key too long",
    "redemption with a bad key before a good one",
    "redemption of a coupon that cannot apply",
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_a_refused_request_gets_the_problem_fastapi_gives(
    api: Any, answered_directly: list[str], name: str
) -> None:
    await setup_welcome_and_premium(api)
    path, body, headers = REFUSED[name]
    expected = await _post(api, path, VIA_FASTAPI, body, headers(api))
    assert answered_directly == []
    assert 400 <= expected.status_code < 500, expected.text
    got = await _post(api, path, DIRECT, body, headers(api))
    assert _seen(got) == _seen(expected)
    assert answered_directly == ([path] if name in ANSWERED_DIRECTLY else [])


async def test_a_quote_is_answered_directly_as_fastapi_answers_it(
    api: Any, answered_directly: list[str]
) -> None:
    await setup_welcome_and_premium(api)
    payload = {**REQUEST, "coupon_codes": ["WELCOME10", "OLD"]}
    expected = await _post(api, QUOTES, VIA_FASTAPI, payload, _token(api, "discount:quote"))
    got = await _post(api, QUOTES, DIRECT, payload, _token(api, "discount:quote"))
    assert expected.status_code == 200, expected.text
    assert (got.content, _seen(got)) == (expected.content, _seen(expected))
    assert answered_directly == [QUOTES]


async def test_a_redemption_is_created_replayed_and_conflicts_directly_as_via_fastapi(
    api: Any, answered_directly: list[str]
) -> None:
    await setup_welcome_and_premium(api)
    await api.client.put(
        f"/v1/discounts/coupons/{WELCOME['code']}",
        json={**WELCOME, "max_redemptions": 10},
        headers=api.headers(),
    )
    answers: dict[str, list[httpx.Response]] = {}
    for content_type, key in ((VIA_FASTAPI, "k-fastapi"), (DIRECT, "k-direct")):
        headers = [*_token(api, "discount:redeem"), ("idempotency-key", key)]
        created = await _post(api, REDEMPTIONS, content_type, REQUEST, headers)
        replayed = await _post(api, REDEMPTIONS, content_type, REQUEST, headers)
        reused = await _post(api, REDEMPTIONS, content_type, {**REQUEST, "amount": "1"}, headers)
        answers[content_type] = [created, replayed, reused]
    assert [r.status_code for r in answers[VIA_FASTAPI]] == [201, 200, 409]
    varying = ("id", "created_at", "idempotency_key")
    assert [_seen(r, varying=varying) for r in answers[DIRECT]] == [
        _seen(r, varying=varying) for r in answers[VIA_FASTAPI]
    ]
    assert answers[DIRECT][1].content == answers[DIRECT][0].content
    assert answers[DIRECT][0].json()["idempotency_key"] == "k-direct"
    assert answered_directly == [REDEMPTIONS] * 3
    coupon = await api.client.get("/v1/discounts/coupons/WELCOME10", headers=api.headers())
    assert coupon.json()["redeemed_count"] == 2
