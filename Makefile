# infergate: `make run` serves the default model, `make test` runs every test.
SHELL := /bin/bash
CACHE_DIR ?= $(HOME)/.cache/infergate
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
MODEL ?= $(CACHE_DIR)/models/SmolLM2-135M-Instruct.Q4_1.gguf
HOST ?= 127.0.0.1
PORT ?= 8080
SERVER_BIN := $(CARGO_TARGET_DIR)/release/infergate-server
PYTHON ?= python3

.PHONY: run test model build test-rust test-sdk python-deps crds fmt lint bench bench-tool test-chart test-images

run: model build
	@echo "serving $(MODEL) on http://$(HOST):$(PORT); try:"
	@echo "  curl http://$(HOST):$(PORT)/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]}'"
	$(SERVER_BIN) --model $(MODEL) --host $(HOST) --port $(PORT)

test: model test-rust test-sdk test-chart

model: $(MODEL)

$(MODEL):
	scripts/fetch-model.sh $(MODEL)

build:
	cargo build --release --locked -p infergate-server

test-rust: model
	INFERGATE_TEST_MODEL=$(MODEL) cargo test --release --locked --workspace

python-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt -r tests/chart/requirements.txt

test-sdk: model build python-deps
	INFERGATE_SERVER_BIN=$(SERVER_BIN) INFERGATE_TEST_MODEL=$(MODEL) $(PYTHON) -m pytest -q tests/sdk

# The Helm chart: helm lint and helm template with several value sets, objects checked one by one.
# helm comes from the control-plane build (set HELM to use another one).
test-chart: python-deps
	@helm="$${HELM:-}"; \
	if [ -z "$$helm" ]; then dir=$$(tests/cluster/build.sh) || exit 1; helm="$$dir/bin/helm"; fi; \
	echo "HELM=$$helm $(PYTHON) -m pytest -q tests/chart"; \
	HELM="$$helm" $(PYTHON) -m pytest -q tests/chart

# The final stages of docker/*.Dockerfile built offline with podman (scripts/test-images.sh).
test-images: model
	cargo build --release --locked -p infergate-server -p infergate-operator
	MODEL=$(MODEL) scripts/test-images.sh

# Regenerates the CRD (crds/ and the chart's copy) from the operator's types (a test fails on drift).
crds:
	cargo run --release --locked -p infergate-operator --bin crdgen

fmt:
	cargo fmt --all

lint:
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

# Side-by-side benchmark against llama.cpp's llama-server (see scripts/bench.sh for the knobs:
# SCENARIOS, ROUNDS, QUICK, INFERGATE_SERVER_BIN, LLAMA_SERVER_BIN, ...). Results: bench-results/.
bench: model
	MODEL=$(MODEL) scripts/bench.sh

bench-tool:
	cargo build --release --locked -p infergate-bench
