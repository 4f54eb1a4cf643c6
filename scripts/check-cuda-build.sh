#!/usr/bin/env bash
# Checks the CUDA bundle made by scripts/build-cuda.sh on a machine without a GPU:
#   - the binary links candle's CUDA backend (libcuda, cuBLAS, cuRAND, the CUDA runtime) and
#     finds every CUDA library but the driver in its own lib/ (rpath $ORIGIN/lib);
#   - without a driver it stops at the loader, naming libcuda.so.1;
#   - with the link stub standing in for a driver that sees no GPU, `--device cuda` exits
#     with a one-line reason (no panic), and `--device auto` falls back to the CPU and serves,
#     without VRAM series;
#   - the GPU code is there: SASS for every architecture of scripts/cuda-archs.sh and PTX
#     for the oldest (scripts/cuda-kernels.py reads the fatbin; cuobjdump cross-checks);
#   - the crate's unit tests pass when compiled with the feature.
# Kernels cannot run here; docs say what an H100 run must verify.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_DIR=${CACHE_DIR:-$HOME/.cache/infergate}
CUDA_CACHE=${CUDA_CACHE:-$CACHE_DIR/cuda-13.0}
BUNDLE_DIR=${BUNDLE_DIR:-$CACHE_DIR/infergate-server-cuda}
MODEL=${MODEL:-$CACHE_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf}
STUBS=$CUDA_CACHE/root/lib64/stubs
BIN=$BUNDLE_DIR/infergate-server
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

[[ -x $BIN ]] || { echo "no bundle at $BUNDLE_DIR: run make build-cuda" >&2; exit 1; }
[[ -e $STUBS/libcuda.so.1 ]] || { echo "no libcuda stub in $STUBS: run make build-cuda" >&2; exit 1; }

dynamic=$(readelf -d "$BIN")
for lib in libcuda.so.1 libcublas.so.13 libcurand.so.10 libcudart.so.13; do
  if grep -q "(NEEDED).*\[$lib\]" <<<"$dynamic"; then ok "links $lib"; else fail "does not link $lib"; fi
done
if grep -qE '\((RUNPATH|RPATH)\).*\[\$ORIGIN/lib\]' <<<"$dynamic"; then ok "rpath \$ORIGIN/lib"; else fail "no \$ORIGIN/lib rpath"; fi
if [[ -e $BUNDLE_DIR/lib/libcuda.so.1 || -e $BUNDLE_DIR/lib/libcuda.so ]]; then
  fail "the bundle ships a libcuda (the driver's must be used)"
else
  ok "no libcuda in the bundle"
fi

# Everything but the driver resolves inside the bundle.
missing=$(env -u LD_LIBRARY_PATH ldd "$BIN" | awk '/not found/ {print $1}' | tr '\n' ' ')
if [[ $missing == "libcuda.so.1 " ]]; then ok "only the driver is left to the host"; else fail "unresolved: $missing"; fi
for lib in libcublas.so.13 libcublasLt.so.13; do
  resolved=$(env -u LD_LIBRARY_PATH ldd "$BIN" | awk -v lib="$lib" '$1 == lib {print $3}')
  if [[ $resolved == "$BUNDLE_DIR/lib/$lib" ]]; then ok "$lib from the bundle"; else fail "$lib from '$resolved'"; fi
done

# The GPU code inside: SASS for every architecture of scripts/cuda-archs.sh in .nv_fatbin,
# and candle's embedded PTX all for the oldest one (which the driver JITs for the newer ones;
# PTX for a newer target would not load on an A100). scripts/cuda-kernels.py reads the ELF
# itself; cuobjdump, where present (CUOBJDUMP or on PATH), must list the same cubins.
# shellcheck source=cuda-archs.sh
source scripts/cuda-archs.sh
kernels=$(python3 scripts/cuda-kernels.py "$BIN")
echo "kernels: $kernels"
for arch in $CUDA_ARCHS_DEFAULT; do
  n=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["sass"].get("sm_" + sys.argv[2], 0))' "$kernels" "$arch")
  if ((n > 0)); then ok "SASS for sm_$arch ($n cubins)"; else fail "no SASS for sm_$arch"; fi
