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
# make test's pytest-xdist workers: most integration tests wait on timers, so two share the 2 cores well
# (a full default run: 13.7 min in one process, 7.4-7.7 min on two). --dist loadscope keeps a module's
# tests in one worker (the clusters a module's tests share, the bench smoke's background runs).
# TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2

# pytest exits 5 when it collected no test: an empty tier is not a failure.
define run_pytest
	rc=0; $(BIN)/pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected (ok)"; rc=0; fi; exit $$rc
endef

.PHONY: help install native run cluster test test-pure test-slow test-fault fault fault-sweep soak fault-deps bench check check-format check-lint \
	bench-full bench-w1 bench-w2 bench-w3 bench-w4 bench-w5 bench-recovery bench-bulk bench-scale bench-concurrency \
	bench-summary bench-components bench-worker bench-peers bench-deps \
	check-types check-imports check-proto check-clients clients format proto clean distclean

help: ## list the targets
	@echo "Cronraft make targets:"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) native ## create .venv and install the project with its dev extras, pinned by constraints.txt (re-runs when either changes)

# The native apply core (cronraft/_native.py): the state machine's and the leader's modules compiled by
# mypyc, rebuilt (~1 min) whenever their sources changed, a no-op otherwise. Without a C compiler it says
# so and Cronraft runs as pure Python; NATIVE_FLAGS=--required makes that an error (.ci/run).
NATIVE_FLAGS ?=
native: $(STAMP) ## build the native apply core if its sources changed (CRONRAFT_NATIVE=0 runs without it)
	@$(BIN)/python scripts/native.py build $(NATIVE_FLAGS)

$(STAMP): pyproject.toml setup.cfg constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77' wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints.txt
	@touch $@

run: install ## start a single-node cluster and one worker (Ctrl-C stops both)
	scripts/run-local.sh

cluster: install ## start a local cluster (CLUSTER=three-node|five-node) and one worker
	scripts/run-cluster.sh $(CLUSTER)

# --durations: the slowest tests are listed before the summary (what to move to test-slow if it grows).
test: install ## run the default test suite (unit, simulation, integration; TEST_WORKERS=0: one process)
	@$(call run_pytest,-n $(TEST_WORKERS) --dist loadscope --durations=15 --durations-min=5)

test-pure: install ## the unit and simulation suites as pure Python (CRONRAFT_NATIVE=0), beside make test's native run
	@export CRONRAFT_NATIVE=0; $(call run_pytest,tests/unit tests/sim -n $(TEST_WORKERS))

test-slow: install ## run the slow tests
	@$(call run_pytest,-m slow)

test-fault: fault

fault-deps: ## install the apt tools the fault harness uses (nftables, iptables, NFQUEUE headers; needs root)
	scripts/fault-deps.sh

SCENARIO ?= all
SEED ?=
fault: install ## every fault scenario at the CI profile (~3,000 fires each; SCENARIO=S2 SEED=7 to replay one)
	-@scripts/fault-deps.sh
	$(BIN)/python -m tests.fault.run --profile ci --scenario $(SCENARIO) $(if $(SEED),--seed $(SEED))

SEEDS ?= 5
fault-sweep: install ## every scenario at the CI profile over SEEDS random seeds (default 5), one table across seeds
	-@scripts/fault-deps.sh
	$(BIN)/python -m tests.fault.run --profile ci --scenario $(SCENARIO) --seeds $(SEEDS)

soak: install ## every fault scenario at the soak profile (>= 30,000 fires each: bounds 0.01 % at 95 %)
	-@scripts/fault-deps.sh
	$(BIN)/python -m tests.fault.run --profile soak --scenario $(SCENARIO) $(if $(SEED),--seed $(SEED))

# The benchmark suite (bench/README.md): one script per workload, JSON results in bench/results/,
# `make bench-summary` prints the Markdown table of the latest ones. `make bench` runs the workloads of
# default size (about 30 minutes on 2 cores); the long ones (bulk 1 M, scale 10 M, 100,000 leases and
# 10,000 streams) are in `make bench-full`. BENCH_ARGS is passed to every script (e.g. --runs 1).
BENCH_ARGS ?=
BENCH_PY = $(BIN)/python bench

