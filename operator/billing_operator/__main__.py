"""`python -m billing_operator`: run the operator (in the cluster, or against a kubeconfig).

Single replica by design (`standalone`, no peering objects needed); the Deployment uses the
Recreate strategy so two operators never reconcile the same resource at once.
"""

from __future__ import annotations

import logging
import sys

import kopf
from loguru import logger

from billing_operator.config import OperatorConfig
from billing_operator.handlers import Reconciler, build_registry, operator_settings


def main() -> int:
    config = OperatorConfig.from_env()
    logger.remove()
    logger.add(sys.stderr, serialize=config.log_json, level="INFO")
    kopf.configure(
        log_format=kopf.LogFormat.JSON if config.log_json else kopf.LogFormat.PLAIN,
        verbose=False,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    kopf.run(
        registry=build_registry(Reconciler(config)),
        settings=operator_settings(config),
        standalone=True,
        clusterwide=not config.watch_namespaces,
        namespaces=config.watch_namespaces,
        liveness_endpoint=config.liveness_endpoint,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
