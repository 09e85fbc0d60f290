"""The four services in the dapr runtime, each beside a daprd stand-in (tests/daprd_standin.py)
that delivers over the real RabbitMQ the way daprd and its pubsub.rabbitmq component do, with
the Dapr resources this repository ships: the chart's as Helm renders them, and components/
for `dapr run -f .`. Defects caught here: dead letters that nothing keeps, a trace context that
daprd replaces, topics and secrets and invocations open to every app.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from billing_common.adapters.dapr_bus import DaprEventBus
from billing_common.adapters.dapr_sidecar import DaprUnavailable
from billing_common.auth import ALL_SCOPES
from billing_common.dead_letters import run as dead_letters
from billing_common.event_schemas import PAYMENT_FAILED, PAYMENT_RECEIVED
from billing_common.events import CloudEvent
from billing_common.settings import ServiceSettings
from billing_common.tracing import bind
from billing_launcher.registry import SERVICES, app_factory
from billing_launcher.seed_flows import (
    create_invoice,
    finalize,
    get_invoice,
    pay,
    wait_payable,
    wait_status,
)
from charts.tests.chart_objects import rendered_objects
from tests.daprd_standin import (
    DaprCluster,
    DaprResources,
    RetryPolicy,
    component_policies,
    sidecar_servers,
)

ROOT = Path(__file__).resolve().parents[1]
# Waits between delivery attempts are scaled down; the number of attempts is the policy's.
TIME_SCALE = 0.002
SECRETS = {
    "jwt-signing-key": "delivery-loop-signing-key-0123456789abcdef0123456789",
    "webhook-secret-sandbox": "whsec_delivery_loop",
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# --- the Dapr resources -----------------------------------------------------------------


def chart_resources() -> DaprResources:
    """The chart as Helm renders it with its default values; each app's Configuration is the
    one its Deployment's dapr.io/config annotation names."""
    objects = rendered_objects()
    config_of_app: dict[str, str | None] = {}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        if "dapr.io/app-id" in annotations:
            config_of_app[annotations["dapr.io/app-id"]] = annotations.get("dapr.io/config")
    return DaprResources.from_objects(objects, config_of_app)


def self_hosted_resources() -> DaprResources:
    """components/ as `dapr run -f .` loads it (dapr.yaml: common.configFilePath)."""
    objects = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "components").glob("*.yaml"))]
    dapr_yaml = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    config = yaml.safe_load((ROOT / dapr_yaml["common"]["configFilePath"]).read_text())
    return DaprResources.from_objects(
        objects, {app: config["metadata"]["name"] for app in SERVICES}
    )


@pytest.fixture(scope="module")
def chart() -> DaprResources:
    return chart_resources()


@pytest.fixture(scope="module")
def self_hosted() -> DaprResources:
    return self_hosted_resources()


# --- the platform -----------------------------------------------------------------------


@dataclass
class DaprPlatform:
    cluster: DaprCluster
    apps: dict[str, Any]
    clients: dict[str, httpx.AsyncClient]

    def headers(self, tenant: str = "demo") -> dict[str, str]:
        tokens = self.apps["invoice"].state.ctx.tokens
        token = tokens.mint(subject="e2e", tenant=tenant, scopes=ALL_SCOPES)
        return {"authorization": f"Bearer {token}"}

    def ctx(self, app: str) -> Any:
        return self.apps[app].state.ctx


@asynccontextmanager
async def dapr_platform(
    resources: DaprResources, amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DaprPlatform]:
    cluster = DaprCluster(resources, amqp_url, dict(SECRETS), time_scale=TIME_SCALE)
    apps: dict[str, Any] = {}
    clients: dict[str, httpx.AsyncClient] = {}
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(sidecar_servers(cluster))
        monkeypatch.setenv("DAPR_GRPC_PORT", str(cluster.grpc_port))
        monkeypatch.setenv("DAPR_HTTP_PORT", str(cluster.http_port))
        monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "10")
        monkeypatch.delenv("APP_API_TOKEN", raising=False)
        for name in SERVICES:
            sidecar = cluster.sidecar_for(name)
            # Each app's SDK client and invoker take the token of its own sidecar, read when
            # they are made (the app) and when they connect (its lifespan).
            monkeypatch.setenv("DAPR_API_TOKEN", sidecar.api_token)
            settings = ServiceSettings.for_service(
                name,
                runtime="dapr",
                database_url=f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}",
                migrate_on_start=True,
                secrets_file=None,
                load_sample_data=True,
                outbox_poll_seconds=0.05,
            )
            app = app_factory(name)(settings, None)
            sidecar.attach(app)
            await sidecar.init_components()
            await stack.enter_async_context(app.router.lifespan_context(app))
            # Stop delivering before the app shuts down (exit callbacks run last-in first).
            stack.push_async_callback(sidecar.close)
            await sidecar.subscribe_all()
            apps[name] = app
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"
            )
            stack.push_async_callback(client.aclose)
            clients[name] = client
        yield DaprPlatform(cluster, apps, clients)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await dead_letters(list(argv), out)
    return code, out.getvalue()


