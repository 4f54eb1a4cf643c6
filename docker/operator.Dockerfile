# The operator image: the Rust binary on distroless (glibc, CA certificates, no shell), non-root.
#   docker build -f docker/operator.Dockerfile -t infergate-operator:0.1.0 .
# Base images are arguments so a mirror (or, in scripts/test-images.sh, scratch) can stand in.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# .cargo/config.toml builds for the build host's CPU; an image must run on any x86-64 node.
ENV RUSTFLAGS="-C target-cpu=x86-64-v2" CARGO_TARGET_DIR=/target
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/target \
    cargo build --release --locked -p infergate-operator --bin infergate-operator \
 && mkdir -p /out && cp /target/release/infergate-operator /out/

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="infergate-operator" \
      org.opencontainers.image.description="Kubernetes operator for InferenceDeployment" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/infergate-operator /usr/local/bin/infergate-operator
# distroless' nonroot user, by number so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# /metrics and /health (HTTP_ADDR).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/infergate-operator"]
