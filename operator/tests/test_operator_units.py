"""The operator's parts without Kopf: spec-to-body mapping, tenants, configuration, tokens,
the HTTP client's sorting of failures, and the Ready condition bookkeeping."""

from __future__ import annotations

import json
from typing import Any

import httpx
import kopf
import pytest
from pydantic import ValidationError

from billing_common.auth import TokenService
from billing_operator.client import (
    ServiceClient,
    ServiceRejected,
    ServiceUnavailable,
    describe_problem,
)
from billing_operator.config import OperatorConfig
from billing_operator.handlers import TAX_RULE, Reconciler, drifted_fields, set_ready
from billing_operator.payloads import (
    SpecError,
    TenantMissing,
    TenantRefused,
    discount_policy_body,
    resolve_tenant,
    resource_key,
    tax_rule_body,
)
from billing_operator.tokens import TokenMinter

KEY = "unit-test-signing-key-0123456789abcdefgh"

# --- keys and tenants ---------------------------------------------------------------------


def test_resource_key_is_namespace_dot_name_and_bounded() -> None:
    assert resource_key("billing-demo", "de-vat") == "billing-demo.de-vat"
    assert len(resource_key("n" * 63, "x" * 189)) == 253
    with pytest.raises(SpecError, match="at most 253"):
        resource_key("n" * 63, "x" * 190)


def test_tenant_is_the_namespaces_and_spec_tenant_may_only_repeat_it() -> None:
    assert resolve_tenant({}, ["globex"], "house") == "globex"
    assert resolve_tenant({"tenant": "globex"}, ["globex"], "house") == "globex"
    assert resolve_tenant({}, [], "house") == "house"
    assert resolve_tenant({"tenant": "house"}, [], "house") == "house"
    with pytest.raises(TenantRefused, match="'acme' is not this namespace's tenant 'globex'"):
        resolve_tenant({"tenant": "acme"}, ["globex"], "house")
    with pytest.raises(TenantRefused):
        resolve_tenant({"tenant": "acme"}, [], "house")
    with pytest.raises(TenantMissing, match="no tenant"):
        resolve_tenant({}, [], None)
    with pytest.raises(TenantMissing, match=r"spec\.tenant 'acme' alone is not enough"):
        resolve_tenant({"tenant": "acme"}, [], None)
    with pytest.raises(SpecError, match="does not match"):
        resolve_tenant({}, ["Not A Tenant"], None)


def test_drift_compares_values_as_the_service_means_them() -> None:
    desired = {
        "rate": "0.19",
        "valid_from": "2007-01-01",
        "starts_at": "2026-01-01T00:00:00Z",
        "jurisdiction": {"country": "DE", "region": None},
        "tiers": [{"minimum": "500.00"}],
        "priority": 0,
    }
    same = {
        **desired,
        "rate": "0.190",
        "starts_at": "2026-01-01T00:00:00+00:00",
        "tiers": [{"minimum": "500"}],
        "id": "extra fields the operator does not send are not compared",
    }
    assert drifted_fields(desired, same) == []
    changed = {**same, "rate": "0.07", "jurisdiction": {"country": "AT", "region": None}}
    assert drifted_fields(desired, changed) == ["rate", "jurisdiction"]
    assert drifted_fields(desired, {**same, "tiers": []}) == ["tiers"]
    assert drifted_fields(desired, {**same, "priority": 1}) == ["priority"]


# --- bodies -------------------------------------------------------------------------------


def test_tax_rule_body_mirrors_the_spec() -> None:
    spec = {
        "tenant": "acme",
        "displayName": "Quebec QST",
        "jurisdiction": {"country": "CA", "region": "QC"},
        "category": "standard",
        "rate": "0.09975",
        "compound": True,
        "priority": 10,
        "validFrom": "2013-01-01",
        "validTo": "2030-01-01",
    }
    assert tax_rule_body(spec) == {
        "name": "Quebec QST",
        "jurisdiction": {"country": "CA", "region": "QC"},
        "category": "standard",
        "rate": "0.09975",
        "compound": True,
        "priority": 10,
        "valid_from": "2013-01-01",
        "valid_to": "2030-01-01",
    }
    assert tax_rule_body({**spec, "rate": "0", "zeroRated": True})["zero_rated"] is True
    assert tax_rule_body({**spec, "supply": "goods"})["supply"] == "goods"


@pytest.mark.parametrize("rate", [0.19, 19, None, "abc", "1e"])
def test_tax_rule_rate_must_be_a_decimal_string(rate: Any) -> None:
    spec = {
        "displayName": "x",
        "jurisdiction": {"country": "DE"},
        "category": "standard",
        "rate": rate,
    }
    with pytest.raises(SpecError):
        tax_rule_body(spec)


def test_tax_rule_missing_required_field() -> None:
    with pytest.raises(SpecError, match=r"spec\.category is required"):
        tax_rule_body({"displayName": "x", "jurisdiction": {"country": "DE"}, "rate": "0.1"})


