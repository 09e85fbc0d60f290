"""The HTTP API through httpx.ASGITransport with the app's lifespan, on SQLite and PostgreSQL:
contracts, auth, tenant isolation, bad input as problem+json (never 500), the event."""

from __future__ import annotations

import json

import httpx
import pytest

from billing_common.event_schemas import DISCOUNT_APPLIED, DiscountApplied
from billing_common.events import CloudEvent
from discount_service.bootstrap import create_app

PROBLEM = "application/problem+json"

WELCOME = {
    "code": "WELCOME10",
    "name": "Welcome 10%",
    "discount": {"type": "percent", "rate": "0.10"},
    "starts_at": "2024-01-01T00:00:00Z",
}
PREMIUM = {
    "name": "Premium customers 5%",
    "kind": "user_type",
    "customer_type": "premium",
    "discount": {"type": "percent", "rate": "0.05"},
    "priority": -1,
}
REQUEST = {
    "customer": {"id": "c-1", "type": "premium"},
    "currency": "EUR",
    "amount": "200.00",
    "coupon_codes": ["WELCOME10"],
    "reference": "inv_123",
}


def problem(response: httpx.Response, status: int, problem_type: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    if problem_type is not None:
        assert body["type"] == f"/problems/{problem_type}"
    return body


async def setup_welcome_and_premium(api, tenant: str = "acme") -> None:
    h = api.headers("discount:admin", tenant=tenant)
    assert (
        await api.client.post("/v1/discounts/coupons", json=WELCOME, headers=h)
    ).status_code == 201
    put = await api.client.put("/v1/discounts/policies/premium", json=PREMIUM, headers=h)
    assert put.status_code == 201, put.text


async def redeem(api, payload: dict = REQUEST, key: str = "k-1", tenant: str = "acme"):
    return await api.client.post(
        "/v1/discounts/redemptions",
        json=payload,
        headers=api.headers("discount:redeem", tenant=tenant, **{"Idempotency-Key": key}),
    )


# --- the contract -----------------------------------------------------------------------


async def test_quote_matches_the_contract_and_has_no_side_effect(api) -> None:
    await setup_welcome_and_premium(api)
    payload = {**REQUEST, "coupon_codes": ["WELCOME10", "OLD"]}
    h = api.headers("discount:quote")
    response = await api.client.post("/v1/discounts/quotes", json=payload, headers=h)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "currency": "EUR",
        "amount": "200.00",
        "total_discount": "29.00",
        "amount_after": "171.00",
        "applied": [
            {"kind": "coupon", "code": "WELCOME10", "name": "Welcome 10%", "amount": "20.00"},
            {"kind": "user_type", "code": None, "name": "Premium customers 5%", "amount": "9.00"},
        ],
        "rejected": [{"code": "OLD", "reason": "unknown"}],
    }
    again = await api.client.post("/v1/discounts/quotes", json=payload, headers=h)
    assert again.json() == response.json()
    coupon = await api.client.get("/v1/discounts/coupons/welcome10", headers=api.headers())
    assert coupon.json()["redeemed_count"] == 0
    history = await api.client.get("/v1/discounts/redemptions", headers=api.headers())
    assert history.json()["items"] == []


async def test_redemption_is_created_replayed_and_conflicts(api) -> None:
    await setup_welcome_and_premium(api)
    created = await redeem(api)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["total_discount"] == "29.00"
    assert body["amount_after"] == "171.00"
    assert body["reference"] == "inv_123"
    replay = await redeem(api)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == body
    conflict = await redeem(api, {**REQUEST, "amount": "300.00"})
    problem(conflict, 409, "idempotency-key-reused")
    coupon = await api.client.get("/v1/discounts/coupons/WELCOME10", headers=api.headers())
    assert coupon.json()["redeemed_count"] == 1
    one = await api.client.get(f"/v1/discounts/redemptions/{body['id']}", headers=api.headers())
    assert one.json() == body
    history = await api.client.get("/v1/discounts/redemptions", headers=api.headers())
    assert [item["id"] for item in history.json()["items"]] == [body["id"]]


