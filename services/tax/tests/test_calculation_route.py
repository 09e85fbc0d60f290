"""The calculation route answers well-formed requests itself and hands everything else to
FastAPI's handler (entrypoints.api._CalculationRoute): both must answer alike, and what is
refused must be refused in FastAPI's order (the token before the schema)."""

from __future__ import annotations

import json
from typing import Any

from .test_tax_api import CALCS, assert_problem, calc_body, seed_de


def _stable(answer: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in answer.items() if name not in ("id", "created_at")}


async def test_the_direct_and_the_fastapi_handler_give_the_same_answer(api: Any) -> None:
    await seed_de(api)
    content = json.dumps(calc_body()).encode()
    answers = []
    # "application/json" is answered directly; with a charset it goes to FastAPI's handler.
    for content_type in ("application/json", "application/json; charset=utf-8"):
        response = await api.client.post(
            CALCS,
            content=content,
            headers={**api.headers("tax:calculate"), "content-type": content_type},
        )
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        answers.append(_stable(response.json()))
    assert answers[0] == answers[1]
    history = await api.client.get(CALCS, headers=api.headers("tax:read"))
    assert len(history.json()["items"]) == 2


async def test_a_body_the_schema_refuses_is_checked_after_the_token(api: Any) -> None:
    refused = calc_body(currency=7)
    without_token = await api.client.post(CALCS, json=refused)
    assert_problem(without_token, 401, "unauthorized")
    wrong_scope = await api.client.post(CALCS, json=refused, headers=api.headers("tax:read"))
    assert_problem(wrong_scope, 403)
    problem = assert_problem(
        await api.client.post(CALCS, json=refused, headers=api.headers("tax:calculate")),
        422,
        "validation",
    )
    assert [error["loc"] for error in problem["errors"]] == [["body", "currency"]]


async def test_a_duplicate_key_is_refused_before_the_token_is_read(api: Any) -> None:
    content = b'{"currency": "EUR", "currency": "USD"}'
    response = await api.client.post(
        CALCS, content=content, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "duplicate-json-key")
