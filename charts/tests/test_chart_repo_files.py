"""Structural checks of the deployment files no tool can run here: kind-config.yaml,
skaffold.yaml and dapr.yaml. These are our own checks of the keys each tool documents (kind
v1alpha4, Skaffold v4beta13, Dapr multi-app run v1), not the tools' own validation: only
`kind create cluster`, `skaffold diagnose` and `dapr run -f .` prove them."""

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


def test_kind_config() -> None:
    config = load("kind-config.yaml")
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert set(config) <= {
        "kind",
        "apiVersion",
        "name",
        "nodes",
        "networking",
        "containerdConfigPatches",
        "featureGates",
        "runtimeConfig",
    }
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker"]
    control_plane = config["nodes"][0]
    assert control_plane["labels"] == {"ingress-ready": "true"}
    ports = {
        (m["containerPort"], m["hostPort"], m["protocol"])
        for m in control_plane["extraPortMappings"]
    }
    assert ports == {(80, 80, "TCP"), (443, 443, "TCP")}
    for node in config["nodes"]:
        assert set(node) <= {
            "role",
            "image",
            "labels",
            "extraPortMappings",
            "extraMounts",
            "kubeadmConfigPatches",
        }


def test_skaffold_builds_five_images_and_deploys_the_chart() -> None:
    config = load("skaffold.yaml")
    assert config["apiVersion"] == "skaffold/v4beta13"
    assert config["kind"] == "Config"
    build = config["build"]
    assert build["local"]["push"] is False
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
    (dev,) = [p for p in config["profiles"] if p["name"] == "dev"]
    assert dev["activation"] == [{"command": "dev"}]
    assert dev["patches"][0]["path"] == "/deploy/helm/releases/0/setValues"


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
