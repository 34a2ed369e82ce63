# parity — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV := .venv
JOB_VENV := .venv-job
PY := $(VENV)/bin/python
JOB_PY := $(JOB_VENV)/bin/python
STAMP := $(VENV)/.installed
JOB_STAMP := $(JOB_VENV)/.installed
export PARITY_JOB_PYTHON ?= $(abspath $(JOB_PY))
export PARITY_STACK_JOB_VENV ?= $(abspath $(JOB_VENV))

PARITY_JAR := jobs/jvm/target/parity-flink-avro.jar

DEMO_EVENTS ?= 6000
DEMO_USERS ?= 100

.PHONY: help setup jar up down status lint typecheck schemas unit integration chaos test demo bench clean distclean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[client,dev,serve,bench,drift,lineage]'
	touch $@

$(JOB_STAMP): pyproject.toml
	$(PYTHON_BOOT) -m venv $(JOB_VENV)
	$(JOB_PY) -m pip install -q --upgrade pip
	$(JOB_PY) -m pip install -q -e '.[job,lineage]'
	touch $@

setup: $(STAMP) $(JOB_STAMP) ## create both environments and fetch the service binaries and jars
	$(PY) -m stack fetch
	$(MAKE) --no-print-directory jar

$(PARITY_JAR): jobs/jvm/pom.xml $(shell find jobs/jvm/src -type f) $(wildcard sinks/lua/*.lua)
	mvn -q -B -f jobs/jvm/pom.xml package

# Copied under a temporary name beside the target, then renamed: a job starting meanwhile sees
# the old jar or the new one, never half a jar.
jar: $(PARITY_JAR) $(JOB_STAMP) ## build the job's JVM decoder and Redis sink (jobs/jvm) and put them in PyFlink's lib/
	lib="$$($(JOB_PY) -c 'import os, pyflink; print(os.path.join(os.path.dirname(pyflink.__file__), "lib"))')" && \
	cp $(PARITY_JAR) "$$lib/.parity-flink-avro.jar.tmp" && \
	mv -f "$$lib/.parity-flink-avro.jar.tmp" "$$lib/$(notdir $(PARITY_JAR))"

up: setup ## start the local stack (Kafka, registry, Redis, Flink); a no-op when it is up
	$(PY) -m stack up

down: ## stop the local stack
	@if [ -x $(PY) ]; then $(PY) -m stack down; fi

status: ## show which services are up
	$(PY) -m stack status

lint: $(STAMP) ## ruff lint and format check, and the import layers (pyproject's importlinter contracts)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP) ## mypy (strict) over the packages
	$(VENV)/bin/mypy parity features schemas jobs sinks serving replay stack producer

schemas: $(STAMP) ## every schema version BACKWARD compatible with the earlier ones (and the registry, when up)
	$(PY) -m parity schemas check

unit: $(STAMP) ## unit tests (no network)
	$(PY) -m pytest tests/unit -q

integration: up ## integration tests against the real local stack
	$(PY) -m pytest tests/integration -q

chaos: up ## fault scenarios against the real local stack (kill, rerun, lost state, hostile input)
	$(PY) -m pytest tests/chaos -q

test: setup lint typecheck schemas unit integration chaos ## everything CI runs: lint, types, unit, integration and chaos tests

demo: up ## start from a clean view, produce a sample, run the job, show Redis and Iceberg side by side
	$(PY) -m parity reset --view user_stats --topic --yes
	$(PY) -m parity produce --generate --users $(DEMO_USERS) --events $(DEMO_EVENTS) --days 10 --start $$(date -u -d '10 days ago' +%Y-%m-%dT%H:00:00Z)
	$(PY) -m parity job run --view user_stats --bounded
	$(PY) -m parity show --view user_stats --limit 5
	@echo
	@echo "Next (the parity command is in .venv/bin):"
	@echo "  .venv/bin/parity features user_stats:click_rate_7d --entity user_id=user-01"
	@echo "  .venv/bin/parity features user_stats:click_rate_7d --entity user_id=user-01 --offline"
	@echo "  .venv/bin/parity views user_stats --sql     the compiled Flink SQL"
	@echo "  .venv/bin/parity replay user_stats --start <day>T00:00Z --end <next day>T00:00Z --dry-run"
	@echo "  make down                                   stop the stack"

clean: ## remove caches and local state (keeps the environments and downloads)
	rm -rf .parity .pytest_cache .mypy_cache .ruff_cache

distclean: down clean ## also remove the environments and downloaded jars
	rm -rf $(VENV) $(JOB_VENV) .cache
