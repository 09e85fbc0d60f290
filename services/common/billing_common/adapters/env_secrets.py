"""Secrets from the environment or a local JSON file (embedded and direct runtimes).

`jwt-signing-key` is read from env `JWT_SIGNING_KEY`, then from the file's `jwt-signing-key`
entry. The dapr runtime reads the same names from Dapr's secret store.
"""

from __future__ import annotations

import json
import os
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
