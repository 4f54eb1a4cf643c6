#!/usr/bin/env bash
# Side-by-side benchmark: infergate-server vs llama.cpp's llama-server on the same GGUF model,
# plus an ablation of infergate's optimizations; writes BENCHMARKS.md from the run.
#
# For every scenario the servers take turns (start A, measure, stop A; start B, measure,
# stop B): only ONE server process is alive at any time, because on a small machine a second
# busy process ruins the measurement. Prompts ~100 tokens, 128 output tokens, ignore_eos.
#
# Scenarios (SCENARIOS=comma list, default all; ~minutes on the 2-core dev machine, ROUNDS=1):
#   seed      closed loop, 10 concurrent, 50 requests                      ~2
#   c32       closed loop, 32 concurrent, 128 requests                     ~3.5
#   single    closed loop, 1 stream, 10 requests                           ~0.5
#   open      open loop, Poisson 1 req/s, 40 requests                      ~1.5
#   batching  infergate only: ENABLE_BATCHING=false vs true, 10 concurrent, 50 requests  ~1.7
#   ablation  infergate only, the optimizations one knob at a time at the seed load (10
#             concurrent, 50 requests; servers and client time requests out after 600 s, the
#             run after max(MAX_DURATION, 1200 s)):
#             candle-nobatch (--backend candle --enable-batching false) -> native-nobatch
#             (--backend native) -> native (--enable-batching true) -> native-b256
#             (--q8-block-columns 256, opt-in)                             ~8 (candle ~6)
# The whole default suite takes ~17 minutes per round on a quiet machine (ROUNDS=3: ~50);
# QUICK=1 ~4. Estimates from the quiet runs of 2026-11-28 and, for candle, from QUICK runs.
#
# Environment:
#   ROUNDS=N            repeat the alternation N times; the report shows medians over rounds
#                       with their (min-max) spread; the order of servers reverses every other round
#   QUICK=1             request counts ~5x smaller (smoke runs: the numbers mean nothing)
#   BENCHMARKS_OUT      where the generated document goes besides $RESULTS_DIR (relative to the
#                       current directory). Default: BENCHMARKS.md in the repository for a full
#                       run (every default scenario, QUICK unset); nothing for QUICK or partial
#                       runs, so a smoke run never overwrites the measured document. Empty: never.
#   MODEL               GGUF model (default $HOME/.cache/infergate/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   INFERGATE_SERVER_BIN  prebuilt infergate-server (default: cargo build --release -p infergate-server)
#   BENCH_BIN           prebuilt infergate-bench (default: cargo build --release -p infergate-bench)
#   LLAMA_SERVER_BIN    prebuilt llama-server (default: scripts/build-llama-server.sh); its
#                       directory is put on LD_LIBRARY_PATH for the .so files next to it
#   INFERGATE_SERVER_ARGS, LLAMA_SERVER_ARGS  extra server flags (for every infergate kind; the
#                       ablation refuses ones that set its knobs: --backend, --enable-batching,
#                       --q8-block-columns)
#   PROMPT_TOKENS (100), MAX_TOKENS (128), RESULTS_DIR (bench-results), READY_TIMEOUT (180 s),
#   MAX_DURATION (600 s per run; the ablation's at least 1200 s)
#
# Output in $RESULTS_DIR: one JSON per run, <stamp>-<scenario>-<kind>-r<round>.json; the run's
# facts (command, machine, git, server commands) in <stamp>-meta.tsv; the document rendered by
# `infergate-bench report` (template bench/templates/BENCHMARKS.md.tmpl) in <stamp>-report.md
# and summary.md, and copied to BENCHMARKS_OUT; server logs in logs/.
set -euo pipefail

CMDLINE="$(printf '%q ' "$0" "$@")"
ENV_LINE=""
for v in SCENARIOS ROUNDS QUICK BENCHMARKS_OUT MODEL INFERGATE_SERVER_BIN LLAMA_SERVER_BIN BENCH_BIN \
    INFERGATE_SERVER_ARGS LLAMA_SERVER_ARGS PROMPT_TOKENS MAX_TOKENS MAX_DURATION; do
    if [[ -n "${!v:-}" ]]; then
        if [[ "${!v}" =~ ^[A-Za-z0-9_./,:=+-]*$ ]]; then ENV_LINE+="$v=${!v} "; else ENV_LINE+="$v=$(printf '%q' "${!v}") "; fi
    fi
