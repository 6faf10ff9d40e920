# The two commands: `make run` and `make test`. CARGO_TARGET_DIR is honoured (CI keeps it outside the clone).
CARGO ?= cargo

.PHONY: run test deps lint unit

## Build the agora binary and show what it can do.
run:
	$(CARGO) build -p agora-cli
	$(CARGO) run -q -p agora-cli -- --help
	$(CARGO) run -q -p agora-cli -- validate -f manifests

## Install missing system packages, check formatting and lints, run every test.
test: deps lint unit

deps:
	./scripts/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) test --workspace --doc --locked && \
		$(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
		$(CARGO) test --workspace --locked --no-fail-fast; \
	fi
