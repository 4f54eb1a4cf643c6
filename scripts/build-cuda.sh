#!/usr/bin/env bash
# Builds infergate-server with candle's CUDA backend on a machine without a GPU or a CUDA
# install, and lays out a runnable folder: BUNDLE_DIR/{infergate-server, lib/}.
#
#   1. pip-installs the pinned CUDA 13.0 wheels (scripts/cuda-requirements.txt) into a cache;
#   2. assembles a CUDA_ROOT from them (bin, include, nvvm, lib64 with plain .so names);
#   3. generates a link-only libcuda.so stub from cudarc's driver symbols (the driver's own
#      libcuda.so.1 is what runs; the stub never leaves lib64/stubs);
#   4. cargo build --features cuda in its own target dir (the CPU build stays untouched);
#   5. copies the binary and the CUDA libraries it needs (rpath $ORIGIN/lib) into BUNDLE_DIR.
#
# Everything is cached under CACHE_DIR and keyed, so a warm rerun only runs cargo.
# With arguments, runs `cargo ARGS` in the same environment instead of steps 4-5, e.g.
#   scripts/build-cuda.sh clippy --release --locked -p infergate-server --features cuda --all-targets -- -D warnings
# GPU architectures: PTX for compute_$CUDA_COMPUTE_CAP and SASS for every CUDA_ARCHS entry,
# defaults from scripts/cuda-archs.sh (the list the Dockerfile uses too), so one binary runs
# on A100 (80), A10/RTX 30 (86), L4/L40 (89) and H100/H200 (90). The server checks the
# device's compute capability at start-up (device.rs, BUILT_COMPUTE_CAPABILITIES).
# Knobs: CACHE_DIR, CUDA_CACHE, CUDA_TARGET_DIR, BUNDLE_DIR, CUDA_COMPUTE_CAP (80),
# CUDA_ARCHS ("80 86 89 90"), TARGET_CPU (native), CUDAFORGE_THREADS (parallel nvcc jobs; default all cores), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# shellcheck source=cuda-archs.sh
. "$REPO/scripts/cuda-archs.sh"

CACHE_DIR=${CACHE_DIR:-$HOME/.cache/infergate}
CUDA_CACHE=${CUDA_CACHE:-$CACHE_DIR/cuda-13.0}
CUDA_TARGET_DIR=${CUDA_TARGET_DIR:-$CACHE_DIR/target-cuda}
BUNDLE_DIR=${BUNDLE_DIR:-$CACHE_DIR/infergate-server-cuda}
PYTHON=${PYTHON:-python3}
REQUIREMENTS=$REPO/scripts/cuda-requirements.txt
WHEELS=$CUDA_CACHE/wheels
ROOT=$CUDA_CACHE/root
started=$(date +%s)
log() { echo "build-cuda: $*" >&2; }

# 1. Wheels, keyed by the pinned list: a changed pin reinstalls into a fresh folder.
want=$(sha256sum "$REQUIREMENTS" | cut -c1-16)
if [[ "$(cat "$WHEELS/.key" 2>/dev/null)" != "$want" ]]; then
  log "installing the CUDA 13.0 wheels into $WHEELS"
  rm -rf "$WHEELS.tmp"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --target "$WHEELS.tmp" -r "$REQUIREMENTS"
  echo "$want" >"$WHEELS.tmp/.key"
  rm -rf "$WHEELS"
  mv "$WHEELS.tmp" "$WHEELS"
fi
CU=$WHEELS/nvidia/cu13
[[ -x $CU/bin/nvcc && -x $CU/nvvm/bin/cicc ]] || { log "no nvcc/cicc in $CU"; exit 1; }

# 2. CUDA_ROOT: the layout cudarc, cudaforge and nvcc expect. nvcc finds headers and cicc
#    relative to itself (nvcc.profile), so bin, include and nvvm are links into the wheels.
mkdir -p "$ROOT/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$CU/$d" "$ROOT/$d"; done
for lib in "$CU"/lib/lib*.so.*; do
  name=$(basename "$lib")
  ln -sfn "$lib" "$ROOT/lib64/$name"
  # libcublas.so.13 -> libcublas.so: the plain name the linker looks for with -lcublas.
  ln -sfn "$name" "$ROOT/lib64/${name%%.so.*}.so"
done

