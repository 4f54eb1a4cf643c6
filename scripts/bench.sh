#!/usr/bin/env bash
# Side-by-side benchmark: infergate-server vs llama.cpp's llama-server on the same GGUF model.
#
# For every scenario the two servers take turns (start A, measure, stop A; start B, measure,
# stop B): only ONE server process is alive at any time, because on a small machine a second
# busy process ruins the measurement. Prompts ~100 tokens, 128 output tokens, ignore_eos.
#
# Scenarios (SCENARIOS=comma list, default all):
#   seed      closed loop, 10 concurrent, 50 requests
#   c32       closed loop, 32 concurrent, 128 requests
#   single    closed loop, 1 stream, 10 requests
#   open      open loop, Poisson 1 req/s, 40 requests
#   batching  infergate only: ENABLE_BATCHING=false vs true, 10 concurrent, 50 requests
#
# Environment:
#   ROUNDS=N            repeat the alternation N times; the summary shows medians over rounds
#   QUICK=1             request counts ~5x smaller (smoke runs)
#   MODEL               GGUF model (default $HOME/.cache/infergate/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   INFERGATE_SERVER_BIN  prebuilt infergate-server (default: cargo build --release -p infergate-server)
#   BENCH_BIN           prebuilt infergate-bench (default: cargo build --release -p infergate-bench)
#   LLAMA_SERVER_BIN    prebuilt llama-server (default: scripts/build-llama-server.sh); its
#                       directory is put on LD_LIBRARY_PATH for the .so files next to it
#   INFERGATE_SERVER_ARGS, LLAMA_SERVER_ARGS  extra server flags
#   PROMPT_TOKENS (100), MAX_TOKENS (128), RESULTS_DIR (bench-results), READY_TIMEOUT (180 s),
#   MAX_DURATION (600 s per run)
#
# Output: one JSON per run in $RESULTS_DIR/<stamp>-<scenario>-<server>-r<round>.json, a
# markdown table printed and written to $RESULTS_DIR/summary.md (and <stamp>-summary.md),
# server logs in $RESULTS_DIR/logs/.
set -euo pipefail

CMDLINE="$(printf '%q ' "$0" "$@")"
ENV_LINE=""
for v in SCENARIOS ROUNDS QUICK MODEL INFERGATE_SERVER_BIN LLAMA_SERVER_BIN BENCH_BIN \
    INFERGATE_SERVER_ARGS LLAMA_SERVER_ARGS PROMPT_TOKENS MAX_TOKENS; do
    if [[ -n "${!v:-}" ]]; then
        if [[ "${!v}" =~ ^[A-Za-z0-9_./,:=+-]*$ ]]; then ENV_LINE+="$v=${!v} "; else ENV_LINE+="$v=$(printf '%q' "${!v}") "; fi
    fi
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/infergate}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/target}"
MODEL="${MODEL:-$CACHE_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
SCENARIOS="${SCENARIOS:-seed,c32,single,open,batching}"
ROUNDS="${ROUNDS:-1}"
QUICK="${QUICK:-0}"
PROMPT_TOKENS="${PROMPT_TOKENS:-100}"
MAX_TOKENS="${MAX_TOKENS:-128}"
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
MAX_DURATION="${MAX_DURATION:-600}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
LOG_DIR="$RESULTS_DIR/logs"

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
        *) die "unknown scenario '$s' (seed, c32, single, open, batching)" ;;
    esac
done
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
# start_server KIND: infergate | infergate-nobatch | llama; sets SERVER_PID and PORT.
start_server() {
    local kind="$1" ready_path logf waited=0
    PORT="$(free_port)"
    logf="$LOG_DIR/$STAMP-$kind-$PORT.log"
    case "$kind" in
        infergate | infergate-nobatch)
            local batching=true
            [[ "$kind" == infergate-nobatch ]] && batching=false
            # shellcheck disable=SC2086
            ENABLE_BATCHING="$batching" setsid "$INFERGATE_SERVER_BIN" --model "$MODEL" --host 127.0.0.1 \
                --port "$PORT" ${INFERGATE_SERVER_ARGS:-} >"$logf" 2>&1 &
            ready_path=/ready
            ;;
        llama)
            local libdir
            libdir="$(dirname "$LLAMA_SERVER_BIN")"
            # shellcheck disable=SC2086
            LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" setsid "$LLAMA_SERVER_BIN" \
                -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np 32 -c 16384 -t 2 \
                ${LLAMA_SERVER_ARGS:-} >"$logf" 2>&1 &
            ready_path=/health
            ;;
        *) die "unknown server kind $kind" ;;
    esac
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
    esac
}

# ---- the runs ----------------------------------------------------------------------------
log "scenarios: $SCENARIOS, rounds: $ROUNDS, quick: $QUICK, stamp: $STAMP"
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SCENARIO_LIST[@]}"; do
        if [[ "$s" == batching ]]; then
            servers=(infergate-nobatch infergate)
        else
            servers=(infergate llama)
        fi
        # Alternate which server goes first from round to round.
        if ((round % 2 == 0)); then servers=("${servers[1]}" "${servers[0]}"); fi
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

