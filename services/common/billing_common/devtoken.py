"""Mint a development JWT: `python -m billing_common.devtoken --tenant demo --scopes all`.

Signs with `JWT_SIGNING_KEY` from the environment, else the key in the secrets file
(`SECRETS_FILE`, default var/secrets.json). `make run`, `make up` and this command each create
that file with a random key when it is missing, so whichever of them runs first, the token is
signed with the key the running platform checks. Only where no secrets file is configured
(tests) does the embedded runtime fall back to its development key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from billing_common.adapters.env_secrets import EnvSecretStore, ensure_secrets_file
from billing_common.auth import ALL_SCOPES, SCOPES, TokenService
from billing_common.runtime import signing_key
from billing_common.settings import ServiceSettings


def ensure_local_signing_key(settings: ServiceSettings) -> None:
    """The secrets file with a signing key, unless the environment gives the key or the
    settings turn the file off."""
    if settings.secrets_file is not None and not os.environ.get("JWT_SIGNING_KEY"):
        ensure_secrets_file(settings.secrets_file)


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
    ensure_local_signing_key(settings)
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
