"""Creating an invoice on PostgreSQL (its tenant's sellers cached) sends every statement
on asyncpg connections checked out of the pool by the unit of work (its `_drivers`), never
through a SQLAlchemy session: no session is built, and no session transaction begun,
committed or closed on the creation path (issue 11: the session's connection, commit and
close were ~15 % of the invoice process's CPU, building and closing an unused session
another ~4-5 %). A unit of work keeps the one connection it checked out for all of its
statements: the creation checks out two, one per unit of work (the idempotency lookup with
the pending record, then the final write), never one while waiting on a peer."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker

pytestmark = pytest.mark.parametrize("migrated_database_url", ["postgresql"], indirect=True)


async def test_a_creation_begins_no_session_transaction(api_any_db, make_body, monkeypatch):
    api = api_any_db
    # The first creation fills this process's seller cache (through the session); the
    # creations after it are the hot path.
    assert (await api.create(make_body())).status_code == 201
    sessions = api.ctx.sessions
    engine = sessions.kw["bind"].sync_engine

    async def nothing_published() -> int:
        return 0

    # The outbox relay reads through a session of its own, at any moment: not counted here.
    monkeypatch.setattr(api.ctx.relay, "publish_pending", nothing_published)
    begun: list[Any] = []
    checked_out: list[Any] = []
    built: list[Any] = []

    def on_begin(connection: Any) -> None:
        begun.append(connection)

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_out.append(dbapi_connection)

    build = async_sessionmaker.__call__

    def counting_build(self: async_sessionmaker[Any], **local_kw: Any) -> Any:
        if self is sessions:
            built.append(self)
        return build(self, **local_kw)

    monkeypatch.setattr(async_sessionmaker, "__call__", counting_build)
    event.listen(engine, "begin", on_begin)
    event.listen(engine, "checkout", on_checkout)
    try:
        created = await api.create(make_body(coupon_codes=["WELCOME10"]))
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "checkout", on_checkout)
    assert created.status_code == 201, created.text
    assert begun == []
    assert built == []
    # Two units of work, one connection each (three checkouts when each statement took its
    # own: the lookup and the pending record were two).
    assert len(checked_out) == 2
    # What was written is all there, as on the session path.
    read = await api.client.get(f"/v1/invoices/{created.json()['id']}", headers=api.headers())
    assert read.status_code == 200
    assert read.json()["total"] == created.json()["total"]


async def test_the_lookup_and_the_pending_record_are_one_statement(
    api_any_db, make_body, monkeypatch
):
    """A creation without a named seller sends its idempotency lookup and its pending
    record as one statement (issue 11: one round trip less per invoice), never the two
    statements that made them before."""
    from invoice_service.adapters import postgres_writes

    api = api_any_db
    assert (await api.create(make_body())).status_code == 201  # fills the seller cache
    sent: list[str] = []

    def refused(name: str) -> Any:
        async def statement(*args: Any, **kwargs: Any) -> Any:
            sent.append(name)
            raise AssertionError(f"{name} sent on its own")

        return statement

    monkeypatch.setattr(postgres_writes, "find_by_idempotency_key", refused("lookup"))
    monkeypatch.setattr(postgres_writes, "begin_pending", refused("begin"))
    body = make_body(coupon_codes=["WELCOME10"])
    created = await api.create(body, key="one-statement")
    assert created.status_code == 201, created.text
    assert sent == []
    # The replay is answered from the same statement, and writes no pending record.
    again = await api.create(body, key="one-statement")
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    assert sent == []


async def test_a_seller_read_that_fails_after_the_pending_record_drops_it(
    api_any_db, make_body, monkeypatch
):
    """The default seller is read after the pending record is written (the same statement
    as the lookup): if that read fails, the creation fails with nothing left behind."""
    from sqlmodel import select

    from billing_common.db import DatabaseUnavailable
    from invoice_service.adapters.orm import PendingCreationRow
    from invoice_service.adapters.sellers_repository import SqlSellerRepository

    api = api_any_db

    async def unavailable(self: Any) -> Any:
        raise DatabaseUnavailable("PostgreSQL is unavailable: test")

    monkeypatch.setattr(SqlSellerRepository, "default", unavailable)
    failed = await api.create(make_body(), key="seller-down")
    assert failed.status_code == 503, failed.text
    async with api.ctx.sessions() as session:
        assert (await session.exec(select(PendingCreationRow))).all() == []
