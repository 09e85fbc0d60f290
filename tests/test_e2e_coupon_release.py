"""A coupon use is never consumed without an invoice: the real tax, discount and invoice
services (embedded runtime) on SQLite and on PostgreSQL, with the invoice's final write made to
fail after the redemption (at the repository, as a database error would).

* the request fails → the invoice service gives the redemption back at once;
* the process "dies" before it can → the sweeper gives it back once the creation is old enough.
Either way the coupon's last use is free again and a retry with the same key works."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from billing_common.auth import ALL_SCOPES
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_common.testing import create_postgres_database, drop_postgres_database
from billing_launcher.registry import app_factory
from billing_launcher.seed_flows import ORDER, key
from invoice_service.adapters import postgres_writes
from invoice_service.adapters.invoices_repository import SqlInvoiceRepository
from invoice_service.adapters.pending_creations_repository import SqlAbandonedCreations
from invoice_service.service_layer import creation

SERVICES = ("tax", "discount", "invoice")


@dataclass
class Trio:
    apps: dict[str, Any]
    clients: dict[str, httpx.AsyncClient]

    def headers(self, **extra: str) -> dict[str, str]:
        tokens = self.apps["invoice"].state.ctx.tokens
        token = tokens.mint(subject="e2e", tenant="demo", scopes=ALL_SCOPES)
        return {"authorization": f"Bearer {token}", **extra}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_urls(request: pytest.FixtureRequest) -> Iterator[dict[str, str | None]]:
    if request.param == "sqlite":
        yield dict.fromkeys(SERVICES)  # one SQLite file per service under data_dir
        return
    created = {name: create_postgres_database() for name in SERVICES}
    try:
        yield {name: url for name, (_, url) in created.items()}
    finally:
        for db_name, _ in created.values():
            drop_postgres_database(db_name)


@pytest.fixture
async def trio(tmp_path: Path, database_urls: dict[str, str | None]) -> AsyncIterator[Trio]:
    embedded = EmbeddedPlatform()
    apps = {
        name: app_factory(name)(
            ServiceSettings.for_service(
                name,
                runtime="embedded",
                data_dir=tmp_path,
                database_url=database_urls[name],
                secrets_file=None,
                load_sample_data=True,
                outbox_poll_seconds=0.2,
            ),
            embedded,
        )
        for name in SERVICES
    }
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        await embedded.bus.start()
        stack.push_async_callback(embedded.bus.stop)
        clients = {}
        for name, app in apps.items():
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url=f"http://{name}",
            )
            stack.push_async_callback(client.aclose)
            clients[name] = client
        yield Trio(apps, clients)


ORDER_WITH_LAST = {**ORDER, "coupon_codes": ["ONLYONE"]}


async def only_one_use(trio: Trio) -> None:
    r = await trio.clients["discount"].post(
        "/v1/discounts/coupons",
        json={
            "code": "ONLYONE",
            "name": "The only one",
            "discount": {"type": "percent", "rate": "0.10"},
            "max_redemptions": 1,
        },
        headers=trio.headers(),
    )
    assert r.status_code == 201, r.text


async def uses_spent(trio: Trio) -> int:
    r = await trio.clients["discount"].get("/v1/discounts/coupons/ONLYONE", headers=trio.headers())
    assert r.status_code == 200, r.text
    return int(r.json()["redeemed_count"])


async def pending_creations(trio: Trio) -> int:
    async with trio.apps["invoice"].state.ctx.engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM invoice_pending_creations"))
            ).scalar_one()
        )


async def tax_calculations_for(trio: Trio, idempotency_key: str) -> list[Any]:
    invoice_id = creation.invoice_id_for("demo", idempotency_key)
    r = await trio.clients["tax"].get(
        "/v1/tax/calculations", params={"reference": invoice_id}, headers=trio.headers()
    )
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def create(trio: Trio, idempotency_key: str) -> httpx.Response:
    return await trio.clients["invoice"].post(
        "/v1/invoices",
        json=ORDER_WITH_LAST,
        headers=trio.headers(**{"Idempotency-Key": idempotency_key}),
    )


def final_write_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The invoice's final write fails: the repository's inserts (SQLite) or the one
    statement that writes it on PostgreSQL (adapters/postgres_writes.py)."""

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT INTO invoice_invoices", {}, Exception("disk I/O error"))

    monkeypatch.setattr(SqlInvoiceRepository, "add", fail)
    monkeypatch.setattr(postgres_writes, "finish_creation", fail)


async def test_a_failed_final_write_gives_the_coupon_use_back(
    trio: Trio, monkeypatch: pytest.MonkeyPatch
) -> None:
    await only_one_use(trio)
    idempotency_key = key()
    with monkeypatch.context() as patch:
        final_write_fails(patch)
        failed = await create(trio, idempotency_key)
        assert failed.status_code >= 500, failed.text
    assert await uses_spent(trio) == 0
    assert await pending_creations(trio) == 0
    assert await tax_calculations_for(trio, idempotency_key) == []
    redemptions = await trio.clients["discount"].get(
        "/v1/discounts/redemptions", headers=trio.headers()
    )
    assert redemptions.json()["items"] == []

    retried = await create(trio, idempotency_key)
    assert retried.status_code == 201, retried.text
    assert retried.json()["discounts"][0]["code"] == "ONLYONE"
    assert await uses_spent(trio) == 1
    assert await pending_creations(trio) == 0
    assert len(await tax_calculations_for(trio, idempotency_key)) == 1


async def test_a_creation_abandoned_by_a_dead_process_is_released_by_the_sweeper(
    trio: Trio, monkeypatch: pytest.MonkeyPatch
) -> None:
    await only_one_use(trio)
    with monkeypatch.context() as patch:
        final_write_fails(patch)

        async def died(*args: Any) -> None:  # the process is gone before it can compensate
            return None

        patch.setattr(creation, "_give_back_safely", died)
        idempotency_key = key()
        failed = await create(trio, idempotency_key)
        assert failed.status_code >= 500
    assert await uses_spent(trio) == 1  # spent, and no invoice has it
    assert await pending_creations(trio) == 1
    assert len(await tax_calculations_for(trio, idempotency_key)) == 1

    deps = trio.apps["invoice"].state.deps
    abandoned = SqlAbandonedCreations(trio.apps["invoice"].state.ctx.sessions)
    # Not old enough yet: a creation still in progress keeps its redemption.
    assert await creation.release_abandoned(deps, abandoned, older_than=timedelta(minutes=10)) == 0
    assert await uses_spent(trio) == 1
    assert await creation.release_abandoned(deps, abandoned, older_than=timedelta(0)) == 1
    assert await uses_spent(trio) == 0
    assert await pending_creations(trio) == 0
    assert await tax_calculations_for(trio, idempotency_key) == []
    # The use is there for the next invoice.
    assert (await create(trio, key())).status_code == 201
    assert await uses_spent(trio) == 1
