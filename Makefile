# infergate: `make run` serves the default model, `make test` runs every test.
SHELL := /bin/bash
CACHE_DIR ?= $(HOME)/.cache/infergate
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
MODEL ?= $(CACHE_DIR)/models/SmolLM2-135M-Instruct.Q4_1.gguf
HOST ?= 127.0.0.1
PORT ?= 8080
SERVER_BIN := $(CARGO_TARGET_DIR)/release/infergate-server
PYTHON ?= python3

.PHONY: run test model build test-rust test-sdk python-deps crds fmt lint bench bench-tool build-cuda test-cuda

run: model build
	@echo "serving $(MODEL) on http://$(HOST):$(PORT); try:"
	@echo "  curl http://$(HOST):$(PORT)/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]}'"
	$(SERVER_BIN) --model $(MODEL) --host $(HOST) --port $(PORT)

test: model test-rust test-sdk

model: $(MODEL)

$(MODEL):
	scripts/fetch-model.sh $(MODEL)

build:
	cargo build --release --locked -p infergate-server

test-rust: model
	INFERGATE_TEST_MODEL=$(MODEL) cargo test --release --locked --workspace

python-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt

test-sdk: model build python-deps
	INFERGATE_SERVER_BIN=$(SERVER_BIN) INFERGATE_TEST_MODEL=$(MODEL) $(PYTHON) -m pytest -q tests/sdk

# Regenerates the CRD from the operator's types (a test fails when the committed file drifts).
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

# The server with candle's CUDA backend, built without a GPU from PyPI's CUDA 13.0 wheels into
# its own target dir; a runnable folder (binary + lib/) lands in $(CUDA_BUNDLE). See README, "GPU build".
CUDA_BUNDLE ?= $(CACHE_DIR)/infergate-server-cuda
build-cuda:
	CACHE_DIR=$(CACHE_DIR) BUNDLE_DIR=$(CUDA_BUNDLE) scripts/build-cuda.sh

# What can be checked without a GPU: links, bundled libraries, clear failures, CPU fallback.
test-cuda: build-cuda model
	CACHE_DIR=$(CACHE_DIR) BUNDLE_DIR=$(CUDA_BUNDLE) MODEL=$(MODEL) scripts/check-cuda-build.sh