async def test_the_redemption_answer_is_the_bytes_fastapi_sends_for_the_model(api) -> None:
    """The redemption is serialised once (no response_model re-validation): its bytes are
    those of the same redemption read back through FastAPI's response_model path."""
    await setup_welcome_and_premium(api)
    created = await redeem(api)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in created.headers
    replay = await redeem(api)
    assert (replay.status_code, replay.headers["content-type"]) == (200, "application/json")
    path = f"/v1/discounts/redemptions/{created.json()['id']}"
    read = await api.client.get(path, headers=api.headers())
    assert created.content == replay.content == read.content


async def test_redemption_needs_an_idempotency_key(api) -> None:
    h = api.headers("discount:redeem")
    missing = await api.client.post("/v1/discounts/redemptions", json=REQUEST, headers=h)
    problem(missing, 400, "idempotency-key-required")
    h["Idempotency-Key"] = " "
    blank = await api.client.post("/v1/discounts/redemptions", json=REQUEST, headers=h)
    problem(blank, 400, "invalid-idempotency-key")


@pytest.mark.parametrize(
    ("coupon", "reason"),
    [
        ({"code": "NOPE"}, "unknown"),
        ({**WELCOME, "code": "OFF", "active": False}, "inactive"),
        ({**WELCOME, "code": "SOON", "starts_at": "2999-01-01T00:00:00Z"}, "not_started"),
        ({**WELCOME, "code": "OLD", "ends_at": "2024-02-01T00:00:00+01:00"}, "expired"),
        (
            {**WELCOME, "code": "MIN", "minimum": {"amount": "200.01", "currency": "EUR"}},
            "below_minimum",
        ),
        (
            {
                **WELCOME,
                "code": "USD5",
                "discount": {"type": "fixed", "amount": "5", "currency": "USD"},
            },
            "currency_mismatch",
        ),
    ],
)
async def test_inapplicable_coupon_is_rejected_on_quote_and_422_on_redemption(
    api, coupon: dict, reason: str
) -> None:
    if coupon["code"] != "NOPE":
        created = await api.client.post("/v1/discounts/coupons", json=coupon, headers=api.headers())
        assert created.status_code == 201, created.text
    payload = {**REQUEST, "coupon_codes": [coupon["code"]]}
    quote = await api.client.post("/v1/discounts/quotes", json=payload, headers=api.headers())
    assert quote.json()["rejected"] == [{"code": coupon["code"], "reason": reason}]
    body = problem(await redeem(api, payload), 422, "coupon-not-applicable")
    assert (body["code"], body["reason"]) == (coupon["code"], reason)
    history = await api.client.get("/v1/discounts/redemptions", headers=api.headers())
    assert history.json()["items"] == []


async def test_exhausted_and_customer_limit_after_redemptions(api) -> None:
    limited = {
        **WELCOME,
        "code": "LAUNCH3",
        "max_redemptions": 2,
        "max_redemptions_per_customer": 1,
    }
    assert (
        await api.client.post("/v1/discounts/coupons", json=limited, headers=api.headers())
    ).status_code == 201
    payload = {**REQUEST, "coupon_codes": ["launch3"]}
    assert (await redeem(api, payload, key="a")).status_code == 201
    again = problem(await redeem(api, payload, key="b"), 422, "coupon-not-applicable")
    assert again["reason"] == "customer_limit_reached"
    other = {**payload, "customer": {"id": "c-2"}}
    assert (await redeem(api, other, key="c")).status_code == 201
    third = {**payload, "customer": {"id": "c-3"}}
    assert problem(await redeem(api, third, key="d"), 422)["reason"] == "exhausted"


