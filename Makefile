# Two entry points: `make run` (serve the shipped models) and `make test` (the whole suite).
# Both create .venv when it is missing and install from this project's own files only.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# `make run HOST=... PORT=...` pass --host/--port; left empty, the WATCHTIME_HOST and
# WATCHTIME_PORT variables (or their defaults, 127.0.0.1:8000) apply.
HOST ?=
PORT ?=

.PHONY: run test test-kserve hostile lint typecheck models reproduce costs grpc-code bench bench-distributions clean system-deps

# venv creation is retried once: ensurepip has been seen to fail transiently.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); sleep 2; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[serve]'
	touch $@

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[serve,train,dev,load]'
	touch $@ $(VENV)/.serve

# Tools from the distribution that the tests drive for real: promtool and prometheus (Debian's
# `prometheus` package), the headless browser of the /docs and /inspect tests (Debian's
# `chromium`, driven by playwright) and the Redis of the feature-store tests (Debian's
# `redis-server`); `make test` fails, not skips, the browser and Redis tests without them.
# Needs root or sudo; a no-op when they are already installed.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; \
	fi
	@if ! command -v chromium >/dev/null && [ ! -x /usr/lib/chromium/chromium ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; \
	fi
	@if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends redis-server; \
	fi

run: $(VENV)/.serve
	$(BIN)/python -m service $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.all
	$(BIN)/mypy service

test: system-deps lint typecheck
	WATCHTIME_REQUIRE_BROWSER=1 WATCHTIME_REQUIRE_REDIS=1 $(BIN)/python -m pytest
	$(MAKE) test-kserve

# The hostile-client suite (tests/hostile/) at the issue's scale: thousands of connections
# instead of dozens. `make test` runs the same tests at the default, smaller scale.
hostile: $(VENV)/.all
	HOSTILE_SCALE=full $(BIN)/python -m pytest tests/hostile

# KServe's client pins pandas < 3 while training pins pandas 3, so the test that drives the
# v2 routes with KServe's InferenceRESTClient runs in an environment of its own: the
# serving extra plus the `kserve-client` extra. There it fails, not skips, without kserve.
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(KSERVE_VENV) || { rm -rf $(KSERVE_VENV); sleep 2; $(PYTHON) -m venv $(KSERVE_VENV); }
	$(KSERVE_VENV)/bin/python -m pip install --quiet -e '.[serve,kserve-client]'
	touch $@

test-kserve: $(KSERVE_VENV)/.installed
	WATCHTIME_REQUIRE_KSERVE=1 $(KSERVE_VENV)/bin/python -m pytest -p no:cacheprovider tests/protocol/test_api_v2_kserve.py

# The gRPC service's message and stub code, from its .proto, by grpcio-tools (the version the
# dev extra pins; the stubs record it as GRPC_GENERATED_VERSION). The output is committed, and
# tests/protocol/test_grpc_code.py fails when it differs from a fresh generation.
GRPC_PROTO := service/protocol/grpc/grpc_predict_v2.proto
grpc-code: $(VENV)/.all
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(GRPC_PROTO)

models: $(VENV)/.all
	$(BIN)/python -m model_export build-all

# The rebuild is bit for bit: on a clean git tree, `make models` twice, and after each build
# `git status --porcelain` must be empty and every model.onnx keep its sha256. 15 to 25
# minutes a build on 2 cores, so not part of `make test`; see model_export/reproduce.py. Each build is
# compared with the committed tree, so `make reproduce RUNS=1` already checks a second build.
RUNS ?= 2
reproduce: $(VENV)/.all
	$(BIN)/python -m model_export reproduce --runs $(RUNS)

# Training times (from the last `make models`, runs/costs.json), ONNX size and rows/s on this
# machine: reports/costs.md and costs.json, tracked but written only when asked.
costs: $(VENV)/.all
	$(BIN)/python -m model_export costs

# The peers of `make bench` (loadtest/peers/) run in an environment of their own.
PEERS_VENV := .venv-peers
$(PEERS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV) || { rm -rf $(PEERS_VENV); sleep 2; $(PYTHON) -m venv $(PEERS_VENV); }
	$(PEERS_VENV)/bin/python -m pip install --quiet -e '.[peers]'
	touch $@

# This service beside hand-written and framework peers under wrk (Debian's `wrk` package):
# table + reports/benchmarks.md
bench: $(VENV)/.all $(PEERS_VENV)/.installed
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends wrk; }
	$(BIN)/python -m loadtest --peers-python $(PEERS_VENV)/bin/python

bench-distributions: $(VENV)/.all
	$(BIN)/python -m loadtest.bench_distributions

clean:
	rm -rf $(VENV) $(KSERVE_VENV) $(PEERS_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