# 3. Link-only driver stub from cudarc's symbol list. Every entry point returns
#    CUDA_ERROR_NO_DEVICE (100), so a process that loads it by mistake fails cleanly.
cudarc_src=$(
  cargo metadata --locked --format-version 1 --features infergate-server/cuda --manifest-path "$REPO/Cargo.toml" |
    "$PYTHON" -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))'
)
symbols=$(grep -oP '^pub unsafe fn \Kcu\w+' "$cudarc_src/src/driver/sys/mod.rs" | sort -u)
[[ $(wc -l <<<"$symbols") -gt 100 ]] || { log "too few driver symbols in $cudarc_src"; exit 1; }
stub_key=$(sha256sum <<<"$symbols" | cut -c1-16)
if [[ "$(cat "$ROOT/lib64/stubs/.key" 2>/dev/null)" != "$stub_key" ]]; then
  log "generating the libcuda stub ($(wc -l <<<"$symbols") symbols from $(basename "$cudarc_src"))"
  sed 's/.*/int &(void) { return 100; }/' <<<"$symbols" >"$ROOT/lib64/stubs/libcuda-stub.c"
  cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$ROOT/lib64/stubs/libcuda.so" "$ROOT/lib64/stubs/libcuda-stub.c"
  ln -sfn libcuda.so "$ROOT/lib64/stubs/libcuda.so.1"
  echo "$stub_key" >"$ROOT/lib64/stubs/.key"
fi

# 4. The build. Paths stay fixed across runs: cudarc reruns its build script when they change.
export CUDA_ROOT=$ROOT CUDA_PATH=$ROOT CUDA_HOME=$ROOT
export PATH=$ROOT/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$CUDA_COMPUTE_CAP_DEFAULT}
CUDA_ARCHS=${CUDA_ARCHS:-$CUDA_ARCHS_DEFAULT}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export CARGO_TARGET_DIR=$CUDA_TARGET_DIR
# The nvcc wrapper sits in ROOT/wrap so that cudaforge, which takes the toolkit root from the
# nvcc path (../include, ../lib64), still finds ROOT.
write_nvcc_wrapper "$ROOT/bin/nvcc" "$ROOT/wrap/nvcc" "$CUDA_ARCHS"
export NVCC=$ROOT/wrap/nvcc
# The binary finds the bundled CUDA libraries beside it; the driver comes from the host.
# RUSTFLAGS replaces .cargo/config.toml's target-cpu=native, so it is set again here (our CPU
# kernels are 2-5x slower without the host's SIMD); TARGET_CPU=x86-64-v3 builds a binary for
# a host whose CPU differs from this one (a borrowed GPU host: see DEVELOPERS.md).
export RUSTFLAGS="${RUSTFLAGS:-} -C target-cpu=${TARGET_CPU:-native} -C link-arg=-Wl,-rpath,\$ORIGIN/lib"
if (($#)); then
  log "cargo $* (PTX compute_$CUDA_COMPUTE_CAP, SASS sm_${CUDA_ARCHS// /,sm_}) in $CARGO_TARGET_DIR"
  exec cargo "$@"
fi
log "cargo build --features cuda (PTX compute_$CUDA_COMPUTE_CAP, SASS sm_${CUDA_ARCHS// /,sm_}) into $CARGO_TARGET_DIR"
cargo build --release --locked -p infergate-server --features cuda
bin=$CARGO_TARGET_DIR/release/infergate-server

# 5. Bundle: the binary and every library it (transitively) needs from the wheels.
rm -rf "$BUNDLE_DIR.tmp"
mkdir -p "$BUNDLE_DIR.tmp/lib"
cp "$bin" "$BUNDLE_DIR.tmp/"
queue=("$bin")
while ((${#queue[@]})); do
  file=${queue[0]}
  queue=("${queue[@]:1}")
  for needed in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [[ -e $CU/lib/$needed && ! -e $BUNDLE_DIR.tmp/lib/$needed ]] || continue
    cp "$CU/lib/$needed" "$BUNDLE_DIR.tmp/lib/"
    queue+=("$CU/lib/$needed")
  done
done
# nvrtc loads its builtins with dlopen, which readelf cannot see.
if [[ -e $BUNDLE_DIR.tmp/lib/libnvrtc.so.13 ]]; then
  cp "$CU"/lib/libnvrtc-builtins.so.* "$BUNDLE_DIR.tmp/lib/"
fi
rm -rf "$BUNDLE_DIR"
mv "$BUNDLE_DIR.tmp" "$BUNDLE_DIR"
log "bundle: $BUNDLE_DIR ($(du -sh "$BUNDLE_DIR" | cut -f1)): $(ls "$BUNDLE_DIR/lib" | tr '\n' ' ')"
log "done in $(($(date +%s) - started)) s"
