# Two commands do everything on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCKS  := requirements/runtime.lock requirements/dev.lock
# The tool that writes the lock files (make lock); pinned so that two people produce the same files.
UV_VERSION := 0.13.9
UV_HOME := .cache/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv

# bench and chaos are separate from test: they measure and inject faults, they take minutes.
.PHONY: bench chaos install run test test-unit lint format kafka kafka-stop kafka-cluster kafka-cluster-stop topics schema clean tools chromium promtool wrk up down lock

# Re-install only when the project or its pinned dependencies change. Everything comes from the lock,
# checked against its hashes (the build backend too, hence --no-build-isolation); then the project
# itself, without resolving anything more.
$(STAMP): pyproject.toml $(LOCKS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.lock
	@$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

## run: the whole pipeline locally (broker, topics, ingest :8080, enrich :8081, sink :8082); Ctrl-C stops all.
## INGEST_WORKERS / ENRICH_INSTANCES / SINK_INSTANCES run more processes; KAFKA_CLUSTER_SIZE=3 a 3-broker cluster
run: install
	@bash deploy/run.sh

## test: unit, integration and end-to-end tests against a real broker and the embedded ClickHouse engine
test: install tools
	@bash deploy/kafka/kafka.sh fetch
	@$(BIN)/pytest $(PYTEST_ARGS)

## tools: system packages the tests and benchmarks drive (idempotent; each installs only when missing)
tools: chromium promtool wrk

# Debian's chromium for the usage page test (tests/e2e/test_web_page.py); playwright never downloads a browser.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing: run 'sudo apt-get install -y chromium' (the page test is skipped without it, fails under CI=true)"; \
	  fi; }

# Debian's prometheus package brings promtool, for the alert rule tests (tests/unit/test_deploy_prometheus.py).
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "promtool is missing: run 'sudo apt-get install -y prometheus' (the rule tests are skipped without it, fail under CI=true)"; \
	  fi; }

# Debian's wrk, the native load generator of make bench (bench/ingest_bench.py): a one-process Python
# generator saturates its core before the servers it measures do.
wrk:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	  else \
	    echo "wrk is missing: run 'sudo apt-get install -y wrk' (make bench falls back to its Python load generator and flags the rounds where it is the busiest process)"; \
	  fi; }

## up / down: the full stack in Docker (Kafka, ClickHouse, the three stages, Prometheus, Grafana); needs a Docker engine
up:
	@bash deploy/compose.sh up

down:
	@bash deploy/compose.sh down

## lock: regenerate requirements/*.lock from pyproject.toml (keeps current pins; LOCK_ARGS=--upgrade or
## LOCK_ARGS="--upgrade-package aiohttp" to move them), then `make install` installs exactly those
lock: $(UV)
	@$(UV) pip compile pyproject.toml requirements/build.in --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command "make lock" --quiet $(LOCK_ARGS) -o requirements/runtime.lock
	@# dev is constrained by runtime, so both files pin the same version of every shared package.
	@$(UV) pip compile pyproject.toml requirements/build.in --extra dev -c requirements/runtime.lock --universal \
	  --python-version 3.11 --generate-hashes --custom-compile-command "make lock" --quiet $(LOCK_ARGS) \
	  -o requirements/dev.lock
	@echo "requirements/runtime.lock, requirements/dev.lock written; run make install, then make test"

$(UV):
	@$(PYTHON) -m venv $(UV_HOME)
	@$(UV_HOME)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

test-unit: install
	@$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: install
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@# The import contract in pyproject.toml [tool.importlinter]: which package may import which.
	@$(BIN)/lint-imports --cache-dir .cache/import-linter

format: install
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

## bench: throughput ratios vs. same-run baselines, e2e latency at 1k events/s, RSS (bench/results.json + .png)
bench: install wrk
	@bash deploy/kafka/kafka.sh fetch
	@$(BIN)/python -m bench.run $(BENCH_ARGS)

## chaos: fault scenarios on private brokers (one, and a 3-broker cluster with several instances per stage);
## writes chaos/report.json, fails if anything is lost or doubled. One scenario: make chaos CHAOS_ARGS="--only NAME"
chaos: install
	@bash deploy/kafka/kafka.sh fetch
	@$(BIN)/python -m chaos.run $(CHAOS_ARGS)

kafka:
	@bash deploy/kafka/kafka.sh start

kafka-stop:
	@bash deploy/kafka/kafka.sh stop

## kafka-cluster / kafka-cluster-stop: a three-broker KRaft cluster on 127.0.0.1:9092-9094 (make run uses it with KAFKA_CLUSTER_SIZE=3)
kafka-cluster:
	@bash deploy/kafka/kafka.sh cluster start

kafka-cluster-stop:
	@bash deploy/kafka/kafka.sh cluster stop

topics: install
	@$(BIN)/whereby-pipeline topics

schema: install
	@$(BIN)/whereby-pipeline schema

clean:
	-@bash deploy/kafka/kafka.sh stop
	-@bash deploy/kafka/kafka.sh cluster stop
	rm -rf .data $(VENV)
