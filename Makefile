# The two commands: `make run` and `make test`. CARGO_TARGET_DIR is honoured (CI keeps it outside the clone).
CARGO ?= cargo

.PHONY: run test deps lint unit

## Build agora, then run a whole cluster on this machine (`agora up` in ~/.agora) with the examples in manifests/.
run:
	$(CARGO) build -p agora-cli
	./scripts/run.sh

## Install missing system packages, check formatting and lints, run every test.
test: deps lint unit

deps:
	./scripts/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

unit:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) test --workspace --doc --locked && \
		$(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
		$(CARGO) test --workspace --locked --no-fail-fast; \
	fi