# ---- summary -----------------------------------------------------------------------------
CPU_MODEL="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
SUMMARY="$RESULTS_DIR/$STAMP-summary.md"
{
    echo "# infergate vs llama-server ($STAMP)"
    echo
    echo "- command: \`${ENV_LINE}${CMDLINE% }\`"
    echo "- date: $(date)"
    echo "- nproc: $(nproc); CPU: ${CPU_MODEL:-unknown}"
    echo "- git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "- model: $(basename "$MODEL"); prompts ~$PROMPT_TOKENS tokens, $MAX_TOKENS output tokens, ignore_eos, temperature 0"
    echo "- rounds: $ROUNDS (medians over rounds), quick: $QUICK; one server alive at a time, alternating per scenario"
    echo "- infergate-server: $INFERGATE_SERVER_BIN ${INFERGATE_SERVER_ARGS:-}"
    if [[ "$NEED_LLAMA" == 1 ]]; then
        echo "- llama-server: $LLAMA_SERVER_BIN -np 32 -c 16384 -t 2 ${LLAMA_SERVER_ARGS:-}"
    fi
    echo "- tok/s = completion tokens of successful requests / run wall time; percentiles nearest-rank;"
    echo "  peak RSS = max VmRSS sampled every 200 ms during the run; ratios = infergate / peer (tok/s: higher is better, times and RSS: lower is better)"
    echo "- server/other CPU % = CPU time of the server / of everything but server and bench, as % of all cores over the run"
    echo "  (other CPU % well above a few % means another process competed and the numbers are suspect)"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} >"$SUMMARY"
python3 - "$RESULTS_DIR" "$STAMP" "$SUMMARY" <<'PY'
import glob, json, os, statistics, sys
results, stamp, out = sys.argv[1], sys.argv[2], sys.argv[3]
runs = {}
for path in sorted(glob.glob(os.path.join(results, stamp + "-*-r*.json"))):
    with open(path) as f:
        r = json.load(f)
    scenario, kind, _ = r["label"].split("/")
    runs.setdefault(scenario, {}).setdefault(kind, []).append(r)

def med(rs, get):
    vals = [v for v in (get(r) for r in rs) if v is not None]
    return statistics.median(vals) if vals else None

metrics = [
    ("tok/s", lambda r: r["output_tokens_per_s"]),
    ("TTFT P50 ms", lambda r: r["ttft_ms"]["p50"]),
    ("TTFT P95 ms", lambda r: r["ttft_ms"]["p95"]),
    ("TPOT P50 ms", lambda r: r["tpot_ms"]["p50"]),
    ("errors", lambda r: r["errors"]),
    ("peak RSS MiB", lambda r: r["server_peak_rss_kib"] / 1024 if r["server_peak_rss_kib"] else None),
    ("server CPU %", lambda r: r.get("cpu", {}).get("server_cpu_pct_of_machine")),
    ("other CPU %", lambda r: r.get("cpu", {}).get("other_cpu_pct_of_machine")),
]
names = {"infergate": "infergate", "llama": "llama-server", "infergate-nobatch": "infergate (batching off)"}
descr = {
    "seed": "closed loop, 10 concurrent",
    "c32": "closed loop, 32 concurrent",
    "single": "1 stream",
    "open": "open loop, Poisson 1 req/s",
    "batching": "infergate batching off vs on, 10 concurrent",
}
fmt = lambda v: "-" if v is None else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}")
lines = []
lines.append("| scenario | server | requests | " + " | ".join(m[0] for m in metrics) + " |")
lines.append("|---" * (3 + len(metrics)) + "|")
order = ["seed", "c32", "single", "open", "batching"]
for scenario in sorted(runs, key=lambda s: order.index(s) if s in order else 99):
    kinds = runs[scenario]
    pair = ("infergate-nobatch", "infergate") if scenario == "batching" else ("llama", "infergate")
    meds = {}
    for kind in [k for k in (pair[1], pair[0]) if k in kinds]:
        rs = kinds[kind]
        meds[kind] = [med(rs, g) for _, g in metrics]
        n = rs[0]["count"]
        cells = [f"{v:g}" if name == "errors" and v is not None else fmt(v)
                 for (name, _), v in zip(metrics, meds[kind])]
        lines.append(f"| {scenario}: {descr.get(scenario, '')} | {names[kind]} | {n} x {len(rs)} | "
                     + " | ".join(cells) + " |")
    base, cand = pair
    if base in meds and cand in meds:
        ratio = []
        for (name, _), b, c in zip(metrics, meds[base], meds[cand]):
            if name.endswith("CPU %"):
                ratio.append("")
            elif name == "errors":
                ratio.append("-" if b is None or c is None else f"{c:g} vs {b:g}")
            elif b and c is not None:
                ratio.append(f"{c / b:.2f}x")
            else:
                ratio.append("-")
        label = "infergate / infergate(off)" if scenario == "batching" else "infergate / llama-server"
        lines.append(f"| {scenario} | **{label}** | | " + " | ".join(ratio) + " |")
table = "\n".join(lines)
with open(out, "a") as f:
    f.write(table + "\n")
PY
cp "$SUMMARY" "$RESULTS_DIR/summary.md"
echo
cat "$RESULTS_DIR/summary.md"
log "summary: $RESULTS_DIR/summary.md; runs: $RESULTS_DIR/$STAMP-*.json"
