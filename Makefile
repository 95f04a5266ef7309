# Cronraft developer tasks (GNU make). A fresh machine needs only python3 (>= 3.11), make and git:
# `make install` creates .venv and installs the project (editable) with its dev tools.
# Tools are called as $(VENV)/bin/...; nothing needs an activated venv. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install only when the project's metadata changed; the stamp lives in the venv, so deleting the
# venv also forces a fresh install.
STAMP := $(VENV)/.install-stamp
CLUSTER ?= three-node
PYTEST_ARGS ?=

# pytest exits 5 when it collected no test: an empty tier is not a failure.
define run_pytest
	rc=0; $(BIN)/pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected (ok)"; rc=0; fi; exit $$rc
endef

.PHONY: help install run cluster test test-slow test-fault bench check check-format check-lint \
	check-types check-imports check-proto format proto clean distclean

help: ## list the targets
	@echo "Cronraft make targets:"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the project with its dev extras (re-runs when pyproject.toml changes)

$(STAMP): pyproject.toml setup.cfg
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=68' wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: install ## start a single-node cluster and one worker (Ctrl-C stops both)
	scripts/run-local.sh

cluster: install ## start a local cluster (CLUSTER=three-node|five-node) and one worker
	scripts/run-cluster.sh $(CLUSTER)

test: install ## run the default test suite (unit, simulation, integration)
	@$(call run_pytest,)

test-slow: install ## run the slow tests
	@$(call run_pytest,-m slow)

test-fault: install ## run the fault-injection tests
	@$(call run_pytest,-m fault)

bench: install ## run every benchmark in bench/
	@set -e; shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks in bench/"; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(BIN)/python "$$f"; done

check: check-format check-lint check-types check-imports check-proto ## all static checks (make -k check runs them all)

check-format: install
	$(BIN)/ruff format --check .

check-lint: install
	$(BIN)/ruff check .

check-types: install
	$(BIN)/mypy

check-imports: install
	$(BIN)/lint-imports

check-proto: install
	$(BIN)/python scripts/gen_proto.py --check

format: install ## reformat and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: install ## regenerate the checked-in protobuf code in proto/v1
	$(BIN)/python scripts/gen_proto.py

clean: ## remove data/ and build/tool artefacts (keeps .venv)
	rm -rf data build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