async def test_a_used_key_replays_after_its_coupon_is_used_up(api) -> None:
    """The key's claim is the INSERT; a request that cannot apply any more still looks up
    its key first: the stored answer for the same request, 409 for another."""
    last = {**WELCOME, "code": "ONLY1", "max_redemptions": 1}
    assert (
        await api.client.post("/v1/discounts/coupons", json=last, headers=api.headers())
    ).status_code == 201
    payload = {**REQUEST, "coupon_codes": ["ONLY1"]}
    created = await redeem(api, payload, key="once")
    assert created.status_code == 201, created.text
    replay = await redeem(api, payload, key="once")
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (200, "true")
    assert replay.json() == created.json()
    problem(await redeem(api, {**payload, "amount": "300.00"}, key="once"), 409)
    assert problem(await redeem(api, payload, key="other"), 422)["reason"] == "exhausted"


async def test_redemption_publishes_the_event_through_the_outbox(api) -> None:
    received: list[CloudEvent] = []

    async def probe(event: CloudEvent) -> None:
        received.append(event)

    api.platform.bus.subscribe("probe", DISCOUNT_APPLIED, probe)
    await setup_welcome_and_premium(api)
    body = (await redeem(api)).json()
    await api.app.state.ctx.relay.publish_pending()
    await api.platform.bus.wait_idle()
    assert len(received) == 1
    event = received[0]
    assert event.type == DISCOUNT_APPLIED
    assert event.source == "/billing/discount"
    assert event.subject == body["id"]
    assert event.tenant == "acme"
    data = event.data_as(DiscountApplied)
    assert data.redemption_id == body["id"]
    assert str(data.total_discount) == "29.00"
    assert [(a.kind, a.code) for a in data.applied] == [
        ("coupon", "WELCOME10"),
        ("user_type", None),
    ]
    # A replay publishes nothing new.
    await redeem(api)
    await api.app.state.ctx.relay.publish_pending()
    await api.platform.bus.wait_idle()
    assert len(received) == 1


# --- admin ------------------------------------------------------------------------------


