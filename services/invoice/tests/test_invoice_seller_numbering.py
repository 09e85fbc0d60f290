"""Gapless numbers per (seller, document type, series), on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_common.db import create_engine, session_factory
from invoice_service.adapters.unit_of_work import uow_factory
from invoice_service.domain.sellers import DocumentType
from invoice_service.service_layer.ports import UnitOfWorkFactory

INVOICE, CREDIT_NOTE = DocumentType.INVOICE, DocumentType.CREDIT_NOTE


@pytest.fixture
async def uow(migrated_database_url: str) -> AsyncIterator[UnitOfWorkFactory]:
    engine = create_engine(migrated_database_url)
    try:
        yield uow_factory(session_factory(engine), None)
    finally:
        await engine.dispose()


async def test_each_seller_type_and_series_counts_on_its_own(uow: UnitOfWorkFactory) -> None:
    async with uow("acme") as unit:
        numbers = unit.numbers
        assert await numbers.next_sequence("INV") == 1  # no seller: as before sellers
        assert await numbers.next_sequence("INV", seller_id="s-1") == 1
        assert await numbers.next_sequence("INV", seller_id="s-1") == 2
        assert await numbers.next_sequence("INV", seller_id="s-2") == 1
        assert await numbers.next_sequence("INV", seller_id="s-1", document_type=CREDIT_NOTE) == 1
        assert await numbers.next_sequence("CN", seller_id="s-1", document_type=CREDIT_NOTE) == 1
        assert await numbers.next_sequence("INV") == 2
        await unit.commit()
    async with uow("globex") as unit:
        assert await unit.numbers.next_sequence("INV", seller_id="s-1") == 1
    with pytest.raises(ValueError, match="without a seller"):
        async with uow("acme") as unit:
            await unit.numbers.next_sequence("CN", document_type=CREDIT_NOTE)


async def test_any_interleaving_gives_every_key_1_to_n_and_a_rollback_no_gap(
    uow: UnitOfWorkFactory,
) -> None:
    keys: list[tuple[str | None, DocumentType, str]] = [
        (seller, kind, series)
        for seller in ("s-1", "s-2")
        for kind in (INVOICE, CREDIT_NOTE)
        for series in ("A", "B")
    ] + [(None, INVOICE, "A")]
    draws = random.Random(12).choices(keys, k=60)
    taken: dict[tuple[str | None, DocumentType, str], list[int]] = {key: [] for key in keys}
    for start in range(0, len(draws), 15):
        async with uow("acme") as unit:
            for seller, kind, series in draws[start : start + 15]:
                number = await unit.numbers.next_sequence(
                    series, seller_id=seller, document_type=kind
                )
                taken[(seller, kind, series)].append(number)
            await unit.commit()
        async with uow("acme") as unit:  # a failed finalization: its numbers go back
            for seller, kind, series in keys:
                await unit.numbers.next_sequence(series, seller_id=seller, document_type=kind)
            await unit.rollback()
    counts = Counter(draws)
    for key in keys:
        assert taken[key] == list(range(1, counts[key] + 1)), key


_KEYS: list[tuple[str | None, DocumentType, str]] = [
    (None, INVOICE, "A"),
    ("s-1", INVOICE, "A"),
    ("s-1", CREDIT_NOTE, "A"),
    ("s-2", INVOICE, "A"),
]


@pytest.fixture
async def sqlite_uow(migrated_sqlite_url: str) -> AsyncIterator[UnitOfWorkFactory]:
    engine = create_engine(migrated_sqlite_url)
    try:
        yield uow_factory(session_factory(engine), None)
    finally:
        await engine.dispose()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    transactions=st.lists(
        st.tuples(st.lists(st.sampled_from(_KEYS), min_size=1, max_size=6), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
async def test_committed_numbers_are_gapless_whatever_rolls_back(
    sqlite_uow: UnitOfWorkFactory,
    transactions: list[tuple[list[tuple[str | None, DocumentType, str]], bool]],
) -> None:
    tenant = f"t{uuid.uuid4().hex[:12]}"  # every example counts from nothing
    committed: dict[tuple[str | None, DocumentType, str], list[int]] = {k: [] for k in _KEYS}
    for draws, commits in transactions:
        taken: list[tuple[tuple[str | None, DocumentType, str], int]] = []
        async with sqlite_uow(tenant) as unit:
            for seller, kind, series in draws:
                number = await unit.numbers.next_sequence(
                    series, seller_id=seller, document_type=kind
                )
                taken.append(((seller, kind, series), number))
            if commits:
                await unit.commit()
            else:
                await unit.rollback()
        if commits:
            for key, number in taken:
                committed[key].append(number)
    for numbers in committed.values():
        assert numbers == list(range(1, len(numbers) + 1))
