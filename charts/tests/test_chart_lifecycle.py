"""The chart over several Helm actions against ONE kmock emulator, the way a cluster sees
them: install, uninstall, install again (what `skaffold dev` does on every exit), and two
releases in two namespaces. The emulator keeps what Helm leaves behind (kept Secrets, hook
resources, CRDs) and stores Secrets as the API server does, so Helm's `lookup` sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
RENDER = HERE / "render_chart.py"
SERVICES = ("tax", "discount", "invoice", "payment")


def run_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(RENDER), "--steps"],
        input=json.dumps(steps),
        capture_output=True,
        text=True,
        env={**os.environ, "HELM_DRIVER": "memory"},
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def objects(step: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(step["manifest"]) if doc]


@pytest.fixture(scope="module")
def history() -> list[dict[str, Any]]:
    """One emulator: install, uninstall, install again, then a second release of the same
    name in another namespace, without the operator (one operator per cluster: it watches
    every namespace)."""
    return run_steps(
        [
            {"action": "install"},
            {"action": "uninstall"},
            {"action": "install"},
            {
                "action": "install",
                "namespace": "team-b",
                "values": {"operator": {"enabled": False}},
            },
        ]
    )


@pytest.fixture(scope="module")
def reinstall(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return history[:3]


def test_uninstall_really_removes_the_release(reinstall: list[dict[str, Any]]) -> None:
    first, uninstall, second = reinstall
    assert (first["error"], uninstall["error"], second["error"]) == (None, None, None)
    # What is not kept goes; the Secrets stay (kept, or hooks, which Helm never deletes).
    assert "deployments/billing/billing-tax" in first["objects"]
    assert "deployments/billing/billing-tax" not in uninstall["objects"]
    assert "services/billing/billing-tax" not in uninstall["objects"]
    assert set(uninstall["secrets"]) == set(first["secrets"])
    assert "deployments/billing/billing-tax" in second["objects"]


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ("billing-messaging", "rabbitmq-password"),
        ("billing-messaging", "connection-string"),
        ("billing-database", "postgres-password"),
        ("billing-app-token", "token"),
        ("jwt-signing-key", "jwt-signing-key"),
    ],
)
def test_a_reinstall_reuses_every_password_the_volumes_were_initialised_with(
    reinstall: list[dict[str, Any]], secret: str, key: str
) -> None:
    """The bundled RabbitMQ and PostgreSQL keep their users in PVCs that outlive `helm
    uninstall`; a new password on reinstall would lock every sidecar out (ACCESS_REFUSED)."""
    first, uninstall, second = reinstall
    name = f"billing/{secret}"
    assert uninstall["secrets"][name][key] == first["secrets"][name][key], "kept on uninstall"
    assert second["secrets"][name][key] == first["secrets"][name][key], "reused on install"
    assert len(first["secrets"][name][key]) >= 32


def test_the_broker_and_the_sidecars_read_the_same_password(
    reinstall: list[dict[str, Any]],
) -> None:
    second = reinstall[2]
    messaging = second["secrets"]["billing/billing-messaging"]
    assert f":{messaging['rabbitmq-password']}@" in messaging["connection-string"]
    database = second["secrets"]["billing/billing-database"]
    for service in SERVICES:
        assert f":{database['postgres-password']}@" in database[service]


def test_two_releases_in_two_namespaces_do_not_collide(history: list[dict[str, Any]]) -> None:
    """Helm refuses an object another release owns, so a name clash fails the second
    install here as it would on a cluster; and no two rendered objects share a name."""
    team_a, team_b = history[2], history[3]
    assert (team_a["error"], team_b["error"]) == (None, None)
    seen: dict[tuple[str, str, str], str] = {}
    for step in (team_a, team_b):
        for obj in objects(step) + [
            doc for hook in step["hooks"] for doc in yaml.safe_load_all(hook["manifest"]) if doc
        ]:
            namespace = obj["metadata"].get("namespace", step["namespace"])
            if obj["kind"] in {"ClusterRole", "ClusterRoleBinding", "Namespace"}:
                namespace = ""
            key = (obj["kind"], namespace, obj["metadata"]["name"])
            assert key not in seen, f"{key} rendered by {seen.get(key)} and {step['namespace']}"
            seen[key] = step["namespace"]
    # Each release's services point at their own namespace's servers and secrets.
    for step in (team_a, team_b):
        database = step["secrets"][f"{step['namespace']}/billing-database"]
        assert database["tax"].endswith("@billing-postgresql:5432/billing_tax")
    assert (
        team_a["secrets"]["billing/billing-messaging"]["rabbitmq-password"]
        != team_b["secrets"]["team-b/billing-messaging"]["rabbitmq-password"]
    )
