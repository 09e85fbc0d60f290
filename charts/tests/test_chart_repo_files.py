"""Cross-references of the deployment files no tool can run here (kind-config.yaml,
skaffold.yaml, dapr.yaml) with what they point at: the Traefik values, the Dockerfiles, the
chart's values, the services' ports and directories. Restating a file's own values proves
nothing; only `kind create cluster`, `skaffold diagnose` and `dapr run -f .` prove them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"tax": 8001, "discount": 8002, "invoice": 8003, "payment": 8004}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return data


def test_kind_maps_the_ports_traefik_binds_on_the_node_traefik_is_scheduled_on() -> None:
    """kind-config.yaml and kind-traefik-values.yaml must agree: Traefik runs where its
    nodeSelector points and binds hostPorts that kind maps to this machine."""
    config = load("kind-config.yaml")
    traefik = load("kind-traefik-values.yaml")
    selected = [
        node
        for node in config["nodes"]
        if traefik["nodeSelector"].items() <= node.get("labels", {}).items()
    ]
    assert [node["role"] for node in selected] == ["control-plane"]
    mapped = {m["containerPort"] for m in selected[0]["extraPortMappings"]}
    assert mapped == {port["hostPort"] for port in traefik["ports"].values()}


def test_skaffold_builds_five_images_and_deploys_the_chart() -> None:
    config = load("skaffold.yaml")
    build = config["build"]
    artifacts = {a["image"]: a for a in build["artifacts"]}
    for service in SERVICES:
        artifact = artifacts[f"billing/{service}-service"]
        assert artifact["context"] == "."
        # One Dockerfile; tests/test_service_dockerfile.py checks the build arguments.
        assert artifact["docker"]["dockerfile"] == "services/Dockerfile"
        assert artifact["docker"]["buildArgs"]["SERVICE"] == service
    operator = artifacts["billing/operator"]
    assert (ROOT / operator["context"] / operator["docker"]["dockerfile"]).is_file()

    (release,) = config["deploy"]["helm"]["releases"]
    assert (release["name"], release["chartPath"]) == ("billing", "charts/billing")
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    templates = release["setValueTemplates"]
    for image in artifacts:
        # Skaffold's template variable for an image: non-alphanumerics become underscores.
        variable = "".join(c if c.isalnum() else "_" for c in image)
        values_key = (
            "operator.image" if image == "billing/operator" else f"services.{image[8:-8]}.image"
        )
        assert templates[f"{values_key}.repository"] == f"{{{{.IMAGE_REPO_{variable}}}}}"
        assert templates[f"{values_key}.tag"] == f"{{{{.IMAGE_TAG_{variable}}}}}"
    chart_values = yaml.safe_load((ROOT / "charts/billing/values.yaml").read_text())
    for key in templates:
        node: Any = chart_values
        for part in key.split("."):
            node = node[part]  # every key Skaffold sets exists in values.yaml

    forwards = {(f["resourceName"], f["port"]) for f in config["portForward"]}
    assert forwards == {(f"billing-{s}", port) for s, port in SERVICES.items()}


def test_dapr_multi_app_run_file() -> None:
    config = load("dapr.yaml")
    assert config["version"] == 1
    common = config["common"]
    assert common["resourcesPath"] == "./components"
    assert (ROOT / common["resourcesPath"]).is_dir()
    assert (ROOT / common["configFilePath"]).is_file()
    assert common["env"]["RUNTIME"] == "dapr"
    apps = {app["appID"]: app for app in config["apps"]}
    assert set(apps) == set(SERVICES)
    dapr_ports: set[int] = set()
    for name, app in apps.items():
        assert app["appPort"] == SERVICES[name]
        assert app["appDirPath"] == f"./services/{name}/"
        assert app["appHealthCheckPath"] == "/healthz"
        assert app["command"] == [
            "python",
            "-m",
            "billing_launcher",
            "serve",
            name,
            "--runtime",
            "dapr",
        ]
        assert app["env"]["DATABASE_URL"].endswith(f"/billing_{name}")
        dapr_ports |= {app["daprHTTPPort"], app["daprGRPCPort"]}
    assert len(dapr_ports) == 2 * len(SERVICES), "each sidecar has its own ports"


@pytest.mark.parametrize("name", ["kind-config.yaml", "skaffold.yaml", "dapr.yaml"])
def test_files_are_single_yaml_documents(name: str) -> None:
    documents = list(yaml.safe_load_all((ROOT / name).read_text()))
    assert len(documents) == 1
