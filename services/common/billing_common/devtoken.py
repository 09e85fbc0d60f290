"""Mint a development JWT: `python -m billing_common.devtoken --tenant demo --scopes all`.

Signs with `JWT_SIGNING_KEY` (env or secrets file) or, failing that, the embedded runtime's
development key, so the token works against `make run` out of the box.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from billing_common.adapters.env_secrets import EnvSecretStore
from billing_common.auth import ALL_SCOPES, SCOPES, TokenService
from billing_common.runtime import signing_key
from billing_common.settings import ServiceSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="demo", help="tenant claim (default: demo)")
    parser.add_argument("--subject", default="dev-user", help="sub claim")
    parser.add_argument(
        "--scopes",
        default="all",
        help="space- or comma-separated scopes, or 'all'. Known: " + ", ".join(sorted(SCOPES)),
    )
    parser.add_argument("--ttl", type=int, default=86_400, help="lifetime in seconds")
    args = parser.parse_args(argv)

    requested = ALL_SCOPES if args.scopes == "all" else set(args.scopes.replace(",", " ").split())
    unknown = set(requested) - ALL_SCOPES
    if unknown:
        parser.error(f"unknown scopes: {', '.join(sorted(unknown))}")
    settings = ServiceSettings()
    key = asyncio.run(signing_key(settings, EnvSecretStore(settings.secrets_file)))
    tokens = TokenService(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    sys.stdout.write(
        tokens.mint(
            subject=args.subject, tenant=args.tenant, scopes=requested, ttl_seconds=args.ttl
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
