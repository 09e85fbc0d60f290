"""Key/value state in the service's own database (embedded and direct runtimes).
The dapr runtime puts the same port on Dapr's state store."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Text, delete
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import Column, Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.ports import EtagMismatch, StateItem


class KeyValueRow(SQLModel, table=True):
    __tablename__ = "kv_state"

    key: str = Field(primary_key=True, max_length=256)
    value: str = Field(sa_column=Column(Text, nullable=False))
    etag: str = Field(max_length=64)
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


def _expired(row: KeyValueRow) -> bool:
    if row.expires_at is None:
        return False
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    return expires <= datetime.now(UTC)


class SqlKeyValueStore:
    def __init__(self, engine: AsyncEngine, *, namespace: str = "") -> None:
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        self._namespace = namespace

    def _key(self, key: str) -> str:
        return f"{self._namespace}{key}"

    async def get(self, key: str) -> StateItem | None:
        async with self._sessions() as session:
            row = await session.get(KeyValueRow, self._key(key))
            if row is None or _expired(row):
                return None
            return StateItem(key, json.loads(row.value), row.etag)

    async def set(
        self, key: str, value: Any, *, etag: str | None = None, ttl_seconds: int | None = None
    ) -> str:
        new_etag = uuid.uuid4().hex
        expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        async with self._sessions() as session, session.begin():
            row = await session.get(KeyValueRow, self._key(key), with_for_update=True)
            if etag is not None and (row is None or row.etag != etag):
                raise EtagMismatch(key)
            if row is None:
                row = KeyValueRow(key=self._key(key), value="", etag="")
            row.value = json.dumps(value)
            row.etag = new_etag
            row.expires_at = expires
            session.add(row)
        return new_etag

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        async with self._sessions() as session, session.begin():
            statement = delete(KeyValueRow).where(KeyValueRow.key == self._key(key))  # type: ignore[arg-type]
            if etag is not None:
                statement = statement.where(KeyValueRow.etag == etag)  # type: ignore[arg-type]
            result = await (await session.connection()).execute(statement)
            if etag is not None and result.rowcount == 0:  # type: ignore[attr-defined]
                raise EtagMismatch(key)
