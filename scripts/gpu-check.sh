#!/usr/bin/env bash
# The GPU check for a short borrowed H100/H200 host (16 cores, no internet, <= 64 MiB of the
# working tree carried, one command <= 10 min, 15 min in all): see DEVELOPERS.md, "GPU check".
#
#   scripts/gpu-check.sh stage     here, before the visit: the CUDA build (scripts/build-cuda.sh
#                                  with TARGET_CPU=x86-64-v3, the host's CPU is not this one) and
#                                  an x86-64-v3 infergate-bench, stripped and xz'd into gpu-check/
#                                  with the vocab; fails when the carried tree would pass 64 MiB
#   scripts/gpu-check.sh probe     one short command: what the host's Python (torch, numpy,
#                                  CUDA wheels), driver and CUDA libraries are; writes $OUT/probe.txt
#   scripts/gpu-check.sh [run]     the check (~6-8 min on a GPU, bounded): builds on the host
#     1. a Mistral-7B-shaped GGUF (Q8_0, random weights, llama-spm vocab) and a tiny random
#        Mistral in safetensors (scripts/gpu-check/*.py, stdlib Python only);
#     2. the tiny model's logits (`infergate-server logits`) against torch fp32 (skipped,
#        saying so, without torch);
#     3. serves the 7B file and drives it with infergate-bench: c=1 and c=8 with 1k-token
#        prompts, c=32 with mixed 64-2048-token prompts, 128 output tokens each;
#     4. writes TTFT P50/P95, TPOT, tok/s and peak VRAM (nvidia-smi sampled every 200 ms
#        beside the server's gpu_memory_used_bytes gauge) to $OUT/gpu-bench.json.
#
# GPU_CHECK_DRY_RUN=1 (or --dry-run) rehearses all of it on the CPU: the CPU builds staged
# (stripped, xz'd, size-checked) into WORK/stage and unpacked from there as on the host, tiny
# "7B" shapes, --device cpu --backend candle (the device-resident path on candle's CPU
# device), short prompts. `stage --dry-run` stages the CPU builds only.
#
# Inputs (defaults in the carried folder gpu-check/ at the repository root, see DEVELOPERS.md):
#   INFERGATE_SERVER_BIN  the CUDA build (gpu-check/infergate-server or .xz, unpacked to WORK;
#                         for `stage`: a CUDA binary to stage instead of building one)
#   BENCH_BIN             infergate-bench (gpu-check/infergate-bench or .xz; for `stage`: as above)
#   VOCAB                 ggml-vocab-llama-spm.gguf (gpu-check/, else the llama.cpp sources in the cache)
#   OUT (results; default WORK/out), WORK (scratch, default /tmp/infergate-gpu-check), PORT (18080),
#   PYTHON (python3), BUDGET_S (per load run, default 120 s; dry run 60 s)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$REPO/scripts/gpu-check"
MODE=run
DRY=${GPU_CHECK_DRY_RUN:-0}
for a in "$@"; do
    case "$a" in
        probe) MODE=probe ;;
        stage) MODE=stage ;;
        run) MODE=run ;;
        --dry-run) DRY=1 ;;
        *) echo "usage: $0 [stage|probe|run] [--dry-run]" >&2; exit 2 ;;
    esac
done
WORK=${WORK:-/tmp/infergate-gpu-check}
OUT=${OUT:-$WORK/out}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-18080}
CACHE_DIR=${CACHE_DIR:-$HOME/.cache/infergate}
mkdir -p "$WORK" "$OUT"
started=$(date +%s)
log() { echo "gpu-check [$(($(date +%s) - started)) s]: $*" >&2; }

# CUDA 13 user-space libraries the build links (cublas, cublasLt, cudart, curand): from the
# environment, a CUDA install, or NVIDIA's pip wheels in the host's Python.
find_cuda_libs() {
    local d
    for d in ${CUDA_LIB_DIR:-} /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
        $("$PYTHON" - <<'PY' 2>/dev/null
import site, glob, sys
for p in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in glob.glob(p + "/nvidia/*/lib") + glob.glob(p + "/nvidia/cu13/lib"):
        print(lib)
PY
        ); do
        [[ -n $d && -e $d/libcublas.so.13 ]] && { echo "$d"; return 0; }
    done
    return 1
}

# What travels to the host: the tracked (and untracked, not ignored) tree plus gpu-check/.
CARRY_LIMIT_BYTES=$((64 << 20))
STAGE=${STAGE:-$REPO/gpu-check}
VOCAB=${VOCAB:-$STAGE/ggml-vocab-llama-spm.gguf}
[[ -e $VOCAB ]] || VOCAB=$CACHE_DIR/llama-src-0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf

