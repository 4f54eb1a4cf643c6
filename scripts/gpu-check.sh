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
#   scripts/gpu-check.sh [run]     the check (at most TOTAL_S = 540 s, every step bounded, a
#                                  partial $OUT/gpu-bench.json after each; DEVELOPERS.md has
#                                  the steps and their bounds):
#     1. a Mistral-7B-shaped GGUF (Q8_0, random weights, llama-spm vocab) and a tiny random
#        Mistral in safetensors (scripts/gpu-check/*.py, stdlib Python only);
#     2. the tiny model's logits (`infergate-server logits`) against torch fp32 (numpy fp32
#        without torch);
#     3. serves the 7B file (KV sized for the workload: --max-kv-tokens 49152) and drives it
#        with infergate-bench: c=1 and c=8 with 1k-token prompts, c=32 with mixed
#        64-2048-token prompts, 128 output tokens each; VRAM sampled every 0.5 s during each
#        load (nvidia-smi and the server's gpu_memory_used_bytes gauge);
#     4. `infergate-server batch-check`: one sequence's logits alone vs inside a batch of 12;
#     5. writes TTFT P50/P95, TPOT, tok/s, the VRAM peaks and the checks to $OUT/gpu-bench.json
#        (scripts/gpu-check/render_gpu_section.py turns it into BENCHMARKS.md's GPU section).
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
#   PYTHON (python3), TOTAL_S (the run's deadline: 540 s; dry run 900 s), MAX_KV_TOKENS (49152)
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
    DEVICE=cpu SHAPE=dry-run BACKEND=candle MODE_NAME=dry-run
    P_LONG=64 P_MIN=16 P_MAX=256 MAX_TOKENS=8 REQ1=2 REQ8=8 REQ32=32
    # Two shared cores: the rehearsal's loads are slower than the GPU's, not its bounds.
    TOTAL_S=${TOTAL_S:-900}
else
    SERVER_BIN=$(binary INFERGATE_SERVER_BIN infergate-server)
    BENCH_BIN=$(binary BENCH_BIN infergate-bench)
    DEVICE=cuda SHAPE=mistral-7b BACKEND=candle MODE_NAME=gpu
    P_LONG=1024 P_MIN=64 P_MAX=2048 MAX_TOKENS=128 REQ1=6 REQ8=24 REQ32=64
    TOTAL_S=${TOTAL_S:-540}
    if libs=$(find_cuda_libs); then
        export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        log "CUDA libraries from $libs"
    else
        log "warning: no libcublas.so.13 found (set CUDA_LIB_DIR); the server may not start"
    fi
fi
[[ -e $VOCAB ]] || { log "no ggml-vocab-llama-spm.gguf (set VOCAB)"; exit 1; }
log "mode $MODE_NAME: server $SERVER_BIN, device $DEVICE, shapes $SHAPE, at most $TOTAL_S s in all"

