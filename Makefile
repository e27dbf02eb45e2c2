# slotproxy: `make demo` runs the proxy in front of a local cluster; `make test` runs every test.
.PHONY: demo test build bench lint deps

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

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: build
	bash benches/compare.sh