async def test_coupon_crud(api) -> None:
    h = api.headers("discount:admin", "discount:read")
    created = await api.client.post("/v1/discounts/coupons", json=WELCOME, headers=h)
    assert created.status_code == 201
    assert created.json()["discount"] == {"type": "percent", "rate": "0.10"}
    problem(
        await api.client.post(
            "/v1/discounts/coupons", json={**WELCOME, "code": "welcome10"}, headers=h
        ),
        409,
        "duplicate-coupon-code",
    )
    replaced = await api.client.put(
        "/v1/discounts/coupons/Welcome10",
        json={
            "name": "Five off",
            "discount": {"type": "fixed", "amount": "5.00", "currency": "EUR"},
            "minimum": {"amount": "20.00", "currency": "eur"},
        },
        headers=h,
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["code"] == "WELCOME10"
    assert replaced.json()["starts_at"] == "2024-01-01T00:00:00Z"
    assert replaced.json()["minimum"] == {"amount": "20.00", "currency": "EUR"}
    listed = await api.client.get("/v1/discounts/coupons?limit=1", headers=h)
    assert [c["code"] for c in listed.json()["items"]] == ["WELCOME10"]
    assert (
        await api.client.delete("/v1/discounts/coupons/WELCOME10", headers=h)
    ).status_code == 204
    problem(
        await api.client.get("/v1/discounts/coupons/WELCOME10", headers=h), 404, "coupon-not-found"
    )


async def test_policy_put_is_an_idempotent_upsert(api) -> None:
    h = api.headers("discount:admin", "discount:read")
    url = "/v1/discounts/policies/volume-eur"
    policy = {
        "name": "Volume EUR",
        "kind": "threshold",
        "currency": "EUR",
        "tiers": [
            {"minimum": "500.00", "discount": {"type": "percent", "rate": "0.05"}},
            {"minimum": "1000.00", "discount": {"type": "percent", "rate": "0.10"}},
        ],
    }
    first = await api.client.put(url, json=policy, headers=h)
    assert first.status_code == 201, first.text
    second = await api.client.put(url, json=policy, headers=h)
    assert second.status_code == 200
    assert second.json() == first.json()
    listed = await api.client.get("/v1/discounts/policies", headers=h)
    assert [p["key"] for p in listed.json()["items"]] == ["volume-eur"]
    quote = await api.client.post(
        "/v1/discounts/quotes",
        json={**REQUEST, "amount": "1000.00", "coupon_codes": []},
        headers=api.headers(),
    )
    assert quote.json()["applied"] == [
        {
            "kind": "threshold",
            "code": None,
            "name": "Volume EUR (from 1000.00 EUR)",
            "amount": "100.00",
        }
    ]
    assert (await api.client.delete(url, headers=h)).status_code == 204
    problem(await api.client.delete(url, headers=h), 404, "policy-not-found")


@pytest.mark.parametrize(
    "policy",
    [
        {**PREMIUM, "kind": "threshold"},
        {**PREMIUM, "currency": "EUR"},
        {**PREMIUM, "discount": {"type": "percent", "rate": "1.5"}},
        {**PREMIUM, "customer_type": "Premium Customers"},
        {**PREMIUM, "starts_at": "2026-01-01T00:00:00"},
        {**PREMIUM, "priority": "high"},
        {**PREMIUM, "unexpected": True},
    ],
)
async def test_invalid_policies_are_422(api, policy: dict) -> None:
    response = await api.client.put("/v1/discounts/policies/p", json=policy, headers=api.headers())
    problem(response, 422)


async def test_invalid_policy_key_is_422(api) -> None:
    response = await api.client.put(
        "/v1/discounts/policies/Not_A_Key", json=PREMIUM, headers=api.headers()
    )
    problem(response, 422, "invalid-policy")


async def test_stacking_settings_cap_the_total(api) -> None:
    h = api.headers()
    default = await api.client.get("/v1/discounts/settings/stacking", headers=h)
    assert default.json() == {"max_fraction": "1", "max_amounts": {}}
    put = await api.client.put(
        "/v1/discounts/settings/stacking",
        json={"max_fraction": "0.5", "max_amounts": {"eur": "15.00"}},
        headers=h,
    )
    assert put.status_code == 200, put.text
    assert put.json() == {"max_fraction": "0.5", "max_amounts": {"EUR": "15.00"}}
    await setup_welcome_and_premium(api)
    quote = await api.client.post("/v1/discounts/quotes", json=REQUEST, headers=h)
    assert [a["amount"] for a in quote.json()["applied"]] == ["15.00"]
    assert quote.json()["total_discount"] == "15.00"
    problem(
        await api.client.put(
            "/v1/discounts/settings/stacking", json={"max_fraction": "1.5"}, headers=h
        ),
        422,
        "validation",  # outside the schema's 0 < f <= 1 pattern
    )


# --- auth and tenants -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("post", "/v1/discounts/quotes", "discount:quote"),
        ("post", "/v1/discounts/redemptions", "discount:redeem"),
        ("get", "/v1/discounts/redemptions", "discount:read"),
        ("get", "/v1/discounts/coupons", "discount:read"),
        ("post", "/v1/discounts/coupons", "discount:admin"),
        ("put", "/v1/discounts/policies/p", "discount:admin"),
        ("get", "/v1/discounts/policies", "discount:read"),
        ("put", "/v1/discounts/settings/stacking", "discount:admin"),
    ],
)
async def test_every_route_needs_a_token_and_its_scope(
    api, method: str, path: str, scope: str
) -> None:
    send = getattr(api.client, method)
    kwargs = {"json": {}} if method in ("post", "put") else {}
    problem(await send(path, **kwargs), 401, "unauthorized")
    bad = {"authorization": "Bearer not-a-jwt"}
    problem(await send(path, headers=bad, **kwargs), 401, "unauthorized")
    others = [
        s
        for s in ("discount:read", "discount:quote", "discount:redeem", "discount:admin")
        if s != scope
    ]
    forbidden = problem(await send(path, headers=api.headers(*others), **kwargs), 403)
    assert forbidden["required_scope"] == scope