bench: bench-w1 bench-w2 bench-w3 bench-w4 bench-w5 bench-recovery bench-worker bench-summary ## run the benchmark workloads of default size

bench-full: bench bench-bulk bench-scale bench-concurrency bench-summary ## also bulk 1 M, scale 10 M, 100k leases, 10k streams (hours)

bench-w1: install ## W1 burst: 20,000 one-time tasks due at one instant
	$(BENCH_PY)/w1_burst.py $(BENCH_ARGS)

bench-w2: install ## W2 create latency: 5,000 sequential creates, then 16 concurrent clients
	$(BENCH_PY)/w2_latency.py $(BENCH_ARGS)

bench-w3: install ## W3 precision: 200 tasks every second for 60 s
	$(BENCH_PY)/w3_precision.py $(BENCH_ARGS)

bench-w4: install ## W4 queries with 100,000 tasks stored (W4_SIZES=100000,1000000 for both)
	$(BENCH_PY)/w4_query.py --sizes $(or $(W4_SIZES),100000) $(BENCH_ARGS)

bench-w5: install ## W5 sustained: 10,000 tasks every second for 60 s (3 runs), then the ramp of rates
	$(BENCH_PY)/w5_sustained.py --mode both $(BENCH_ARGS)

bench-recovery: install ## leader SIGKILL under load: first dispatch, backlog drained
	$(BENCH_PY)/recovery.py $(BENCH_ARGS)

bench-bulk: install ## bulk import of 1,000,000 tasks (SDK, then schedctl task import)
	$(BENCH_PY)/bulk_import.py --via sdk $(BENCH_ARGS)
	$(BENCH_PY)/bulk_import.py --via cli $(BENCH_ARGS)

bench-scale: install ## RSS, disk, create/get latency at 100,000 and 10,000,000 stored tasks
	$(BENCH_PY)/scale.py $(BENCH_ARGS)

bench-concurrency: install ## 100,000 leases held at once; 10,000 worker streams on one leader
	$(BENCH_PY)/concurrency.py --part both $(BENCH_ARGS)

bench-worker: install ## argv executions/s one worker sustains (/bin/true, --slots 1,4,16,64)
	$(BENCH_PY)/worker_exec.py $(BENCH_ARGS)

bench-deps: ## install what bench-peers needs: Debian's redis-server and the [bench] extra (celery, redis-py; root for apt)
	scripts/bench-deps.sh

bench-peers: install bench-deps ## Cronraft vs Celery 5 + Redis on W1 and W3, same machine, same run (Redis started here)
	$(BIN)/python bench/peers/compare.py $(BENCH_ARGS)

bench-summary: ## the Markdown table of the latest result of each workload
	@$(BIN)/python bench/summary.py

bench-components: install ## the component benchmarks (timing wheel, schedule maths, cluster overview)
	@set -e; for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python "$$f"; done

# The static checks need the virtualenv, not the native core: they read sources (no ~1 min rebuild of the
# compiled modules after an edit of one of them).
check: check-format check-lint check-types check-imports check-proto check-clients ## all static checks (make -k check runs them all)

check-format: $(STAMP)
	$(BIN)/ruff format --check .

check-lint: $(STAMP)
	$(BIN)/ruff check .

check-types: $(STAMP)
	$(BIN)/mypy

check-imports: $(STAMP)
	$(BIN)/lint-imports

check-proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check

check-clients: $(STAMP)
	$(BIN)/python scripts/gen_sync_client.py --check

format: install ## reformat and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: install ## regenerate the checked-in protobuf code in proto/v1
	$(BIN)/python scripts/gen_proto.py

clients: install ## regenerate the sync client (client/sdk.py, client/_sync_*.py) from the asyncio one (client/aio.py, client/_aio_*.py)
	$(BIN)/python scripts/gen_sync_client.py

clean: ## remove data/ and build/tool artefacts (keeps .venv)
	rm -rf data build dist cronraft/_native_build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
