# infergate: `make run` serves the default model, `make test` runs every test.
SHELL := /bin/bash
export CACHE_DIR ?= $(HOME)/.cache/infergate
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
MODEL ?= $(CACHE_DIR)/models/SmolLM2-135M-Instruct.Q4_1.gguf
# The second real model (Gemma 3 270M Q4_K_M, assembled from PyPI chunk wheels).
GEMMA_MODEL ?= $(CACHE_DIR)/models/gemma-3-270m-q4_k_m.gguf
# llama.cpp's models/ folder (vocab GGUFs with tokenizer vectors, real chat templates), from
# the llama-cpp-python sdist that scripts/build-llama-server.sh fetches.
LLAMA_CPP_PYTHON_VERSION ?= 0.3.36
LLAMA_CPP_MODELS ?= $(CACHE_DIR)/llama-src-$(LLAMA_CPP_PYTHON_VERSION)/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)/vendor/llama.cpp/models
HOST ?= 127.0.0.1
PORT ?= 8080
SERVER_BIN := $(CARGO_TARGET_DIR)/release/infergate-server
PYTHON ?= python3

.PHONY: fuzz miri run test test-scripts model test-data build test-build test-rust test-templates test-sdk python-deps crds fmt lint bench bench-tool \
	control-plane e2e-deps e2e-build plugin cluster-up cluster-down e2e build-cuda test-cuda test-chart test-images

run: model build
	@echo "serving $(MODEL) on http://$(HOST):$(PORT); try:"
	@echo "  curl http://$(HOST):$(PORT)/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]}'"
	$(SERVER_BIN) --model $(MODEL) --host $(HOST) --port $(PORT)

test: model test-data test-rust test-templates test-sdk test-chart test-scripts e2e

model: $(MODEL)

$(MODEL):
	scripts/fetch-model.sh $(MODEL)

$(GEMMA_MODEL):
	scripts/fetch-gemma.sh $(GEMMA_MODEL)

$(LLAMA_CPP_MODELS)/templates:
	LLAMA_CPP_PYTHON_VERSION=$(LLAMA_CPP_PYTHON_VERSION) LLAMA_FETCH_ONLY=1 scripts/build-llama-server.sh

# Peers' conformance data and the second model: fetched once into the cache.
test-data: $(GEMMA_MODEL) $(LLAMA_CPP_MODELS)/templates

build:
	cargo build --release --locked -p infergate-server

# Every Rust artefact `make test` uses comes from one cargo invocation shape, the whole workspace
# with all its targets: cargo unifies features per invocation, so a subset (`-p infergate-server`)
# would compile tokio, hyper and everything above them a second time with other features.
# `cargo test --workspace` then finds everything built. (`make run` builds the server alone.)
test-build:
	cargo build --release --locked --workspace --all-targets

test-rust: model test-data test-build
	INFERGATE_TEST_MODEL=$(MODEL) INFERGATE_GEMMA_MODEL=$(GEMMA_MODEL) INFERGATE_LLAMA_CPP_MODELS=$(LLAMA_CPP_MODELS) \
	  cargo test --release --locked --workspace --no-fail-fast

python-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt -r tests/chart/requirements.txt \
	  -r tests/templates/requirements.txt

# Chat-template conformance: the 70 llama.cpp templates rendered by transformers and by
# `infergate-server render-chat`, compared byte for byte.
test-templates: test-build test-data python-deps
	INFERGATE_SERVER_BIN=$(SERVER_BIN) INFERGATE_LLAMA_CPP_MODELS=$(LLAMA_CPP_MODELS) $(PYTHON) -m pytest -q -s tests/templates

test-sdk: model test-build python-deps
	INFERGATE_SERVER_BIN=$(SERVER_BIN) INFERGATE_TEST_MODEL=$(MODEL) $(PYTHON) -m pytest -q tests/sdk

# The Helm chart: helm lint and helm template with several value sets, objects checked one by one.
# helm comes from the control-plane build (set HELM to use another one).
test-chart: python-deps
	@helm="$${HELM:-}"; \
	if [ -z "$$helm" ]; then dir=$$(tests/cluster/build.sh) || exit 1; helm="$$dir/bin/helm"; fi; \
	echo "HELM=$$helm $(PYTHON) -m pytest -q tests/chart"; \
	HELM="$$helm" $(PYTHON) -m pytest -q tests/chart

# The GPU check's own tools (summary of a run, BENCHMARKS.md's GPU section), on canned runs.
test-scripts:
	$(PYTHON) -m unittest discover -s scripts/gpu-check -p 'test_*.py'

# The final stages of docker/*.Dockerfile built offline with podman (scripts/test-images.sh).
test-images: model
	cargo build --release --locked -p infergate-server -p infergate-operator
	MODEL=$(MODEL) scripts/test-images.sh

