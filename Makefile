# The billing platform. `make run` and `make test` are all a newcomer needs; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
SERVICES := tax discount invoice payment
STAMP  := $(VENV)/.installed
UV     := $(VENV)/bin/uv
# uv itself and helm-sdkpy (below) are the two pins outside requirements.lock.
UV_VERSION := 0.13.9
PYPROJECTS := $(wildcard services/*/pyproject.toml) operator/pyproject.toml requirements-dev.txt
RUN_DIR := var/run
LOG_DIR := var/log
# pytest-xdist workers (one per core here); TEST_WORKERS=0 runs in this one process.
TEST_WORKERS ?= 2

.PHONY: help install lock run test test-unit lint format migrate token demo up down logs status \
        dlq dlq-replay bench bench-quick kind-up kind-down deploy clean

KIND_CLUSTER ?= billing

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n",$$1,$$2}'

# requirements.lock pins every package (the services' editable installs included) exactly;
# it is compiled from the ranges in the pyproject.toml files and requirements-dev.txt.
# (tests/test_lock_file.py fails when a range no longer admits its pin: run `make lock`.)
$(STAMP): requirements.lock $(PYPROJECTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) && $(UV) --version | grep -q " $(UV_VERSION)" || $(PIP) install -q "uv==$(UV_VERSION)"
	@$(UV) pip sync -q --python $(PY) requirements.lock
	@# Helm's Go library for rendering the chart in tests; it declares Python>=3.12 but works on
	@# 3.11, which no resolver accepts: pinned here, its one dependency (cffi) is in the lock.
	@$(PIP) install -q --no-deps --ignore-requires-python "helm-sdkpy==0.1.32"
	@touch $@

install: $(STAMP) ## create .venv and install exactly what requirements.lock pins

lock: ## compile requirements.lock from the pyproject.toml ranges and requirements-dev.txt (uv)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) && $(UV) --version | grep -q " $(UV_VERSION)" || $(PIP) install -q "uv==$(UV_VERSION)"
	@$(UV) pip compile -q --universal --python-version 3.11 requirements.in -o requirements.lock

run: $(STAMP) ## start all four services in one process (SQLite, in-process bus) and print the Swagger URLs
	@scripts/ensure-weasyprint-libs.sh
	@$(PY) -m billing_launcher run

test: $(STAMP) ## install what tests need, start PostgreSQL/RabbitMQ if stopped, run the whole suite
	@scripts/ensure-weasyprint-libs.sh
	@scripts/ensure-servers.sh
	@$(PY) -m pytest -q -ra -n $(TEST_WORKERS)

test-unit: $(STAMP) ## the fast tier: no server, no process started, property tests as a smoke
	@$(PY) -m pytest -q -ra -n $(TEST_WORKERS) -m "not integration and not slow" \
		--hypothesis-profile=fast services tests operator charts

lint: $(STAMP) ## ruff (lint + format check), mypy (strict) and the import-linter contracts
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy -p billing_common -p tax_service -p discount_service -p invoice_service -p payment_service -p billing_launcher -p billing_operator -p bench
	@$(VENV)/bin/lint-imports

format: $(STAMP) ## apply ruff's formatting and safe fixes
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

migrate: $(STAMP) ## apply every service's Alembic migrations (DATABASE_URL / <SERVICE>_DATABASE_URL)
	@$(PY) -m billing_launcher migrate

token: $(STAMP) ## print a development JWT (tenant demo, all scopes); TENANT=… SCOPES=… to change
	@$(PY) -m billing_common.devtoken --tenant $(or $(TENANT),demo) --scopes "$(or $(SCOPES),all)" 2>/dev/null

demo: $(STAMP) ## run the seed's invoice and payment flows against the running platform
	@$(PY) -m billing_launcher.demo

up: $(STAMP) ## direct runtime: four processes on the local PostgreSQL + RabbitMQ
	@scripts/ensure-weasyprint-libs.sh
	@scripts/ensure-servers.sh
	@$(PY) -m billing_launcher.direct up

down: ## stop the processes started by `make up`
	@test -x $(PY) && $(PY) -m billing_launcher.direct down || true

logs: ## follow the logs of the processes started by `make up`
	@tail -F $(LOG_DIR)/*.log

status: $(STAMP) ## show which services answer /readyz
	@$(PY) -m billing_launcher.direct status

# Direct runtime: QUEUE=<exchange>.<service>[.<lane>] (the invoice's payment events: its lane
# "settlement"); dapr runtime: DAPR_APP=<app-id> (dlq-<app>-<topic>).
DLQ_WHERE = $(if $(DAPR_APP),--dapr-app $(DAPR_APP),--queue $(or $(QUEUE),billing.events.invoice))

dlq: $(STAMP) ## list dead-lettered events (QUEUE=billing.events.invoice, or DAPR_APP=invoice)
	@$(PY) -m billing_common.dead_letters $(DLQ_WHERE) list

dlq-replay: $(STAMP) ## move dead-lettered events back to their queue (QUEUE=… or DAPR_APP=…)
	@$(PY) -m billing_common.dead_letters $(DLQ_WHERE) replay --all

bench: $(STAMP) ## benchmarks on the direct runtime; prints a table and writes bench/out/results.json
	@scripts/ensure-weasyprint-libs.sh
	@scripts/ensure-servers.sh
	@$(PY) -m bench.run

bench-quick: $(STAMP) ## a smoke run of the benchmark harness (under a minute)
	@scripts/ensure-weasyprint-libs.sh
	@scripts/ensure-servers.sh
	@$(PY) -m bench.run --quick

# Traefik's Helm chart, pinned: a new version is a reviewed change, not a surprise on kind-up.
TRAEFIK_CHART_VERSION ?= 41.3.0

kind-up: ## create the kind cluster, Traefik (pinned chart) and Dapr (needs docker, kind, kubectl, helm, dapr CLI)
	@for tool in docker kind kubectl helm dapr; do command -v $$tool >/dev/null || { echo "kind-up needs $$tool on PATH"; exit 1; }; done
	@kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml
	@helm upgrade --install traefik traefik --repo https://traefik.github.io/charts \
		--version $(TRAEFIK_CHART_VERSION) --namespace traefik --create-namespace \
		--kube-context kind-$(KIND_CLUSTER) -f kind-traefik-values.yaml --wait --timeout 180s
	@dapr status -k >/dev/null 2>&1 || dapr init -k --wait

kind-down: ## delete the kind cluster
	@kind delete cluster --name $(KIND_CLUSTER)

deploy: ## build the images and install the Helm chart into the kind cluster (needs skaffold, helm)
	@for tool in skaffold helm; do command -v $$tool >/dev/null || { echo "deploy needs $$tool on PATH"; exit 1; }; done
	@skaffold run --kube-context kind-$(KIND_CLUSTER)

clean: ## remove local databases, logs and the virtualenv
	rm -rf var $(VENV)