async def test_tenants_never_see_each_other(api) -> None:
    await setup_welcome_and_premium(api, tenant="acme")
    body = (await redeem(api, tenant="acme")).json()
    other = api.headers(tenant="globex")
    quote = await api.client.post("/v1/discounts/quotes", json=REQUEST, headers=other)
    assert quote.json()["applied"] == []
    assert quote.json()["rejected"] == [{"code": "WELCOME10", "reason": "unknown"}]
    problem(await api.client.get(f"/v1/discounts/redemptions/{body['id']}", headers=other), 404)
    assert (await api.client.get("/v1/discounts/redemptions", headers=other)).json()["items"] == []
    assert (await api.client.get("/v1/discounts/coupons", headers=other)).json()["items"] == []
    assert (await api.client.get("/v1/discounts/policies", headers=other)).json()["items"] == []
    problem(await api.client.delete("/v1/discounts/coupons/WELCOME10", headers=other), 404)
    # The same idempotency key in another tenant is another redemption.
    fresh = await redeem(api, {**REQUEST, "coupon_codes": []}, tenant="globex")
    assert fresh.status_code == 201
    assert fresh.json()["id"] != body["id"]
    assert (fresh.json()["total_discount"], fresh.json()["amount_after"]) == ("0.00", "200.00")


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 200.0},  # a JSON number goes through float: refused
        {"amount": 200},
        {"amount": "-1.00"},
        {"amount": "10.001"},
        {"amount": "NaN"},
        {"amount": "1e3"},
        {"amount": "99999999999999999999"},
        {"currency": "XYZ"},
        {"currency": "euro"},
        {"customer": {"id": ""}},
        {"customer": None},
        {"coupon_codes": ["X"] * 21},
        {"coupon_codes": "WELCOME10"},
        {"extra": "field"},
    ],
)
async def test_bad_requests_are_4xx_problems(api, change: dict) -> None:
    payload = {**REQUEST, **change}
    for path, extra in (
        ("/v1/discounts/quotes", {}),
        ("/v1/discounts/redemptions", {"Idempotency-Key": "bad"}),
    ):
        response = await api.client.post(path, json=payload, headers=api.headers(**extra))
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "coupon",
    [
        {**WELCOME, "discount": {"type": "percent", "rate": 0.1}},
        {**WELCOME, "discount": {"type": "percent", "rate": "0"}},
        {**WELCOME, "discount": {"type": "fixed", "amount": "5.001", "currency": "EUR"}},
        {**WELCOME, "discount": {"type": "fixed", "amount": "-5", "currency": "EUR"}},
        {**WELCOME, "discount": {"type": "bogus"}},
        {**WELCOME, "code": "has space"},
        {**WELCOME, "ends_at": "2023-01-01T00:00:00Z"},
        {**WELCOME, "max_redemptions": 0},
        {**WELCOME, "max_redemptions": True},
        {**WELCOME, "minimum": {"amount": "-1", "currency": "EUR"}},
    ],
)
async def test_invalid_coupons_are_422_and_not_stored(api, coupon: dict) -> None:
    response = await api.client.post("/v1/discounts/coupons", json=coupon, headers=api.headers())
    problem(response, 422)
    listed = await api.client.get("/v1/discounts/coupons", headers=api.headers())
    assert listed.json()["items"] == []


async def test_malformed_json_is_400(api) -> None:
    response = await api.client.post(
        "/v1/discounts/quotes",
        content=b'{"customer": ',
        headers={**api.headers(), "content-type": "application/json"},
    )
    problem(response, 400, "malformed-json")


async def test_huge_body_is_413(api) -> None:
    huge = json.dumps({**REQUEST, "reference": "x" * 2_000_000}).encode()
    response = await api.client.post(
        "/v1/discounts/quotes",
        content=huge,
        headers={**api.headers(), "content-type": "application/json"},
    )
    problem(response, 413, "payload-too-large")


