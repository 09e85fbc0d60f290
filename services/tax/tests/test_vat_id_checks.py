"""The VatIdChecker adapters: the VIES REST adapter against a local aiohttp server that
answers as VIES does (the real one is not reachable from here), and the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tax_service.adapters.vat_id_checks import (
    SANDBOX_UNREGISTERED,
    SandboxVatIdChecker,
    ViesVatIdChecker,
)

NOW = datetime(2026, 12, 2, 9, tzinfo=UTC)
PATH = "/taxation_customs/vies/rest-api/check-vat-number"


class FakeVies:
    """Answers check-vat-number like VIES: `registered` ids valid, others not; an id in
    `unavailable` gets VIES's MS_UNAVAILABLE error, one in `broken` an HTTP 500."""

    def __init__(self) -> None:
        self.registered = {"FR40303265045"}
        self.unavailable = {"DE136695976"}
        self.broken = {"ATU13585627"}
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        vat_id = body["countryCode"] + body["vatNumber"]
        if vat_id in self.broken:
            return web.Response(status=500, text="oops")
        if vat_id in self.unavailable:
            return web.json_response(
                {"actionSucceed": False, "errorWrappers": [{"error": "MS_UNAVAILABLE"}]}
            )
        requester = "requesterNumber" in body
        return web.json_response(
            {
                "countryCode": body["countryCode"],
                "vatNumber": body["vatNumber"],
                "requestDate": "2026-12-02T09:00:00.000Z",
                "valid": vat_id in self.registered,
                "requestIdentifier": "WAPIAAAAZ1x2y3" if requester else "",
                "name": "---",
                "address": "---",
                "userError": "VALID" if vat_id in self.registered else "INVALID",
            }
        )


@pytest.fixture
async def vies() -> AsyncIterator[tuple[FakeVies, ViesVatIdChecker]]:
    fake = FakeVies()
    app = web.Application()
    app.router.add_post(PATH, fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    checker = ViesVatIdChecker(lambda: NOW, url=str(server.make_url(PATH)), timeout_seconds=5)
    try:
        yield fake, checker
    finally:
        await checker.close()
        await server.close()


async def test_vies_confirms_a_registered_id_with_a_consultation_number(vies: Any) -> None:
    fake, checker = vies
    check = await checker.check("FR40303265045", requester="DE 136695976")
    assert (check.valid, check.source, check.request_id, check.checked_at) == (
        True,
        "vies",
        "WAPIAAAAZ1x2y3",
        NOW,
    )
    assert fake.requests == [
        {
            "countryCode": "FR",
            "vatNumber": "40303265045",
            "requesterMemberStateCode": "DE",
            "requesterNumber": "136695976",
        }
    ]


async def test_vies_reports_an_unknown_id_as_invalid(vies: Any) -> None:
    _, checker = vies
    check = await checker.check("DE123456788")
    assert (check.valid, check.source, check.request_id) == (False, "vies", None)


@pytest.mark.parametrize(
    ("vat_id", "detail"),
    [("DE136695976", "MS_UNAVAILABLE"), ("ATU13585627", "HTTP 500")],
)
async def test_vies_outage_falls_back_to_the_format_check(
    vies: Any, vat_id: str, detail: str
) -> None:
    _, checker = vies
    check = await checker.check(vat_id)
    assert (check.valid, check.source) == (True, "format-only")
    assert check.detail is not None and detail in check.detail


async def test_vies_unreachable_falls_back_to_the_format_check() -> None:
    # A port nothing listens on: refused at once, as a network outage would be.
    checker = ViesVatIdChecker(lambda: NOW, url="http://127.0.0.1:9/check", timeout_seconds=2)
    try:
        check = await checker.check("FR40303265045")
    finally:
        await checker.close()
    assert (check.valid, check.source) == (True, "format-only")
    assert check.detail is not None and "unreachable" in check.detail


async def test_the_sandbox_is_deterministic() -> None:
    sandbox = SandboxVatIdChecker(lambda: NOW)
    registered = await sandbox.check("FR40303265045", requester="DE136695976")
    assert (registered.valid, registered.source, registered.request_id) == (
        True,
        "sandbox",
        "SANDBOX-FR40303265045",
    )
    [unknown] = SANDBOX_UNREGISTERED
    assert (await sandbox.check(unknown)).valid is False
