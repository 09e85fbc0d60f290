"""The floor: a bare FastAPI app on the platform's own server stack (the launcher's uvicorn
settings and event loop), with no middleware, no auth and no validation.

GET  /json    a constant JSON body, no I/O: the most a request can cost and still be one.
POST /insert  one INSERT of the request body with asyncpg (a pool the size of a service's):
              the least a write that reaches PostgreSQL can cost.

python -m bench.floor_app --port 9000 --dsn postgresql://postgres@127.0.0.1/db
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request

from billing_common.settings import ServiceSettings
from billing_launcher.servers import make_server, run_event_loop, serve_all

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_rows (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


def create_app(dsn: str, pool_size: int) -> FastAPI:
    pools: dict[str, asyncpg.Pool] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        async with pool.acquire() as conn:
            await conn.execute(SCHEMA)
        pools["main"] = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/json")
    async def bare_json() -> dict[str, str]:
        return {"status": "ok", "service": "floor"}

    @app.post("/insert", status_code=201)
    async def insert(request: Request) -> dict[str, int]:
        body = await request.body()
        row_id = await pools["main"].fetchval(
            "INSERT INTO floor_rows (idempotency_key, body) VALUES ($1, $2) RETURNING id",
            request.headers.get("idempotency-key", ""),
            body.decode(),
        )
        return {"id": int(row_id)}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    # The same pool size a service gets by default, so the two are compared like for like.
    parser.add_argument("--pool-size", type=int, default=ServiceSettings().database_pool_size)
    args = parser.parse_args()
    app = create_app(args.dsn, args.pool_size)
    run_event_loop(serve_all([make_server(app, "127.0.0.1", args.port)]))


if __name__ == "__main__":
    main()