def test_user_type_policy_body_leaves_out_absent_fields() -> None:
    body = discount_policy_body(
        {
            "displayName": "Premium 5%",
            "kind": "user_type",
            "customerType": "premium",
            "discount": {"type": "percent", "rate": "0.05"},
        }
    )
    assert body == {
        "name": "Premium 5%",
        "kind": "user_type",
        "customer_type": "premium",
        "discount": {"type": "percent", "rate": "0.05"},
    }


def test_fixed_discount_keeps_amount_and_currency_and_refuses_floats() -> None:
    spec = {
        "displayName": "Tiers",
        "kind": "threshold",
        "currency": "EUR",
        "tiers": [
            {
                "minimum": "100.00",
                "discount": {"type": "fixed", "amount": "5.00", "currency": "EUR"},
            }
        ],
    }
    assert discount_policy_body(spec)["tiers"] == [
        {"minimum": "100.00", "discount": {"type": "fixed", "amount": "5.00", "currency": "EUR"}}
    ]
    spec["tiers"][0]["minimum"] = 100.0  # type: ignore[index]
    with pytest.raises(SpecError, match=r"tiers\[0\]\.minimum"):
        discount_policy_body(spec)


def test_drift_check_waits_for_the_handlers() -> None:
    """The timer leaves alone what a handler is still working on (Kopf's progress
    annotation), what was never applied, a stale Ready and a refused spec."""
    reconciler = Reconciler(OperatorConfig(jwt_signing_key=KEY))
    ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "observedGeneration": 2}
    status = {"tenant": "acme", "conditions": [ready]}
    meta: dict[str, Any] = {"generation": 2, "annotations": {}}
    assert reconciler._drift_check_due(TAX_RULE, meta, status)
    busy = {**meta, "annotations": {"billing.example.dev/tax-apply": "{}"}}
    assert not reconciler._drift_check_due(TAX_RULE, busy, status)
    other = {**meta, "annotations": {"billing.example.dev/discount-apply": "{}"}}
    assert reconciler._drift_check_due(TAX_RULE, other, status)
    assert not reconciler._drift_check_due(TAX_RULE, meta, {"conditions": [ready]})
    assert not reconciler._drift_check_due(TAX_RULE, {**meta, "generation": 3}, status)
    for reason in ("Rejected", "InvalidSpec"):
        refused = {**status, "conditions": [{**ready, "status": "False", "reason": reason}]}
        assert not reconciler._drift_check_due(TAX_RULE, meta, refused)
    unavailable = {
        **status,
        "conditions": [{**ready, "status": "False", "reason": "ServiceUnavailable"}],
    }
    assert reconciler._drift_check_due(TAX_RULE, meta, unavailable)  # the timer's own retry
    deleting = {**meta, "deletionTimestamp": "2026-12-01T00:00:00Z"}
    assert not reconciler._drift_check_due(TAX_RULE, deleting, status)


# --- configuration and tokens -------------------------------------------------------------


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "TAX_URL": "http://tax:8001/",
            "JWT_SIGNING_KEY": KEY,
            "OPERATOR_DEFAULT_TENANT": "house",
            "OPERATOR_POST_EVENTS": "false",
            "WATCH_NAMESPACES": "a, b,,",
            "OPERATOR_RETRY_BASE_SECONDS": "2",
            "OPERATOR_DRIFT_INTERVAL_SECONDS": "30",
            "OPERATOR_DELETE_MAX_RETRIES": "3",
            "OPERATOR_DELETE_TIMEOUT_SECONDS": "120",
        }
    )
    assert (
        config.drift_interval_seconds,
        config.delete_max_retries,
        config.delete_timeout_seconds,
    ) == (30.0, 3, 120.0)
    assert config.tax_url == "http://tax:8001"
    assert config.discount_url == "http://localhost:3500/v1.0/invoke/discount/method"
    assert config.default_tenant == "house"
    assert config.post_events is False
    assert config.watch_namespaces == ("a", "b")
    assert [config.retry_delay(n) for n in range(10)][:4] == [2.0, 4.0, 8.0, 16.0]
    assert config.retry_delay(100) == config.retry_max_seconds


