"""HTTP API tests through httpx's ASGI transport with the app's real lifespan (migrations,
outbox relay, embedded bus): auth, tenant isolation, rule CRUD and upsert-by-key,
calculations and history, and bad input — always a problem document, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from billing_common.event_schemas import TAX_CALCULATED
from billing_common.events import CloudEvent
from billing_common.problems import PROBLEM_CONTENT_TYPE

RULES = "/v1/tax/rules"
CALCS = "/v1/tax/calculations"


def rule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jurisdiction": {"country": "DE", "region": None},
        "category": "standard",
        "name": "DE VAT standard",
        "rate": "0.19",
        "valid_from": "2021-01-01",
    }
    body.update(overrides)
    return body


def calc_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "currency": "EUR",
        "jurisdiction": {"country": "DE", "region": None},
        "customer": {"id": "c-1", "tax_status": "standard", "tax_id": None},
        "price_mode": "exclusive",
        "date": "2026-11-24",
        "reference": "inv_123",
        "lines": [
            {
                "id": "1",
                "description": "Widget",
                "unit_price": "100.00",
                "quantity": "2",
                "category": "standard",
            }
        ],
    }
    body.update(overrides)
    return body


def assert_problem(response: Any, status: int, problem_type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    if problem_type is not None:
        assert problem["type"] == f"/problems/{problem_type}"
    return problem


async def seed_de(api: Any, tenant: str = "acme") -> None:
    headers = api.headers("tax:admin", tenant=tenant)
    for body in (
        rule_body(),
        rule_body(category="food", rate="0.07", name="DE VAT reduced (food)"),
        rule_body(category="books", rate="0", zero_rated=True, name="DE books (illustrative 0)"),
    ):
        response = await api.client.post(RULES, json=body, headers=headers)
        assert response.status_code == 201, response.text


# --- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", RULES), ("POST", RULES), ("POST", CALCS), ("GET", CALCS), ("GET", f"{CALCS}/x")],
)
async def test_every_route_needs_a_token(api: Any, method: str, path: str) -> None:
    response = await api.client.request(method, path, json={})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_forged_token_is_refused(api: Any) -> None:
    response = await api.client.get(RULES, headers={"authorization": "Bearer not.a.jwt"})
    assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    ("method", "path", "scope", "needed"),
    [
        ("POST", RULES, "tax:read", "tax:admin"),
        ("PUT", f"{RULES}/by-key/k", "tax:calculate", "tax:admin"),
        ("DELETE", f"{RULES}/by-key/k", "tax:read", "tax:admin"),
        ("DELETE", f"{RULES}/some-id", "tax:read", "tax:admin"),
        ("GET", RULES, "tax:calculate", "tax:read"),
        ("POST", CALCS, "tax:read", "tax:calculate"),
        ("GET", CALCS, "tax:calculate", "tax:read"),
    ],
)
async def test_scopes_are_enforced(
    api: Any, method: str, path: str, scope: str, needed: str
) -> None:
    response = await api.client.request(method, path, json={}, headers=api.headers(scope))
    problem = assert_problem(response, 403, "insufficient-scope")
    assert problem["required_scope"] == needed


# --- rules -------------------------------------------------------------------------------


async def test_rule_crud(api: Any) -> None:
    admin = api.headers("tax:admin", "tax:read")
    created = await api.client.post(RULES, json=rule_body(key="de-vat-std"), headers=admin)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["rate"] == "0.19"
    assert rule["key"] == "de-vat-std"
    assert (rule["zero_rated"], rule["compound"], rule["priority"]) == (False, False, 0)

    fetched = await api.client.get(f"{RULES}/{rule['id']}", headers=admin)
    assert fetched.json() == rule

    replaced = await api.client.put(
        f"{RULES}/{rule['id']}",
        json=rule_body(
            key="de-vat-std", rate="0.16", valid_to="2020-12-31", valid_from="2020-07-01"
        ),
        headers=admin,
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["rate"], replaced.json()["valid_to"]) == ("0.16", "2020-12-31")
    assert replaced.json()["created_at"] == rule["created_at"]

    listed = await api.client.get(RULES, params={"country": "de"}, headers=admin)
    assert listed.json()["total"] == 1
    assert listed.json()["items"][0]["rate"] == "0.16"

    deleted = await api.client.delete(f"{RULES}/{rule['id']}", headers=admin)
    assert deleted.status_code == 204
    assert_problem(
        await api.client.get(f"{RULES}/{rule['id']}", headers=admin), 404, "rule-not-found"
    )
    assert_problem(await api.client.delete(f"{RULES}/{rule['id']}", headers=admin), 404)


async def test_rule_list_filters_and_pages(api: Any) -> None:
    await seed_de(api)
    headers = api.headers("tax:read")
    page = await api.client.get(RULES, params={"limit": 2}, headers=headers)
    assert (page.json()["total"], len(page.json()["items"])) == (3, 2)
    rest = await api.client.get(RULES, params={"limit": 2, "offset": 2}, headers=headers)
    assert len(rest.json()["items"]) == 1
    food = await api.client.get(RULES, params={"category": "FOOD"}, headers=headers)
    assert [r["name"] for r in food.json()["items"]] == ["DE VAT reduced (food)"]
    before = await api.client.get(RULES, params={"valid_on": "2020-12-31"}, headers=headers)
    assert before.json()["total"] == 0


async def test_duplicate_key_is_a_conflict(api: Any) -> None:
    admin = api.headers("tax:admin")
    assert (await api.client.post(RULES, json=rule_body(key="k"), headers=admin)).status_code == 201
    problem = assert_problem(
        await api.client.post(RULES, json=rule_body(key="k"), headers=admin),
        409,
        "duplicate-rule-key",
    )
    assert problem["key"] == "k"


async def test_upsert_by_key_is_idempotent(api: Any) -> None:
    admin = api.headers("tax:admin", "tax:read")
    path = f"{RULES}/by-key/taxrule-de-standard"
    first = await api.client.put(path, json=rule_body(), headers=admin)
    assert first.status_code == 201, first.text
    again = await api.client.put(path, json=rule_body(), headers=admin)
    assert again.status_code == 200
    assert again.json() == first.json()  # same id, same updated_at: nothing was written

    changed = await api.client.put(path, json=rule_body(rate="0.20"), headers=admin)
    assert changed.status_code == 200
    assert changed.json()["id"] == first.json()["id"]
    assert changed.json()["rate"] == "0.2"
    assert (await api.client.get(path, headers=admin)).json() == changed.json()
    listed = await api.client.get(RULES, headers=admin)
    assert listed.json()["total"] == 1

    assert (await api.client.delete(path, headers=admin)).status_code == 204
    assert (await api.client.delete(path, headers=admin)).status_code == 204  # idempotent
    assert_problem(await api.client.get(path, headers=admin), 404, "rule-not-found")


async def test_upsert_accepts_the_operators_body(api: Any) -> None:
    # What billing_operator.payloads.tax_rule_body sends for a TaxRule with rate "0" and no
    # validFrom: zero-rated follows from the rate, and the rule is valid always.
    body = {
        "name": "DE zero-rated",
        "jurisdiction": {"country": "DE", "region": None},
        "category": "zero_rated",
        "rate": "0",
        "compound": False,
        "valid_from": None,
        "valid_to": None,
    }
    admin = api.headers("tax:admin", "tax:calculate")
    path = f"{RULES}/by-key/billing-demo.de-zero-rated"
    response = await api.client.put(path, json=body, headers=admin)
    assert response.status_code == 201, response.text
    assert (response.json()["zero_rated"], response.json()["valid_from"]) == (True, None)
    again = await api.client.put(path, json=body, headers=admin)
    assert (again.status_code, again.json()) == (200, response.json())
    line = {"unit_price": "5.00", "quantity": "1", "category": "zero_rated"}
    calc = await api.client.post(
        CALCS, json=calc_body(lines=[line], date="1990-01-01"), headers=admin
    )
    assert calc.status_code == 201, calc.text
    assert calc.json()["lines"][0]["exemption"] == "zero_rated"


async def test_upsert_by_key_refuses_a_key_in_the_body_and_bad_keys(api: Any) -> None:
    admin = api.headers("tax:admin")
    assert_problem(
        await api.client.put(f"{RULES}/by-key/k", json=rule_body(key="k"), headers=admin),
        422,
        "validation",
    )
    assert_problem(
        await api.client.put(f"{RULES}/by-key/UPPER_case", json=rule_body(), headers=admin),
        422,
        "invalid-rule",
    )


@pytest.mark.parametrize(
    ("overrides", "problem_type"),
    [
        ({"rate": 0.19}, "validation"),  # a JSON number would pass through a float
        ({"rate": "19%"}, "validation"),
        ({"rate": "19"}, "validation"),  # outside the schema's 0..1 pattern
        ({"rate": "0", "zero_rated": False}, "invalid-rule"),
        ({"rate": "0.07", "zero_rated": True}, "invalid-rule"),
        ({"valid_from": "2021-01-01", "valid_to": "2020-01-01"}, "invalid-rule"),
        ({"valid_from": "2021-01-01", "valid_to": "2021-01-01"}, "invalid-rule"),
        ({"valid_from": 1609459200}, "validation"),
        ({"valid_from": "2021-01-01T00:00:00"}, "validation"),
        ({"jurisdiction": {"country": "UK"}}, "invalid-jurisdiction"),
        ({"jurisdiction": {"country": "US", "region": "C A"}}, "invalid-jurisdiction"),
        ({"priority": "1"}, "validation"),
        ({"compound": "yes"}, "validation"),
        ({"colour": "blue"}, "validation"),
    ],
)
async def test_invalid_rules_are_422(
    api: Any, overrides: dict[str, Any], problem_type: str
) -> None:
    response = await api.client.post(
        RULES, json=rule_body(**overrides), headers=api.headers("tax:admin")
    )
    assert_problem(response, 422, problem_type)


async def test_rules_are_per_tenant(api: Any) -> None:
    await seed_de(api, tenant="acme")
    other = api.headers(tenant="globex")
    assert (await api.client.get(RULES, headers=other)).json()["total"] == 0
    [rule, *_] = (await api.client.get(RULES, headers=api.headers(tenant="acme"))).json()["items"]
    assert_problem(await api.client.get(f"{RULES}/{rule['id']}", headers=other), 404)
    assert_problem(
        await api.client.put(f"{RULES}/{rule['id']}", json=rule_body(), headers=other), 404
    )
    assert_problem(await api.client.delete(f"{RULES}/{rule['id']}", headers=other), 404)
    # globex has no DE rules, so the same request is an unknown jurisdiction there.
    assert_problem(
        await api.client.post(CALCS, json=calc_body(), headers=other), 422, "unknown-jurisdiction"
    )


# --- calculations ------------------------------------------------------------------------


async def test_calculation_matches_the_contract(api: Any) -> None:
    await seed_de(api)
    response = await api.client.post(CALCS, json=calc_body(), headers=api.headers("tax:calculate"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["total_net"], body["total_tax"], body["total_gross"]) == (
        "200.00",
        "38.00",
        "238.00",
    )
    assert (body["currency"], body["price_mode"], body["jurisdiction"]) == (
        "EUR",
        "exclusive",
        {"country": "DE", "region": None},
    )
    assert body["created_at"].endswith("Z")
    [line] = body["lines"]
    assert {k: line[k] for k in ("id", "category", "net", "tax", "gross", "exemption")} == {
        "id": "1",
        "category": "standard",
        "net": "200.00",
        "tax": "38.00",
        "gross": "238.00",
        "exemption": None,
    }
    [tax] = line["taxes"]
    assert set(tax) == {"rule_id", "name", "rate", "amount", "compound"}
    assert (tax["name"], tax["rate"], tax["amount"], tax["compound"]) == (
        "DE VAT standard",
        "0.19",
        "38.00",
        False,
    )


async def test_calculation_defaults_and_exemptions(api: Any) -> None:
    await seed_de(api)
    headers = api.headers("tax:calculate")
    minimal = {
        "currency": "eur",
        "jurisdiction": {"country": "de"},
        "lines": [
            {"unit_price": "119.00", "quantity": 1, "category": "standard"},
            {"unit_price": "10.00", "quantity": "3", "category": "books"},
        ],
        "price_mode": "inclusive",
    }
    response = await api.client.post(CALCS, json=minimal, headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["date"] == body["created_at"][:10]  # today
    assert body["customer"] == {"id": None, "tax_status": "standard", "tax_id": None}
    assert [(ln["id"], ln["net"], ln["tax"], ln["exemption"]) for ln in body["lines"]] == [
        ("1", "100.00", "19.00", None),
        ("2", "30.00", "0.00", "zero_rated"),
    ]
    assert body["lines"][1]["taxes"][0]["name"] == "DE books (illustrative 0)"

    # A claim is confirmed by the parties' data: a DE seller, a business in FR with a VAT id
    # that passes the checks. (The bare claim that was once enough is refused: see
    # test_vat_treatment_api.py.)
    reverse = calc_body(
        seller={"country": "DE", "vat_id": "DE136695976"},
        customer={
            "id": "b2b",
            "tax_status": "reverse_charge",
            "tax_id": "FR40303265045",
            "country": "FR",
        },
    )
    response = await api.client.post(CALCS, json=reverse, headers=headers)
    assert response.json()["total_tax"] == "0.00"
    assert response.json()["lines"][0]["exemption"] == "reverse_charge"

    exempt = calc_body(customer={"tax_status": "exempt"})
    response = await api.client.post(CALCS, json=exempt, headers=headers)
    assert (response.json()["total_tax"], response.json()["lines"][0]["exemption"]) == (
        "0.00",
        "exempt_customer",
    )


async def test_history_lists_and_fetches_per_tenant(api: Any) -> None:
    await seed_de(api)
    await seed_de(api, tenant="globex")
    headers = api.headers("tax:calculate", "tax:read")
    ids = []
    for n in range(3):
        response = await api.client.post(
            CALCS, json=calc_body(reference=f"inv_{n}"), headers=headers
        )
        ids.append(response.json()["id"])
    first = await api.client.get(CALCS, params={"limit": 2}, headers=headers)
    assert [c["id"] for c in first.json()["items"]] == ids[:0:-1]
    cursor = first.json()["next_cursor"]
    second = await api.client.get(CALCS, params={"limit": 2, "cursor": cursor}, headers=headers)
    assert [c["id"] for c in second.json()["items"]] == [ids[0]]
    assert second.json()["next_cursor"] is None
    by_reference = await api.client.get(CALCS, params={"reference": "inv_1"}, headers=headers)
    assert [c["id"] for c in by_reference.json()["items"]] == [ids[1]]

    one = await api.client.get(f"{CALCS}/{ids[0]}", headers=headers)
    assert one.status_code == 200
    assert one.json()["lines"][0]["description"] == "Widget"
    assert one.json()["lines"][0]["unit_price"] == "100.00"

    other = api.headers("tax:read", tenant="globex")
    assert_problem(
        await api.client.get(f"{CALCS}/{ids[0]}", headers=other), 404, "calculation-not-found"
    )
    assert (await api.client.get(CALCS, headers=other)).json()["items"] == []
    assert_problem(
        await api.client.get(CALCS, params={"cursor": "garbage!"}, headers=headers),
        400,
        "invalid-cursor",
    )


def _line(**overrides: Any) -> dict[str, Any]:
    return {"unit_price": "1.00", "quantity": "1", "category": "standard", **overrides}


@pytest.mark.parametrize(
    ("overrides", "problem_type"),
    [
        ({"lines": [_line(unit_price=100.0)]}, "validation"),  # float
        ({"lines": [_line(unit_price=100)]}, "validation"),  # numbers are never amounts
        ({"lines": [_line(unit_price="1e3")]}, "validation"),
        ({"lines": [_line(unit_price="NaN")]}, "validation"),
        # Signs are outside the schema's decimal pattern (a 422 validation problem).
        ({"lines": [_line(unit_price="-1.00")]}, "validation"),
        ({"lines": [_line(quantity="-1")]}, "validation"),
        ({"lines": [_line(quantity="0")]}, "invalid-calculation-request"),
        ({"lines": [_line(quantity=1.5)]}, "validation"),
        ({"lines": [_line(quantity=True)]}, "validation"),
        ({"lines": [_line(category=7)]}, "validation"),
        ({"lines": [_line(id="a"), _line(id="a")]}, "invalid-calculation-request"),
        ({"lines": [_line(unit_price="999999999999.99", quantity="10")]}, "money"),
        ({"lines": []}, "validation"),
        ({"lines": "nope"}, "validation"),
        ({"currency": "XXX"}, "unknown-currency"),
        ({"currency": "EURO"}, "validation"),
        ({"price_mode": "gross"}, "validation"),
        ({"date": "24.11.2026"}, "validation"),
        ({"date": 20261124}, "validation"),
        ({"jurisdiction": {"country": "UK"}}, "invalid-jurisdiction"),
        ({"jurisdiction": {"country": "IT"}}, "unknown-jurisdiction"),
        ({"jurisdiction": {"country": "DE"}, "date": "2020-12-31"}, "unknown-jurisdiction"),
        ({"lines": [_line(category="reduced")]}, "unknown-category"),
        ({"customer": {"tax_status": "reverse_charge"}}, "tax-id-required"),
        ({"customer": {"tax_status": "vip"}}, "validation"),
        ({"tenant": "globex"}, "validation"),
    ],
)
async def test_bad_calculation_input_is_a_4xx_problem(
    api: Any, overrides: dict[str, Any], problem_type: str
) -> None:
    await seed_de(api)
    response = await api.client.post(
        CALCS, json=calc_body(**overrides), headers=api.headers("tax:calculate", "tax:read")
    )
    assert_problem(response, 422, problem_type)
    # Nothing was stored for a refused request.
    history = await api.client.get(CALCS, headers=api.headers("tax:read"))
    assert history.json()["items"] == []


async def test_unknown_category_problem_names_the_line(api: Any) -> None:
    await seed_de(api)
    body = calc_body(lines=[_line(id="x1", category="Digital")])
    problem = assert_problem(
        await api.client.post(CALCS, json=body, headers=api.headers("tax:calculate")),
        422,
        "unknown-category",
    )
    assert (problem["category"], problem["line_id"], problem["jurisdiction"]) == (
        "digital",
        "x1",
        "DE",
    )


async def test_malformed_json_is_400(api: Any) -> None:
    response = await api.client.post(
        CALCS,
        content=b'{"currency": "EUR", "lines": [',
        headers={**api.headers("tax:calculate"), "content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed-json")


async def test_oversized_body_is_413(api: Any) -> None:
    lines = [_line(id=str(n), description="x" * 400) for n in range(200)]
    response = await api.client.post(
        CALCS, json=calc_body(lines=lines), headers=api.headers("tax:calculate")
    )
    assert_problem(response, 413, "payload-too-large")


# --- on both databases: the full path, and the event ------------------------------------


@pytest.mark.integration
async def test_calculation_is_stored_and_published_on_each_database(api_any_db: Any) -> None:
    api = api_any_db
    received: list[CloudEvent] = []

    async def probe(event: CloudEvent) -> None:
        received.append(event)

    api.platform.bus.subscribe("probe", TAX_CALCULATED, probe)
    await seed_de(api)
    response = await api.client.post(CALCS, json=calc_body(), headers=api.headers())
    assert response.status_code == 201, response.text
    calc = response.json()
    fetched = await api.client.get(f"{CALCS}/{calc['id']}", headers=api.headers())
    assert fetched.json() == calc

    relay = api.app.state.ctx.relay
    while await relay.publish_pending():
        pass
    await api.platform.bus.wait_idle()
    [event] = received
    assert (event.type, event.subject, event.tenant, event.source) == (
        TAX_CALCULATED,
        calc["id"],
        "acme",
        "/billing/tax",
    )
    assert event.data["total_tax"] == "38.00"
    assert event.data["reference"] == "inv_123"
    assert await relay.pending_count() == 0

    ready = await api.client.get("/readyz")
    assert ready.status_code == 200


async def test_tax_rounding_is_per_breakdown_unless_asked_and_is_kept(api_any_db: Any) -> None:
    # Two lines of 0.50 EUR at 19 %: per breakdown 1.00 x 19 % = 0.19, per line 0.10 + 0.10.
    api = api_any_db
    await seed_de(api)
    lines = [
        {"id": str(i), "unit_price": "0.50", "quantity": "1", "category": "standard"}
        for i in (1, 2)
    ]
    answers = {}
    for rounding in (None, "per_breakdown", "per_line"):
        body = calc_body(lines=lines) | ({"tax_rounding": rounding} if rounding else {})
        response = await api.client.post(CALCS, json=body, headers=api.headers())
        assert response.status_code == 201, response.text
        calc = response.json()
        fetched = await api.client.get(f"{CALCS}/{calc['id']}", headers=api.headers())
        assert fetched.json() == calc
        answers[rounding] = calc
    default, per_breakdown, per_line = answers[None], answers["per_breakdown"], answers["per_line"]
    assert default["tax_rounding"] == per_breakdown["tax_rounding"] == "per_breakdown"
    assert [line["tax"] for line in default["lines"]] == ["0.10", "0.09"]
    assert default["total_tax"] == per_breakdown["total_tax"] == "0.19"
    assert [(b["taxable_amount"], b["tax_amount"]) for b in default["breakdown"]] == [
        ("1.00", "0.19")
    ]
    assert per_line["tax_rounding"] == "per_line"
    assert [line["tax"] for line in per_line["lines"]] == ["0.10", "0.10"]
    assert per_line["total_tax"] == "0.20"
    bad = await api.client.post(
        CALCS, json=calc_body(tax_rounding="per_invoice"), headers=api.headers()
    )
    assert_problem(bad, 422, "validation")