@pytest.mark.parametrize("path", ["/v1/discounts/redemptions", "/v1/discounts/coupons"])
async def test_bad_cursor_is_400(api, path: str) -> None:
    response = await api.client.get(f"{path}?cursor=not-a-cursor", headers=api.headers())
    problem(response, 400, "invalid-cursor")


async def test_coupons_page_by_their_opaque_cursor(api) -> None:
    codes = ["A1", "B2", "C3"]
    for code in codes:
        created = await api.client.post(
            "/v1/discounts/coupons", json={**WELCOME, "code": code}, headers=api.headers()
        )
        assert created.status_code == 201, created.text
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (
            await api.client.get("/v1/discounts/coupons", params=params, headers=api.headers())
        ).json()
        seen += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor not in codes  # opaque, as every cursor
    assert seen == codes


async def test_history_pages_newest_first(api) -> None:
    ids = [
        (await redeem(api, {**REQUEST, "coupon_codes": []}, key=f"k-{i}")).json()["id"]
        for i in range(3)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/discounts/redemptions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.client.get(url, headers=api.headers())).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


# --- samples ----------------------------------------------------------------------------


async def test_embedded_runtime_loads_the_samples_once(
    tmp_path, embedded_platform, discount_settings
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'samples.db'}"
    for _ in range(2):
        app = create_app(discount_settings(url, load_sample_data=None), embedded_platform)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
                token = app.state.ctx.tokens.mint(
                    subject="t", tenant="demo", scopes=["discount:read", "discount:quote"]
                )
                h = {"authorization": f"Bearer {token}"}
                coupons = (await client.get("/v1/discounts/coupons", headers=h)).json()["items"]
                policies = (await client.get("/v1/discounts/policies", headers=h)).json()["items"]
                quote = await client.post(
                    "/v1/discounts/quotes",
                    json={**REQUEST, "coupon_codes": ["WELCOME10", "SUMMER2020"]},
                    headers=h,
                )
    assert [c["code"] for c in coupons] == [
        "LAUNCH3",
        "SAVE5EUR",
        "SUMMER2020",
        "VIP25",
        "WELCOME10",
    ]
    assert [p["key"] for p in policies] == ["premium-customers", "volume-eur", "volume-usd"]
    assert quote.json()["total_discount"] == "29.00"
    assert quote.json()["rejected"] == [{"code": "SUMMER2020", "reason": "expired"}]


async def test_a_coupon_given_only_an_end_has_no_lower_bound(api) -> None:
    """starts_at defaults to no lower bound, not to the creation time: a coupon whose only
    bound is an end already passed is a valid (expired) coupon, one with a future end applies
    now, and a stored coupon without a start reads back as such."""
    h = api.headers()
    base = {"name": "Ends only", "discount": {"type": "percent", "rate": "0.10"}}
    past = await api.client.post(
        "/v1/discounts/coupons",
        json={**base, "code": "ENDED", "ends_at": "2020-01-01T00:00:00Z"},
        headers=h,
    )
    assert past.status_code == 201, past.text
    assert past.json()["starts_at"] is None
    future = await api.client.post(
        "/v1/discounts/coupons",
        json={**base, "code": "UNTIL", "ends_at": "2999-01-01T00:00:00Z"},
        headers=h,
    )
    assert future.status_code == 201, future.text
    read = await api.client.get("/v1/discounts/coupons/until", headers=h)
    assert read.json()["starts_at"] is None and read.json()["ends_at"] == "2999-01-01T00:00:00Z"
    quote = await api.client.post(
        "/v1/discounts/quotes",
        json={**REQUEST, "coupon_codes": ["ENDED", "UNTIL"]},
        headers=h,
    )
    assert quote.status_code == 200, quote.text
    assert [a["code"] for a in quote.json()["applied"]] == ["UNTIL"]
    assert quote.json()["rejected"] == [{"code": "ENDED", "reason": "expired"}]