# stage_into DIR SERVER BENCH: stripped, xz'd copies of the two binaries and the vocab in DIR;
# fails when the tree and DIR together pass the carry limit.
stage_into() {
    local dir=$1 server=$2 bench=$3 name src tracked staged
    [[ -e $VOCAB ]] || { log "no ggml-vocab-llama-spm.gguf to stage (set VOCAB)"; exit 1; }
    mkdir -p "$dir"
    for name in infergate-server infergate-bench; do
        src=$server
        [[ $name == infergate-bench ]] && src=$bench
        [[ -x $src ]] || { log "no $name at $src"; exit 1; }
        rm -f "$dir/$name" "$dir/$name.xz"
        strip -o "$dir/$name" "$src"
        xz -T2 -6 "$dir/$name"
    done
    [[ $VOCAB -ef $dir/$(basename "$VOCAB") ]] || cp "$VOCAB" "$dir/"
    tracked=$(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    staged=$(du -cb "$dir" | tail -1 | cut -f1)
    log "staged in $dir: $(cd "$dir" && du -b -- * | awk '{printf "%s %.1f MiB, ", $2, $1 / 1048576}')tree $((tracked >> 20)) MiB, carried $(((tracked + staged) >> 20)) of 64 MiB"
    ((tracked + staged <= CARRY_LIMIT_BYTES)) || { log "over the 64 MiB carry limit"; exit 1; }
}

if [[ $MODE == stage ]]; then
    if [[ $DRY == 1 ]]; then
        stage_into "$WORK/stage" "${INFERGATE_SERVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/infergate-server}" \
            "${BENCH_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/infergate-bench}"
        exit 0
    fi
    server=${INFERGATE_SERVER_BIN:-}
    if [[ -z $server ]]; then
        TARGET_CPU=x86-64-v3 "$REPO/scripts/build-cuda.sh" >&2
        server=${BUNDLE_DIR:-$CACHE_DIR/infergate-server-cuda}/infergate-server
    fi
    bench=${BENCH_BIN:-}
    if [[ -z $bench ]]; then
        # Its own target dir: x86-64-v3 flags would rebuild the native CPU build otherwise.
        bench_target=$CACHE_DIR/target-gpu-check-bench
        RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=$bench_target \
            cargo build --release --locked -p infergate-bench --manifest-path "$REPO/Cargo.toml" >&2
        bench=$bench_target/release/infergate-bench
    fi
    stage_into "$STAGE" "$server" "$bench"
    exit 0
fi

if [[ $MODE == probe ]]; then
    {
        echo "## host"; nproc; free -g | head -2; df -h "$WORK" | tail -1
        echo "## nvidia-smi"; nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
        echo "## python"; "$PYTHON" - <<'PY' 2>&1
import importlib, sys
print(sys.version.split()[0])
for name in ["torch", "numpy", "safetensors", "transformers", "gguf"]:
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "torch":
            extra = f" cuda={m.version.cuda} available={m.cuda.is_available()}"
        print(f"{name} {getattr(m, '__version__', '?')}{extra}")
    except Exception as e:
        print(f"{name} missing ({type(e).__name__})")
PY
        echo "## CUDA libraries"
        ldconfig -p 2>/dev/null | grep -E "libcuda\.so|libcublas|libcudart|libcurand|libnvrtc" | head -20 || true
        echo "CUDA 13 libs for the build: $(find_cuda_libs || echo 'NOT FOUND (set CUDA_LIB_DIR)')"
    } | tee "$OUT/probe.txt"
    exit 0
fi

# Unpacks NAME from STAGE (plain or .xz) unless the variable names a binary already.
binary() {
    local var=$1 name=$2 path=${!1:-}
    if [[ -n $path ]]; then echo "$path"; return; fi
    if [[ -x $STAGE/$name ]]; then echo "$STAGE/$name"; return; fi
    if [[ -e $STAGE/$name.xz ]]; then
        xz -dc "$STAGE/$name.xz" >"$WORK/$name" && chmod +x "$WORK/$name" && echo "$WORK/$name"; return
    fi
    echo "gpu-check: no $name: set $var or run \`scripts/gpu-check.sh stage\` (see DEVELOPERS.md)" >&2
    exit 1
}

if [[ $DRY == 1 ]]; then
    # The CPU builds go through the same strip, xz and size check as the CUDA one.
    STAGE=$WORK/stage
    stage_into "$STAGE" "${INFERGATE_SERVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/infergate-server}" \
        "${BENCH_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/infergate-bench}"
    SERVER_BIN=$(INFERGATE_SERVER_BIN='' binary INFERGATE_SERVER_BIN infergate-server)
    BENCH_BIN=$(BENCH_BIN='' binary BENCH_BIN infergate-bench)
    DEVICE=cpu SHAPE=dry-run BACKEND=candle
    P_LONG=64 P_MIN=16 P_MAX=256 MAX_TOKENS=8 REQ1=2 REQ8=8 REQ32=32 BUDGET_S=${BUDGET_S:-60}
else
    SERVER_BIN=$(binary INFERGATE_SERVER_BIN infergate-server)
    BENCH_BIN=$(binary BENCH_BIN infergate-bench)
    DEVICE=cuda SHAPE=mistral-7b BACKEND=candle
    P_LONG=1024 P_MIN=64 P_MAX=2048 MAX_TOKENS=128 REQ1=6 REQ8=24 REQ32=64 BUDGET_S=${BUDGET_S:-120}
    if libs=$(find_cuda_libs); then
        export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        log "CUDA libraries from $libs"
    else
        log "warning: no libcublas.so.13 found (set CUDA_LIB_DIR); the server may not start"
    fi
fi
[[ -e $VOCAB ]] || { log "no ggml-vocab-llama-spm.gguf (set VOCAB)"; exit 1; }
log "mode $([[ $DRY == 1 ]] && echo dry-run || echo gpu): server $SERVER_BIN, device $DEVICE, shapes $SHAPE"

# 1. Models, built here (nothing that large travels).
GGUF=$WORK/$SHAPE-q8_0.gguf
if [[ ! -e $GGUF ]]; then
    "$PYTHON" "$HERE/gguf_writer.py" "$GGUF.tmp" "$VOCAB" "$SHAPE" >&2
    mv "$GGUF.tmp" "$GGUF"
fi
log "model $(du -h "$GGUF" | cut -f1) at $GGUF"
TINY=$WORK/tiny-mistral
"$PYTHON" "$HERE/tiny_mistral.py" write "$TINY" >&2

# 2. Logits against torch fp32.
timeout 300 "$PYTHON" "$HERE/tiny_mistral.py" check "$TINY" "$SERVER_BIN" "$DEVICE" "$OUT/logits-check.json" >&2 ||
    log "the logits check did not finish (see $OUT/logits-check.json if written)"
log "logits check: $(cat "$OUT/logits-check.json" 2>/dev/null | tr -d '\n' | cut -c1-300)"

# 3. Serve and load.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$SERVER_BIN" --model "$GGUF" --device "$DEVICE" --backend "$BACKEND" --host 127.0.0.1 --port "$PORT" \
    --max-model-len 4096 --max-batch-size 32 --request-timeout-seconds 300 --max-queue-size 256 \
    >"$OUT/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 1 240); do
    curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { log "the server exited: $(tail -5 "$OUT/server.log")"; exit 1; }
    sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null || { log "the server is not ready after 240 s"; exit 1; }
log "server ready"
if command -v nvidia-smi >/dev/null && [[ $DRY != 1 ]]; then
    timeout 900 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$OUT/nvidia-smi-mib.txt" 2>&1 &
    pids+=("$!")
fi
gauge() { curl -fsS "http://127.0.0.1:$PORT/metrics" 2>/dev/null | awk '/^[a-z_:]*gpu_memory_used_bytes /{print $2}' | tail -1; }
bench() {
    local label=$1; shift
    log "load $label: $*"
    timeout $((BUDGET_S + 30)) "$BENCH_BIN" --url "http://127.0.0.1:$PORT" --max-tokens "$MAX_TOKENS" --seed 1 \
        --max-duration-seconds "$BUDGET_S" --request-timeout-seconds "$BUDGET_S" --server-pid "$server_pid" \
        --label "$label" --json-out "$OUT/bench-$label.json" "$@" >"$OUT/bench-$label.txt" 2>&1 ||
        log "$label: infergate-bench failed ($(tail -2 "$OUT/bench-$label.txt" | tr '\n' ' '))"
    echo "$label $(gauge)" >>"$OUT/gauge-bytes.txt"
}
: >"$OUT/gauge-bytes.txt"
bench c1 --concurrency 1 --requests "$REQ1" --prompt-tokens "$P_LONG"
bench c8 --concurrency 8 --requests "$REQ8" --prompt-tokens "$P_LONG"
bench c32-mixed --concurrency 32 --requests "$REQ32" --prompt-tokens "$P_MIN" --prompt-tokens-max "$P_MAX"

# 4. The summary.
"$PYTHON" "$HERE/summarize.py" "$OUT" "$([[ $DRY == 1 ]] && echo dry-run || echo gpu)" "$SHAPE" "$(($(date +%s) - started))"
log "done: $OUT/gpu-bench.json"