def delivery_retry(resources: DaprResources, app: str = "invoice") -> RetryPolicy:
    _, inbound = component_policies(resources.resiliencies, app, "pubsub")
    assert inbound.retry is not None, "no inbound retry policy for the pub/sub component"
    return inbound.retry


# --- the seed's flows -------------------------------------------------------------------


async def test_the_seed_flows_pass_through_daprd_and_rabbitmq(
    chart: DaprResources, amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with dapr_platform(chart, amqp_url, tmp_path, monkeypatch) as p:
        for sidecar in p.cluster.sidecars.values():
            assert sidecar.refused_subscriptions == []
        assert len(p.cluster.sidecars["invoice"].subscriptions) == 5
        assert len(p.cluster.sidecars["payment"].subscriptions) == 6
        h = p.headers()
        inv, pay_client = p.clients["invoice"], p.clients["payment"]

        # Invoice creation: discount before tax, through the sidecars' invocation API.
        invoice = await create_invoice(inv, h)
        assert Decimal(invoice["discount_total"]) == Decimal("22.00")
        assert Decimal(invoice["tax_total"]) == Decimal("35.46")
        assert Decimal(invoice["total"]) == Decimal("233.46")

        # Payment: partial, then the rest, then the PDF; every event over RabbitMQ.
        await finalize(inv, h, invoice["id"])
        await wait_payable(pay_client, h, invoice["id"])
        first = await pay(pay_client, h, invoice["id"], "100.00")
        assert first.status_code == 201 and first.json()["status"] == "succeeded"
        partial = await wait_status(inv, h, invoice["id"], "partially_paid")
        assert Decimal(partial["amount_paid"]) == Decimal("100.00")
        rest = await pay(pay_client, h, invoice["id"], None)
        assert rest.status_code == 201 and Decimal(rest.json()["amount"]) == Decimal("133.46")
        paid = await wait_status(inv, h, invoice["id"], "paid")
        assert Decimal(paid["amount_due"]) == 0
        pdf = await inv.get(f"/v1/invoices/{invoice['id']}/pdf", headers=h)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

        topics = {topic for _, topic, _ in p.cluster.published}
        assert {PAYMENT_RECEIVED, "billing.invoice.finalized.v1"} <= topics


# --- dead letters -----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["chart", "self_hosted"])
async def test_a_payment_event_that_keeps_failing_is_kept_and_replayed(
    source: str,
    request: pytest.FixtureRequest,
    amqp_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 1: after the retries daprd gave up on a payment.received, and the event was
    gone (published to a dead-letter topic nothing consumed). It must wait in a durable queue
    that the dead-letter CLI lists and replays; then the invoice gets paid."""
    from invoice_service.entrypoints import consumers

    resources: DaprResources = request.getfixturevalue(source)
    broken = {"on": True}
    original = consumers.SUBSCRIPTIONS[PAYMENT_RECEIVED]

    async def flaky(event: CloudEvent, deps: Any) -> None:
        if broken["on"]:
            raise RuntimeError("database restarting")
        await original(event, deps)

    monkeypatch.setitem(consumers.SUBSCRIPTIONS, PAYMENT_RECEIVED, flaky)
    async with dapr_platform(resources, amqp_url, tmp_path, monkeypatch) as p:
        h = p.headers()
        inv, pay_client = p.clients["invoice"], p.clients["payment"]
        invoice = await create_invoice(inv, h)
        await finalize(inv, h, invoice["id"])
        await wait_payable(pay_client, h, invoice["id"])
        paid = await pay(pay_client, h, invoice["id"], None)
        assert paid.status_code == 201

        async def dead_lettered() -> bool:
            code, out = await cli("--amqp-url", amqp_url, "--dapr-app", "invoice", "list", "--json")
            return code == 0 and any(
                json.loads(line)["type"] == PAYMENT_RECEIVED for line in out.splitlines()
            )

        await eventually(dead_lettered)
        retry = delivery_retry(resources)
        attempts = [
            a for a in p.cluster.attempts if (a.app_id, a.topic) == ("invoice", PAYMENT_RECEIVED)
        ]
        assert len(attempts) == retry.max_retries + 1  # the policy ran out, then no requeue
        assert all(a.outcome == "retry" for a in attempts)
        assert (await get_invoice(inv, h, invoice["id"]))["status"] == "issued"

        broken["on"] = False
        code, out = await cli("--amqp-url", amqp_url, "--dapr-app", "invoice", "replay", "--all")
        assert code == 0 and "replayed 1 dead letter(s)" in out, out
        settled = await wait_status(inv, h, invoice["id"], "paid")
        assert Decimal(settled["amount_due"]) == 0
        code, out = await cli("--amqp-url", amqp_url, "--dapr-app", "invoice", "list")
        assert "0 dead letter(s) shown from dlq-invoice-billing.payment.received.v1" in out


async def test_refused_events_trace_context_scopes_and_least_privilege(
    chart: DaprResources, amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One platform for several checks (each platform costs a vhost and four app starts)."""
    async with dapr_platform(chart, amqp_url, tmp_path, monkeypatch) as p:
        # 1. A payment event whose data breaks its schema: one attempt, no retries, and it
        #    waits in the dead-letter queue (a DROP would have been acked and lost).
        poison = CloudEvent(
            source="/billing/payment",
            type=PAYMENT_FAILED,
            subject="pay-x",
            tenant="demo",
            traceparent=TRACEPARENT,
            data={"payment_id": "pay-x", "amount": "not money"},
        )
        bind(None)
        await p.ctx("payment").bus.publish(poison)

        async def dead_lettered() -> bool:
            code, out = await cli("--amqp-url", amqp_url, "--dapr-app", "invoice", "list", "--json")
            return code == 0 and any(
                json.loads(line)["id"] == poison.id for line in out.splitlines()
            )

        await eventually(dead_lettered)
        attempts = [a for a in p.cluster.attempts if a.event_id == poison.id]
        assert [(a.app_id, a.status) for a in attempts] == [("invoice", 422)]

        # 2. The trace context survives the sidecar: daprd sets `traceid`/`traceparent` to its
        #    own span unless the envelope has `traceid`.
        (published,) = [json.loads(d) for _, t, d in p.cluster.published if t == PAYMENT_FAILED]
        assert published["traceparent"] == TRACEPARENT
        assert published["id"] == poison.id and published["tenant"] == "demo"

        # 3. Pub/sub scopes: tax may not publish a payment event (nor any other app).
        tax_bus: DaprEventBus = p.ctx("tax").bus
        forged = CloudEvent(
            source="/billing/payment", type=PAYMENT_RECEIVED, tenant="demo", data={}
        )
        with pytest.raises(DaprUnavailable, match="not allowed"):
            await tax_bus.publish(forged)
        assert all(topic != PAYMENT_RECEIVED for _, topic, _ in p.cluster.published)

        # 4. Secret scopes: tax cannot read payment's secrets through its sidecar.
        with pytest.raises(DaprUnavailable, match="access denied"):
            await p.ctx("tax").secrets.get_secret("webhook-secret-sandbox")
        assert await p.ctx("payment").secrets.get_secret("webhook-secret-sandbox")

        # 5. Access control: invoice may call tax, payment may call invoice (it asks about an
        #    invoice it has not heard of yet); nobody may call payment; tax may call neither
        #    discount nor invoice.
        for caller, target in (("invoice", "tax"), ("payment", "invoice")):
            allowed = await p.ctx(caller).invoker.invoke(target, "GET", "/healthz")
            assert allowed.status_code == 200, f"{caller} may not call {target}"
        for caller, target in (("invoice", "payment"), ("tax", "discount"), ("tax", "invoice")):
            refused = await p.ctx(caller).invoker.invoke(target, "GET", "/healthz")
            assert refused.status_code == 403, f"{caller} may call {target}"
