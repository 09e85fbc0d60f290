"""Creating an invoice on PostgreSQL (its tenant's sellers cached) sends every statement
on asyncpg connections checked out for the statement (the unit of work's `postgres`), never
through a SQLAlchemy session: no session transaction is begun, committed or closed on the
creation path (issue 11: the session's connection, commit and close were ~15 % of the
invoice process's CPU)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

pytestmark = pytest.mark.parametrize("migrated_database_url", ["postgresql"], indirect=True)


async def test_a_creation_begins_no_session_transaction(api_any_db, make_body, monkeypatch):
    api = api_any_db
    # The first creation fills this process's seller cache (through the session); the
    # creations after it are the hot path.
    assert (await api.create(make_body())).status_code == 201
    engine = api.ctx.sessions.kw["bind"].sync_engine

    async def nothing_published() -> int:
        return 0

    # The outbox relay reads through a session of its own, at any moment: not counted here.
    monkeypatch.setattr(api.ctx.relay, "publish_pending", nothing_published)
    begun: list[Any] = []

    def on_begin(connection: Any) -> None:
        begun.append(connection)

    event.listen(engine, "begin", on_begin)
    try:
        created = await api.create(make_body(coupon_codes=["WELCOME10"]))
    finally:
        event.remove(engine, "begin", on_begin)
    assert created.status_code == 201, created.text
    assert begun == []
    # What was written is all there, as on the session path.
    read = await api.client.get(f"/v1/invoices/{created.json()['id']}", headers=api.headers())
    assert read.status_code == 200
    assert read.json()["total"] == created.json()["total"]