done
CALLER_PWD="$PWD"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/infergate}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/target}"
MODEL="${MODEL:-$CACHE_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
DEFAULT_SCENARIOS="seed,c32,single,open,batching,ablation"
SCENARIOS="${SCENARIOS:-$DEFAULT_SCENARIOS}"
ROUNDS="${ROUNDS:-1}"
QUICK="${QUICK:-0}"
PROMPT_TOKENS="${PROMPT_TOKENS:-100}"
MAX_TOKENS="${MAX_TOKENS:-128}"
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
MAX_DURATION="${MAX_DURATION:-600}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
LOG_DIR="$RESULTS_DIR/logs"
META="$RESULTS_DIR/$STAMP-meta.tsv"

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- process bookkeeping: everything we start is killed by PID on exit -------------------
SERVER_PID=""
BENCH_PID=""
# kill_pid PID [group]: SIGTERM, then SIGKILL after 10 s. With "group", PID leads its own
# process group (servers are started under setsid) and the whole group is signalled, so
# anything the server forked goes too.
kill_pid() {
    local pid="$1" target="$1" i
    [[ -n "$pid" ]] || return 0
    [[ "${2:-}" == group ]] && target="-$pid"
    kill -0 "$pid" 2>/dev/null || { kill -KILL -- "$target" 2>/dev/null || true; return 0; }
    kill -TERM -- "$target" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM; SIGKILL"
    fi
    kill -KILL -- "$target" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    kill_pid "$BENCH_PID"
    kill_pid "$SERVER_PID" group
    BENCH_PID=""
    SERVER_PID=""
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---- binaries ----------------------------------------------------------------------------
[[ -f "$MODEL" ]] || die "model $MODEL not found (make model)"
cd "$REPO"
if [[ -z "${INFERGATE_SERVER_BIN:-}" ]]; then
    log "building infergate-server (release)"
    cargo build --release --locked -p infergate-server >&2
    INFERGATE_SERVER_BIN="$CARGO_TARGET_DIR/release/infergate-server"
fi
if [[ -z "${BENCH_BIN:-}" ]]; then
    log "building infergate-bench (release)"
    cargo build --release --locked -p infergate-bench >&2
    BENCH_BIN="$CARGO_TARGET_DIR/release/infergate-bench"
fi
NEED_LLAMA=0
IFS=',' read -r -a SCENARIO_LIST <<<"$SCENARIOS"
for s in "${SCENARIO_LIST[@]}"; do
    case "$s" in
        seed | c32 | single | open) NEED_LLAMA=1 ;;
        batching) ;;
        ablation)
            # The ablation sets these knobs itself; the server refuses a flag given twice, which
            # would only show after the other scenarios ran.
            if [[ " ${INFERGATE_SERVER_ARGS:-} " =~ [[:space:]]--(backend|enable-batching|q8-block-columns)[[:space:]=] ]]; then
                die "INFERGATE_SERVER_ARGS sets --${BASH_REMATCH[1]}, which the ablation scenario varies itself"
            fi
            ;;
        *) die "unknown scenario '$s' (${DEFAULT_SCENARIOS//,/, })" ;;
    esac
