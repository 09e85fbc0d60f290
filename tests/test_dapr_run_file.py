"""dapr.yaml against the Dapr CLI's own run-file model (dapr/cli pkg/runfileconfig and
pkg/standalone: the yaml tags of RunFileConfig, App, RunConfig and SharedRunConfig). An unknown
key is silently ignored by the CLI, so a misspelt field would pass `dapr run -f .` unnoticed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from billing_common.settings import DEFAULT_PORTS
from billing_launcher.registry import app_factory

ROOT = Path(__file__).resolve().parents[1]

TOP_LEVEL = {"version", "name", "common", "apps"}
# standalone.SharedRunConfig: valid in `common` and in each app.
SHARED = {
    "configFilePath",
    "appProtocol",
    "apiListenAddresses",
    "enableProfiling",
    "logLevel",
    "appMaxConcurrency",
    "placementHostAddress",
    "resourcesPath",
    "resourcesPaths",
    "appSSL",
    "maxBodySize",
    "readBufferSize",
    "enableAppHealthCheck",
    "appHealthCheckPath",
    "appHealthProbeInterval",
    "appHealthProbeTimeout",
    "appHealthThreshold",
    "enableApiLogging",
    "runtimePath",
    "env",
    "daprdLogDestination",
    "appLogDestination",
    "schedulerHostAddress",
}
# standalone.RunConfig, runfileconfig.ContainerConfiguration and runfileconfig.App: apps only.
APP_ONLY = {
    "appID",
    "appChannelAddress",
    "appPort",
    "daprHTTPPort",
    "daprGRPCPort",
    "profilePort",
    "command",
    "metricsPort",
    "unixDomainSocket",
    "daprInternalGRPCPort",
    "containerImage",
    "containerImagePullPolicy",
    "createService",
    "appDirPath",
}


def run_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    return data


def effective(app: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """What the CLI runs: an app's own value, else the common one (env maps are merged)."""
    merged = {**common, **app}
    merged["env"] = {**common.get("env", {}), **app.get("env", {})}
    return merged


def test_every_key_is_a_field_of_the_cli_run_file() -> None:
    config = run_file()
    assert set(config) <= TOP_LEVEL
    assert set(config["common"]) <= SHARED, set(config["common"]) - SHARED
    for app in config["apps"]:
        assert set(app) <= SHARED | APP_ONLY, (app["appID"], set(app) - SHARED - APP_ONLY)


def test_daprd_probes_each_app_on_a_route_it_serves() -> None:
    config = run_file()
    for app in config["apps"]:
        run = effective(app, config["common"])
        name = run["appID"]
        # daprd only probes with --enable-app-health-check; the path alone does nothing.
        assert run.get("enableAppHealthCheck") is True, name
        assert run["appHealthCheckPath"] == "/healthz", name
        assert isinstance(run["appHealthProbeInterval"], int)
        assert run["appHealthProbeInterval"] >= 1  # seconds
        assert run["appHealthProbeTimeout"] >= 100  # milliseconds
        assert run["appPort"] == DEFAULT_PORTS[name], "the command serves on the default port"
        routes = {getattr(r, "path", None) for r in app_factory(name)(None, None).routes}
        assert run["appHealthCheckPath"] in routes, name