@pytest.mark.parametrize(
    "env",
    [
        {},  # no signing key at all
        {"JWT_SIGNING_KEY": "short"},
        {"JWT_SIGNING_KEY": KEY, "TAX_URL": "tax:8001"},
        {"JWT_SIGNING_KEY": KEY, "OPERATOR_TOKEN_TTL_SECONDS": "5"},
    ],
)
def test_config_refuses_bad_settings(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        OperatorConfig.from_env(env)


def test_tokens_are_accepted_by_the_platforms_verifier() -> None:
    token = TokenMinter(KEY, issuer="billing-platform", audience="billing-api", ttl_seconds=60)
    principal = TokenService(KEY, issuer="billing-platform", audience="billing-api").verify(
        token.mint(tenant="acme", scope="tax:admin")
    )
    assert (principal.subject, principal.tenant, principal.scopes) == (
        "billing-operator",
        "acme",
        frozenset({"tax:admin"}),
    )
    with pytest.raises(ValueError, match="32 characters"):
        TokenMinter("short", issuer="i", audience="a", ttl_seconds=60)


# --- the HTTP client ----------------------------------------------------------------------


def _client(handler: Any) -> ServiceClient:
    minter = TokenMinter(KEY, issuer="billing-platform", audience="billing-api", ttl_seconds=60)
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ServiceClient("http://tax", "tax:admin", "tax:read", minter, http)


async def test_put_created_and_replaced() -> None:
    statuses = iter([201, 200])
    client = _client(lambda request: httpx.Response(next(statuses), json={}))
    assert (await client.put("/r", tenant="acme", body={})).created is True
    assert (await client.put("/r", tenant="acme", body={})).created is False


@pytest.mark.parametrize("status", [500, 502, 503, 429, 401, 409])
async def test_retryable_statuses(status: int) -> None:
    client = _client(lambda request: httpx.Response(status, headers={"Retry-After": "7"}))
    with pytest.raises(ServiceUnavailable) as caught:
        await client.put("/r", tenant="acme", body={})
    assert caught.value.retry_after == 7.0


async def test_unreachable_service_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServiceUnavailable, match="ConnectError"):
        await _client(refuse).put("/r", tenant="acme", body={})


async def test_validation_problem_is_final_and_kept() -> None:
    problem = {
        "type": "/problems/validation",
        "title": "Invalid request",
        "status": 422,
        "errors": [{"loc": ["body", "rate"], "msg": "must be a decimal string"}],
    }
    client = _client(lambda request: httpx.Response(422, json=problem))
    with pytest.raises(ServiceRejected) as caught:
        await client.put("/r", tenant="acme", body={})
    assert caught.value.problem == problem
    assert str(caught.value) == "Invalid request (rate: must be a decimal string)"


async def test_get_reads_with_the_read_scope_and_knows_absence() -> None:
    verifier = TokenService(KEY, issuer="billing-platform", audience="billing-api")
    scopes: list[frozenset[str]] = []
    answers = iter(
        [httpx.Response(200, json={"rate": "0.19"}), httpx.Response(404), httpx.Response(503)]
    )

    def serve(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        scopes.append(verifier.verify(token).scopes)
        return next(answers)

    client = _client(serve)
    assert await client.get("/r", tenant="acme") == {"rate": "0.19"}
    assert await client.get("/r", tenant="acme") is None
    with pytest.raises(ServiceUnavailable):
        await client.get("/r", tenant="acme")
    assert scopes == [frozenset({"tax:read"})] * 3


async def test_delete_treats_a_missing_key_as_done() -> None:
    statuses = iter([204, 404])
    client = _client(lambda request: httpx.Response(next(statuses)))
    assert await client.delete("/r", tenant="acme") is True
    assert await client.delete("/r", tenant="acme") is False


async def test_requests_carry_a_bearer_token_and_json() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201)

    await _client(record).put("/v1/tax/rules/by-key/a.b", tenant="acme", body={"rate": "0.1"})
    (request,) = seen
    assert request.url == "http://tax/v1/tax/rules/by-key/a.b"
    assert request.headers["authorization"].startswith("Bearer ")
    assert json.loads(request.content) == {"rate": "0.1"}


def test_describe_problem_without_fields() -> None:
    assert describe_problem(400, {}) == "HTTP 400"
    assert describe_problem(422, {"title": "Bad", "detail": "why"}) == "Bad: why"


# --- the Ready condition ------------------------------------------------------------------


def test_ready_condition_keeps_transition_time_until_the_status_flips() -> None:
    other = {"type": "Synced", "status": "True"}
    first = kopf.Patch()
    set_ready(first, {"conditions": [other]}, 1, ready=False, reason="R", message="m")
    conditions = first["status"]["conditions"]
    assert conditions[0] == other
    since = conditions[1]["lastTransitionTime"]

    steady = kopf.Patch()
    status = {"conditions": conditions}
    set_ready(steady, status, 2, ready=False, reason="R2", message="again")
    (ready,) = [c for c in steady["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["lastTransitionTime"] == since
    assert (ready["reason"], ready["observedGeneration"]) == ("R2", 2)
    assert steady["status"]["observedGeneration"] == 2

    flipped = kopf.Patch()
    conditions[1]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    set_ready(flipped, {"conditions": conditions}, 3, ready=True, reason="OK", message="ok")
    (ready,) = [c for c in flipped["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "True"
    assert ready["lastTransitionTime"] != "2000-01-01T00:00:00Z"
