"""Secrets from the environment or a local JSON file (embedded and direct runtimes).

`jwt-signing-key` is read from env `JWT_SIGNING_KEY`, then from the file's `jwt-signing-key`
entry. The dapr runtime reads the same names from Dapr's secret store.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


class EnvSecretStore:
    def __init__(self, secrets_file: Path | None = None) -> None:
        self._file_values: dict[str, str] = {}
        if secrets_file is not None and secrets_file.exists():
            loaded = json.loads(secrets_file.read_text())
            self._file_values = {str(k): str(v) for k, v in loaded.items()}

    async def get_secret(self, name: str) -> str | None:
        env_name = name.upper().replace("-", "_").replace(".", "_")
        return os.environ.get(env_name) or self._file_values.get(name)


def ensure_secrets_file(path: Path) -> bool:
    """Create the local secrets file with a random signing key and sandbox webhook secret when
    there is none; True when it was created. `make run`, `make up` and `make token` all call
    this first, so on one machine they sign and verify with the same key whichever runs first.
    Created exclusively: of two processes racing, one writes and both read its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        json.dump(
            {
                "jwt-signing-key": secrets.token_urlsafe(48),
                "webhook-secret-sandbox": secrets.token_urlsafe(32),
            },
            file,
            indent=2,
        )
    return True
