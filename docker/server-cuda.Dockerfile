# The CUDA server image: infergate-server built with `--features cuda` (candle's CUDA backend)
# on NVIDIA's CUDA runtime image (cudart, cuBLAS, cuRAND), non-root. The driver's libcuda comes
# from the node through the NVIDIA container toolkit. Models are not baked in: GPU-sized models
# come from the Hugging Face Hub (hf://) or a PVC.
#   docker build -f docker/server-cuda.Dockerfile -t infergate-server:0.1.0-cuda .
# Keep CUDA at 13.0.x: the target hosts run driver 580 (CUDA 13.0), which may reject PTX from a
# newer nvcc (DESIGN.md, "GPU build"). GPU architectures come from scripts/cuda-archs.sh, the
# list scripts/build-cuda.sh uses: PTX compute_80 (JIT-compiled by the driver for newer GPUs)
# and SASS for sm_80/86/89/90 (A100, A10, L4/L40, H100/H200). The CUDA_COMPUTE_CAP and
# CUDA_ARCHS build args override it (empty: the list's defaults).
ARG CUDA_VERSION=13.0.2
ARG CUDA_BUILD_IMAGE=docker.io/nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=docker.io/nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04

FROM ${CUDA_BUILD_IMAGE} AS build
ARG RUST_VERSION=1.95.0
ARG CUDA_COMPUTE_CAP=
ARG CUDA_ARCHS=
ARG TARGET_CPU=x86-64-v3
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gcc g++ libc6-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
# The devel image's stub libcuda is for linking only; the real one is the node driver's.
ENV PATH=/root/.cargo/bin:/usr/local/cuda/bin:${PATH} \
    CUDA_ROOT=/usr/local/cuda \
    LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
    RUSTFLAGS="-C target-cpu=${TARGET_CPU}" \
    CARGO_TARGET_DIR=/target
WORKDIR /src
COPY . .
# bash (not SHELL, which buildah ignores for OCI images) sources the list; the nvcc wrapper
# sits one folder below the toolkit root, where cudaforge looks for ../include and ../lib64.
RUN --mount=type=cache,target=/root/.cargo/registry \
    --mount=type=cache,target=/target \
    bash -euo pipefail -c '. scripts/cuda-archs.sh \
      && export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$CUDA_COMPUTE_CAP_DEFAULT} \
      && write_nvcc_wrapper /usr/local/cuda/bin/nvcc /usr/local/cuda/wrap/nvcc "${CUDA_ARCHS:-$CUDA_ARCHS_DEFAULT}" \
      && NVCC=/usr/local/cuda/wrap/nvcc cargo build --release --locked -p infergate-server --bin infergate-server --features cuda' \
 && mkdir -p /out && cp /target/release/infergate-server /out/

FROM ${CUDA_RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="infergate-server-cuda" \
      org.opencontainers.image.description="OpenAI-compatible LLM server with continuous batching, CUDA build" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/infergate-server /usr/local/bin/infergate-server
# A numeric non-root user so runAsNonRoot can verify it; no shell step, so the image adds one layer.
USER 65532:65532
ENV HOST=0.0.0.0 \
    PORT=8080 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/infergate-server"]