# ---- the step runner: every step has a bound, the whole run a deadline ------------------------
# Worst case on the GPU (each step at its bound; see DEVELOPERS.md, "GPU check"): the run
# stops at TOTAL_S (540 s) whatever happens, under the 600 s one device command may take, and
# the steps come most valuable first, so a cut removes the least valuable. After every step
# $OUT/gpu-bench.json is rewritten from what exists ("complete": false until the end).
deadline=$((started + TOTAL_S))
SUMMARY_RESERVE_S=5
rm -f "$OUT"/{steps.txt,gpu-bench.json,bench-*.json,bench-*.txt,vram-*.txt,logits-check.json,batch-check.json,server-command.json,gpu.json,nvidia-smi-*.txt}
summarize() {
    "$PYTHON" "$HERE/summarize.py" "$OUT" "$MODE_NAME" "$SHAPE" "$(($(date +%s) - started))" "$@" >/dev/null ||
        log "summarize.py failed"
}
# bound_for WANT: WANT seconds, or less when the deadline is nearer; 0 when under 5 s are left.
bound_for() {
    local left=$((deadline - $(date +%s) - SUMMARY_RESERVE_S))
    ((left < 5)) && { echo 0; return; }
    echo $((left < $1 ? left : $1))
}
# record NAME STATUS SECONDS BOUND [NOTE...]
record() {
    local name=$1 status=$2 seconds=$3 bound=$4
    shift 4
    echo "$name $status $seconds $bound $*" >>"$OUT/steps.txt"
    log "step $name: $status in $seconds s (bound $bound s)${*:+: $*}"
    summarize
}
# step NAME WANT_S CMD...: CMD under `timeout` of its bound; skipped when no time is left.
step() {
    local name=$1 want=$2 bound t0 rc
    shift 2
    bound=$(bound_for "$want")
    if ((bound == 0)); then record "$name" skipped 0 0 "no time left before the $TOTAL_S s deadline"; return 1; fi
    t0=$(date +%s)
    set +e
    if declare -F "$1" >/dev/null; then
        # A function of this script: `timeout` runs programs, so it gets a bash that has it
        # (the variables it reads are exported).
        timeout "$bound" bash -c "$(declare -f "$1"); $(printf '%q ' "$@")"
    else
        timeout "$bound" "$@"
    fi
    rc=$?
    set -e
    if ((rc == 0)); then record "$name" ok $(($(date +%s) - t0)) "$bound"; return 0; fi
    if ((rc == 124)); then record "$name" timeout $(($(date +%s) - t0)) "$bound"; return 1; fi
    record "$name" "failed(rc=$rc)" $(($(date +%s) - t0)) "$bound"
    return 1
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if [[ $DRY != 1 ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 |
        "$PYTHON" -c 'import json,sys; f=[x.strip() for x in sys.stdin.read().split(",")]; print(json.dumps(dict(zip(["name","compute_cap","driver","memory_total"],f))))' \
            >"$OUT/gpu.json" || true
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 >"$OUT/nvidia-smi-idle-mib.txt" || true
    # The whole run's peak, every 200 ms (the per-load peaks come from sample_vram below).
    timeout "$TOTAL_S" nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$OUT/nvidia-smi-mib.txt" 2>&1 &
    pids+=("$!")
fi
summarize

# 1. Models, written here (nothing that large travels). The file name carries the writer's
# version: a host that kept an older file from another visit rebuilds it.
GGUF=$WORK/$SHAPE-q8_0-v2.gguf
TINY=$WORK/tiny-mistral
export GGUF TINY PYTHON HERE VOCAB SHAPE PORT OUT SERVER_BIN DEVICE
write_models() {
    if [[ ! -e $GGUF ]]; then
        "$PYTHON" "$HERE/gguf_writer.py" "$GGUF.tmp" "$VOCAB" "$SHAPE" >&2
        mv "$GGUF.tmp" "$GGUF"
    fi
    "$PYTHON" "$HERE/tiny_mistral.py" write "$TINY" >&2
}
step models 90 write_models || { log "no models: stopping"; summarize --complete; exit 1; }
log "model $(du -h "$GGUF" | cut -f1) at $GGUF"

# 2. The tiny model's logits against torch fp32 (numpy without torch): cheap, and a wrong
# device path makes every figure after it meaningless.
step logits-check 60 "$PYTHON" "$HERE/tiny_mistral.py" check "$TINY" "$SERVER_BIN" "$DEVICE" "$OUT/logits-check.json" >&2 || true

# 3. Serve the 7B file. The KV cache is sized for the workload, not the full-batch cap (32 x
# 4096 tokens = 16 GiB of bf16 KV), so that weights + KV stay under the 16 GB target:
# 49152 tokens x 128 KiB (32 layers x 2 x 8 KV heads x 128 x bf16) = 6 GiB (6.44 GB) beside
# the 7.69 GB of Q8_0 weights; c=32 of 64-2048-token prompts holds ~36k tokens on average
# (1056 mean + half of 128 generated, x 32), so 49152 leaves ~4 standard deviations before a
# preemption. DEVELOPERS.md, "GPU check", has the arithmetic.
MAX_KV_TOKENS=${MAX_KV_TOKENS:-49152}
SERVER_CMD=("$SERVER_BIN" --model "$GGUF" --device "$DEVICE" --backend "$BACKEND" --host 127.0.0.1 --port "$PORT"
    --max-model-len 4096 --max-batch-size 32 --max-kv-tokens "$MAX_KV_TOKENS" --max-prefill-tokens 512
    --request-timeout-seconds 300 --max-queue-size 256)
"$PYTHON" -c 'import json,sys; print(json.dumps({"command": sys.argv[1:], "max_kv_tokens": int(sys.argv[1 + sys.argv[1:].index("--max-kv-tokens") + 1])}))' \
    "${SERVER_CMD[@]}" >"$OUT/server-command.json"
"${SERVER_CMD[@]}" >"$OUT/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
export server_pid
wait_ready() {
    local i
    for ((i = 0; i < 1200; i++)); do
        curl -fsS -m 2 "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
        kill -0 "$server_pid" 2>/dev/null || { echo "the server exited: $(tail -5 "$OUT/server.log")" >&2; return 1; }
        sleep 0.5
    done
    return 1
}
if ! step server-ready 120 wait_ready; then
    log "the server is not ready: $(tail -3 "$OUT/server.log" | tr '\n' ' ')"
    kill "$server_pid" 2>/dev/null || true
fi

# metric NAME: the value of series NAME (any prefix, any labels) in an exposition on stdin.
metric() { awk -v name="$1" '$1 ~ ("^[a-z_:]*" name "([{]|$)") {v = $NF} END {if (v != "") print v}'; }
# sample_vram LABEL COUNT: every 0.5 s, nvidia-smi's memory.used (MiB) and the server's
# gpu_memory_used_bytes and kv_cache_blocks_used, COUNT samples at most.
sample_vram() {
    local label=$1 count=$2 i smi text gauge blocks
    for ((i = 0; i < count; i++)); do
        smi=
        [[ $DRY != 1 ]] && smi=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' ')
        text=$(curl -fsS -m 1 "http://127.0.0.1:$PORT/metrics" 2>/dev/null || true)
        gauge=$(metric gpu_memory_used_bytes <<<"$text")
        blocks=$(metric kv_cache_blocks_used <<<"$text")
        echo "$(date +%s.%N) ${smi:--} ${gauge:--} ${blocks:--}" >>"$OUT/vram-$label.txt"
        sleep 0.5
    done
}
# load LABEL WANT_S ARGS...: one infergate-bench run of at most its bound, VRAM sampled meanwhile.
load() {
    local label=$1 want=$2 bound t0 sampler rc
    shift 2
    if ! kill -0 "$server_pid" 2>/dev/null; then record "load-$label" skipped 0 0 "no server"; return; fi
    bound=$(bound_for "$want")
    if ((bound < 15)); then record "load-$label" skipped 0 "$bound" "no time left before the $TOTAL_S s deadline"; return; fi
    # The bench's own limit ends it 10 s inside the bound, so it still writes its report.
    local run_s=$((bound - 10))
    log "load $label: $* (at most $run_s s)"
    : >"$OUT/vram-$label.txt"
    sample_vram "$label" $((2 * bound + 4)) &
    sampler=$!
    pids+=("$sampler")
    t0=$(date +%s)
    set +e
    timeout "$bound" "$BENCH_BIN" --url "http://127.0.0.1:$PORT" --max-tokens "$MAX_TOKENS" --seed 1 \
        --max-duration-seconds "$run_s" --request-timeout-seconds "$run_s" --server-pid "$server_pid" \
        --label "$label" --json-out "$OUT/bench-$label.json" "$@" >"$OUT/bench-$label.txt" 2>&1
    rc=$?
    set -e
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    case $rc in
        0) record "load-$label" ok $(($(date +%s) - t0)) "$bound" ;;
        124) record "load-$label" timeout $(($(date +%s) - t0)) "$bound" ;;
        *) record "load-$label" "failed(rc=$rc)" $(($(date +%s) - t0)) "$bound" "$(tail -2 "$OUT/bench-$label.txt" | tr '\n' ' ')" ;;
    esac
}