# Regenerates the CRD (crds/ and the chart's copy) from the operator's types (a test fails on drift).
# Request parsing + validation under libFuzzer for FUZZ_SECONDS (see DEVELOPERS.md, "Fuzzing").
# Needs the nightly toolchain and `cargo install cargo-fuzz`; its own workspace in server/fuzz.
FUZZ_SECONDS ?= 60
fuzz:
	cd server/fuzz && mkdir -p corpus/request_validation && CARGO_TARGET_DIR=$(CACHE_DIR)/target-fuzz cargo +nightly fuzz run request_validation \
	  corpus/request_validation seeds -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -rss_limit_mb=2048

# The CPU kernels and the compute pool under Miri (see DEVELOPERS.md, "Miri"): server/miri
# builds those source files alone. Needs `rustup component add --toolchain nightly miri rust-src`.
miri:
	cd server/miri && CARGO_TARGET_DIR=$(CACHE_DIR)/target-miri \
	  timeout 1200 cargo +nightly miri test

crds:
	cargo run --release --locked -p infergate-operator --bin crdgen

fmt:
	cargo fmt --all

lint:
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

# Side-by-side benchmark against llama.cpp's llama-server (see scripts/bench.sh for the knobs:
# SCENARIOS, ROUNDS, QUICK, BENCHMARKS_OUT, INFERGATE_SERVER_BIN, LLAMA_SERVER_BIN, ...).
# Results: bench-results/; a full run also writes BENCHMARKS.md.
bench: model
	MODEL=$(MODEL) scripts/bench.sh

bench-tool:
	cargo build --release --locked -p infergate-bench

# The local Kubernetes control plane (tests/cluster): Go-built binaries cached by version.
CLUSTER_DIR ?= $(CACHE_DIR)/cluster
E2E_DIR ?= $(CACHE_DIR)/e2e
E2E_BIN := $(CARGO_TARGET_DIR)/release/infergate-e2e
OPERATOR_BIN := $(CARGO_TARGET_DIR)/release/infergate-operator
# What the pod runner starts for each image, and the image's /models folder on this machine.
POD_RUNNER_FLAGS = --image infergate-server=$(SERVER_BIN) --image infergate-operator=$(OPERATOR_BIN) \
	--mount /models=$(dir $(MODEL))

control-plane:
	tests/cluster/build.sh

e2e-deps:
	scripts/install-e2e-deps.sh

# The kubectl plugin, kubectl-infergate (put it on PATH: `kubectl infergate get NAME`).
plugin:
	cargo build --release --locked -p infergate-operator --bin kubectl-infergate

# test-build builds every binary of the workspace: the server, the operator, the plugin (which
# the plugin scenarios find beside the harness) and the harness itself.
e2e-build: test-build

# Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK nodes and the pod
# runner on 127.0.0.1; prints the KUBECONFIG to export. `make cluster-down` stops them.
cluster-up: model e2e-deps e2e-build
	@cp=$$(tests/cluster/build.sh) && PATH="$$cp/bin:$$PATH" \
	  $(E2E_BIN) up --dir $(CLUSTER_DIR) --control-plane-bin $$cp/bin $(POD_RUNNER_FLAGS) && \
	  echo "kubectl and helm of the same version: export PATH=$$cp/bin:\$$PATH"

cluster-down:
	$(E2E_BIN) down --dir $(CLUSTER_DIR)

# The end-to-end scenarios on a fresh cluster (stopped afterwards, also on failure).
E2E_FILTER ?=
e2e: model e2e-deps e2e-build
	@cp=$$(tests/cluster/build.sh) && PATH="$$cp/bin:$$PATH" \
	  $(E2E_BIN) run --dir $(E2E_DIR) --control-plane-bin $$cp/bin --repo . $(POD_RUNNER_FLAGS) \
	  $(if $(E2E_FILTER),--filter $(E2E_FILTER))

# The server with candle's CUDA backend, built without a GPU from PyPI's CUDA 13.0 wheels into
# its own target dir; a runnable folder (binary + lib/) lands in $(CUDA_BUNDLE). See README, "GPU build".
CUDA_BUNDLE ?= $(CACHE_DIR)/infergate-server-cuda
build-cuda:
	CACHE_DIR=$(CACHE_DIR) BUNDLE_DIR=$(CUDA_BUNDLE) scripts/build-cuda.sh

# What can be checked without a GPU: links, bundled libraries, clear failures, CPU fallback.
test-cuda: build-cuda model
	CACHE_DIR=$(CACHE_DIR) BUNDLE_DIR=$(CUDA_BUNDLE) MODEL=$(MODEL) scripts/check-cuda-build.sh