done
# A QUICK or partial run never replaces the measured BENCHMARKS.md unless asked to.
if [[ -z "${BENCHMARKS_OUT+set}" ]]; then
    BENCHMARKS_OUT=""
    full=1
    for s in ${DEFAULT_SCENARIOS//,/ }; do [[ ",$SCENARIOS," == *",$s,"* ]] || full=0; done
    [[ "$QUICK" != 1 && "$full" == 1 ]] && BENCHMARKS_OUT="$REPO/BENCHMARKS.md"
elif [[ -n "$BENCHMARKS_OUT" && "$BENCHMARKS_OUT" != /* ]]; then
    BENCHMARKS_OUT="$CALLER_PWD/$BENCHMARKS_OUT"
fi
if [[ "$NEED_LLAMA" == 1 && -z "${LLAMA_SERVER_BIN:-}" ]]; then
    log "finding/building llama-server"
    LLAMA_SERVER_BIN="$("$REPO/scripts/build-llama-server.sh" | tail -1)"
fi
[[ -x "$INFERGATE_SERVER_BIN" ]] || die "no infergate-server at $INFERGATE_SERVER_BIN"
[[ -x "$BENCH_BIN" ]] || die "no infergate-bench at $BENCH_BIN"
if [[ "$NEED_LLAMA" == 1 ]]; then
    [[ -x "$LLAMA_SERVER_BIN" ]] || die "no llama-server at $LLAMA_SERVER_BIN"
fi
mkdir -p "$RESULTS_DIR" "$LOG_DIR"

# ---- servers -----------------------------------------------------------------------------
# server_cmd KIND: the environment (SERVER_ENV, VAR=value words) and command line (SERVER_CMD)
# of a server kind, without --host/--port. Kinds: infergate (defaults), infergate-nobatch, the
# ablation's candle-nobatch, native-nobatch, native, native-b256, and llama.
server_cmd() {
    local kind="$1" extra=()
    SERVER_ENV=()
    case "$kind" in
        llama)
            read -r -a extra <<<"${LLAMA_SERVER_ARGS:-}"
            # llama-server 0.3.36 segfaults at start (exit 139, right after its thread pool)
            # on CPUs with AMX, in its weight-repacking path; without repacking it runs. Only
            # there, and only when the caller set no flags of its own.
            if [[ -z "${LLAMA_SERVER_ARGS:-}" ]] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
                extra=(--no-repack)
            fi
            SERVER_CMD=("$LLAMA_SERVER_BIN" -m "$MODEL" -np 32 -c 16384 -t 2 "${extra[@]}")
            return
            ;;
    esac
    read -r -a extra <<<"${INFERGATE_SERVER_ARGS:-}"
    SERVER_CMD=("$INFERGATE_SERVER_BIN" --model "$MODEL" "${extra[@]}")
    # The ablation's slow baseline queues requests for longer than the default 30 s timeout;
    # as an environment variable it still yields to a --request-timeout-seconds in the extra args.
    local ablation=(REQUEST_TIMEOUT_SECONDS=600)
    case "$kind" in
        infergate) SERVER_ENV=(ENABLE_BATCHING=true) ;;
        infergate-nobatch) SERVER_ENV=(ENABLE_BATCHING=false) ;;
        candle-nobatch)
            SERVER_ENV=("${ablation[@]}")
            SERVER_CMD+=(--backend candle --enable-batching false)
            ;;
        native-nobatch)
            SERVER_ENV=("${ablation[@]}")
            SERVER_CMD+=(--backend native --enable-batching false)
            ;;
        native)
            SERVER_ENV=("${ablation[@]}")
            SERVER_CMD+=(--backend native --enable-batching true)
            ;;
        native-b256)
            SERVER_ENV=("${ablation[@]}")
            SERVER_CMD+=(--backend native --enable-batching true --q8-block-columns 256)
            ;;
        *) die "unknown server kind $kind" ;;
    esac
}

# scenario_kinds SCENARIO: the server kinds a scenario measures, in round-1 order.
scenario_kinds() {
    case "$1" in
        batching) echo infergate-nobatch infergate ;;
        ablation) echo candle-nobatch native-nobatch native native-b256 ;;
        *) echo infergate llama ;;
    esac
}

# start_server KIND: sets SERVER_PID and PORT once the server answers its readiness probe.
start_server() {
    local kind="$1" ready_path=/ready logf waited=0 libdir
    PORT="$(free_port)"
    logf="$LOG_DIR/$STAMP-$kind-$PORT.log"
    server_cmd "$kind"
    if [[ "$kind" == llama ]]; then
        ready_path=/health
        libdir="$(dirname "$LLAMA_SERVER_BIN")"
        SERVER_ENV+=("LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    fi
    env "${SERVER_ENV[@]}" setsid "${SERVER_CMD[@]}" --host 127.0.0.1 --port "$PORT" >"$logf" 2>&1 &
    SERVER_PID=$!
    log "started $kind pid $SERVER_PID on port $PORT (log $logf)"
    until curl -sf -o /dev/null "http://127.0.0.1:$PORT$ready_path"; do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$logf" >&2; die "$kind exited during startup"; }
        ((waited < READY_TIMEOUT * 5)) || { tail -20 "$logf" >&2; die "$kind not ready after ${READY_TIMEOUT}s"; }
        sleep 0.2
        waited=$((waited + 1))
    done
    log "$kind ready after ~$((waited / 5))s"
}

stop_server() {
    kill_pid "$SERVER_PID" group
    SERVER_PID=""
}

# run_bench LABEL OUT ARGS...: runs infergate-bench against the current server.
run_bench() {
    local label="$1" out="$2" rc=0
    shift 2
    "$BENCH_BIN" --url "http://127.0.0.1:$PORT" --prompt-tokens "$PROMPT_TOKENS" \
        --max-tokens "$MAX_TOKENS" --max-duration-seconds "$MAX_DURATION" \
        --server-pid "$SERVER_PID" --label "$label" --json-out "$out" "$@" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    # 3: every request failed (still a result); anything else is a tool failure.
    [[ $rc == 0 || $rc == 3 ]] || die "infergate-bench failed (rc $rc) for $label"
}

scale() { # request count, divided by ~5 under QUICK=1
    if [[ "$QUICK" == 1 ]]; then echo $(( ($1 + 4) / 5 )); else echo "$1"; fi
}

scenario_args() {
    case "$1" in
        seed) echo "--concurrency 10 --requests $(scale 50)" ;;
        c32) echo "--concurrency 32 --requests $(scale 128)" ;;
        single) echo "--concurrency 1 --requests $(scale 10)" ;;
        open) echo "--rate 1 --requests $(scale 40)" ;;
        batching) echo "--concurrency 10 --requests $(scale 50)" ;;
        # The client waits as long as the ablation's servers do (REQUEST_TIMEOUT_SECONDS=600), and
        # the baseline (~6 min quiet: candle prefills ~10x slower than native) gets 20 min at least.
        ablation) echo "--concurrency 10 --requests $(scale 50) --request-timeout-seconds 600" \
            "--max-duration-seconds $((MAX_DURATION > 1200 ? MAX_DURATION : 1200))" ;;
    esac
}

# ---- the run's facts, for the report: one `key<TAB>value` line each ----------------------
meta() { printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\t\n' '  ')" >>"$META"; }
write_meta() {
    local kinds=() kind s line
    meta stamp "$STAMP"
    meta command "${ENV_LINE}${CMDLINE% }"
    meta started "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    meta cpu_model "$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    meta cores "$(nproc)"
    meta cpu_simd "$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|avx512f|avx512_vnni|avx512_bf16' | tr '\n' ' ')"
    meta mem_total_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    meta kernel "$(uname -sr)"
    meta rustc "$(rustc --version 2>/dev/null || echo 'rustc unknown')"
    meta git_commit "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    meta git_dirty "$(git -C "$REPO" diff --quiet HEAD 2>/dev/null && echo no || echo yes)"
    meta model "$MODEL"
    meta prompt_tokens "$PROMPT_TOKENS"
    meta max_tokens "$MAX_TOKENS"
    meta rounds "$ROUNDS"
    meta quick "$QUICK"
    meta scenarios "$SCENARIOS"
    meta results_dir "${RESULTS_DIR#"$REPO"/}"
    for s in "${SCENARIO_LIST[@]}"; do
        for kind in $(scenario_kinds "$s"); do
            [[ " ${kinds[*]} " == *" $kind "* ]] && continue
            kinds+=("$kind")
            server_cmd "$kind"
            line="$(printf '%q ' "${SERVER_ENV[@]}" "${SERVER_CMD[@]}")"
            meta "server.$kind" "${line% }"
        done
    done
}

# ---- the runs ----------------------------------------------------------------------------
log "scenarios: $SCENARIOS, rounds: $ROUNDS, quick: $QUICK, stamp: $STAMP"
write_meta
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SCENARIO_LIST[@]}"; do
        read -r -a servers <<<"$(scenario_kinds "$s")"
        # Reverse the order every other round, so that no configuration always runs first.
        if ((round % 2 == 0)); then
            for ((i = 0, j = ${#servers[@]} - 1; i < j; i++, j--)); do
                kind="${servers[i]}"
                servers[i]="${servers[j]}"
                servers[j]="$kind"
            done
        fi
        for kind in "${servers[@]}"; do
            start_server "$kind"
            # Warm-up request (not recorded): first-request lazy work out of the measurement.
            run_bench "warmup" "$LOG_DIR/$STAMP-warmup.json" --concurrency 1 --requests 1 \
                --max-tokens 8 >/dev/null
            out="$RESULTS_DIR/$STAMP-$s-$kind-r$round.json"
            # shellcheck disable=SC2046
            run_bench "$s/$kind/r$round" "$out" $(scenario_args "$s")
            stop_server
        done
    done
done
meta finished "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the document --------------------------------------------------------------------------
REPORT="$RESULTS_DIR/$STAMP-report.md"
"$BENCH_BIN" report --results-dir "$RESULTS_DIR" --stamp "$STAMP" --out "$REPORT"
cp "$REPORT" "$RESULTS_DIR/summary.md"
echo
cat "$REPORT"
if [[ -n "$BENCHMARKS_OUT" ]]; then
    cp "$REPORT" "$BENCHMARKS_OUT"
    # The GPU section comes from a GPU visit's committed gpu-bench.json, not from this run.
    if [[ -e $REPO/bench/gpu/gpu-bench.json ]]; then
        python3 "$REPO/scripts/gpu-check/render_gpu_section.py" --json "$REPO/bench/gpu/gpu-bench.json" --write "$BENCHMARKS_OUT"
    fi
    log "wrote $BENCHMARKS_OUT"
else
    log "BENCHMARKS.md left alone (QUICK or partial run; BENCHMARKS_OUT=FILE writes one)"
fi
log "report: $REPORT (= $RESULTS_DIR/summary.md); runs: $RESULTS_DIR/$STAMP-*.json"