done
ptx=$(python3 -c 'import json,sys; print(" ".join(sorted(json.loads(sys.argv[1])["embedded_ptx_targets"])))' "$kernels")
if [[ $ptx == "sm_$CUDA_COMPUTE_CAP_DEFAULT" ]]; then
  ok "candle's PTX targets compute_$CUDA_COMPUTE_CAP_DEFAULT only"
else
  fail "embedded PTX targets '$ptx', want sm_$CUDA_COMPUTE_CAP_DEFAULT only"
fi
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || true)}
if [[ -n $cuobjdump && -x $cuobjdump ]]; then
  listed=$("$cuobjdump" --list-elf "$BIN" 2>/dev/null | grep -o 'sm_[0-9a-z]*' | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
  parsed=$(python3 -c 'import json,sys; print(" ".join(f"{k}:{v}" for k, v in json.loads(sys.argv[1])["sass"].items()))' "$kernels")
  if [[ ${listed% } == "$parsed" ]]; then ok "cuobjdump lists the same cubins ($parsed)"; else fail "cuobjdump: '$listed', parsed: '$parsed'"; fi
fi

# No driver: the loader refuses, naming it.
set +e
out=$(env -u LD_LIBRARY_PATH "$BIN" --help 2>&1)
code=$?
set -e
if [[ $code -ne 0 && $out == *libcuda.so.1* ]]; then ok "without a driver the loader names libcuda.so.1"; else fail "no-driver run: $code $out"; fi

# A driver that sees no GPU (the stub answers CUDA_ERROR_NO_DEVICE to everything).
export LD_LIBRARY_PATH=$STUBS
if "$BIN" --help | grep -q -- "--device"; then ok "--help runs and lists --device"; else fail "--help"; fi
set +e
# RUST_BACKTRACE must not bury the reason under candle's backtrace.
out=$(RUST_BACKTRACE=1 RUST_LOG=off "$BIN" --model "$MODEL" --device cuda --port 0 2>&1 >/dev/null)
code=$?
set -e
if [[ $code -eq 1 && $(wc -l <<<"$out") -eq 1 && $out == *"cannot open CUDA device 0"* ]]; then
  ok "--device cuda without a GPU exits 1: $out"
else
  fail "--device cuda without a GPU: exit $code: $out"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$BIN" --model "$MODEL" --device auto --port "$port" --threads 1 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
ready=0
for _ in $(seq 120); do
  if curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 $server 2>/dev/null || break
  sleep 0.5
done
if [[ $ready -eq 1 ]]; then
  text=$(curl -fsS "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt":"The capital of France is","max_tokens":4,"temperature":0}')
  if [[ $text == *Paris* ]]; then ok "--device auto falls back to the CPU and serves"; else fail "completion: $text"; fi
  metrics=$(curl -fsS "http://127.0.0.1:$port/metrics")
  if [[ $metrics == *infergate_resident_memory_bytes* && $metrics != *gpu_memory* ]]; then
    ok "no VRAM series on the CPU"
  else
    fail "metrics on the CPU: $(grep gpu_memory <<<"$metrics")"
  fi
else
  fail "--device auto never became ready: $(tail -n 5 "$log")"
fi
kill $server 2>/dev/null || true
wait $server 2>/dev/null || true

# The crate's unit tests as compiled with the feature (the CUDA-only ones included), against
# the toolkit libraries and the no-GPU stub.
if LD_LIBRARY_PATH=$STUBS:$CUDA_CACHE/root/lib64 CUDA_CACHE=$CUDA_CACHE CACHE_DIR=$CACHE_DIR \
  scripts/build-cuda.sh test --release --locked -p infergate-server --features cuda --lib; then
  ok "unit tests with --features cuda"
else
  fail "unit tests with --features cuda"
fi

echo "cuda-checks: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