# 4. A warm-up, not measured: the driver JIT-compiles candle's PTX (compute_80) for this GPU
# at first use, and 10 sequences at once reach both quantized-matmul kernels (<= 8 rows, > 8).
warmup() {
    "$BENCH_BIN" --url "http://127.0.0.1:$PORT" --max-tokens 8 --seed 2 --concurrency 10 --requests 10 \
        --prompt-tokens "$P_LONG" --max-duration-seconds 35 --request-timeout-seconds 35 --label warmup \
        >"$OUT/bench-warmup.txt" 2>&1
}
export BENCH_BIN P_LONG
if kill -0 "$server_pid" 2>/dev/null; then step warmup 40 warmup || true; fi

# 5. The three loads of the issue, each bounded (c=1 6 requests, c=8 24, c=32 64).
load c1 60 --concurrency 1 --requests "$REQ1" --prompt-tokens "$P_LONG"
load c8 70 --concurrency 8 --requests "$REQ8" --prompt-tokens "$P_LONG"
load c32-mixed 100 --concurrency 32 --requests "$REQ32" --prompt-tokens "$P_MIN" --prompt-tokens-max "$P_MAX"
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true

# 6. Batch invariance on the same 7B file (the server gone, its VRAM free): one sequence's
# logits alone vs as one of 12 in the same steps; 12 decode rows cross candle's 8-row switch
# from the MMVQ to the MMQ kernel, 1 row does not.
batch_check() {
    "$SERVER_BIN" batch-check --model "$GGUF" --device "$DEVICE" --batch 12 --prompt-tokens 24 --steps 8 \
        >"$OUT/batch-check.json.tmp" && mv "$OUT/batch-check.json.tmp" "$OUT/batch-check.json"
}
step batch-check 60 batch_check || true

# 7. The summary.
summarize --complete
log "done in $(($(date +%s) - started)) s: $OUT/gpu-bench.json"
if [[ $DRY == 1 ]]; then
    "$PYTHON" -m unittest discover -s "$HERE" -p 'test_*.py' 2>&1 | tail -3 >&2
    # The rehearsal's json is labelled, and the renderer refuses to write it as GPU figures.
    "$PYTHON" "$HERE/render_gpu_section.py" --json "$OUT/gpu-bench.json" --allow-dry-run >"$OUT/gpu-section.md"
    if "$PYTHON" "$HERE/render_gpu_section.py" --json "$OUT/gpu-bench.json" >/dev/null 2>&1; then
        log "render_gpu_section.py rendered a dry run as GPU figures"; exit 1
    fi
    log "rendered $OUT/gpu-section.md (labelled CPU dry run); refused as GPU figures, as it must"
fi
