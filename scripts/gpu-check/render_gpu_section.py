"""BENCHMARKS.md's GPU section from a gpu-check run's gpu-bench.json (scripts/gpu-check.sh).

    render_gpu_section.py [--json FILE] [--write BENCHMARKS.md] [--allow-dry-run]

--json: the run (default bench/gpu/gpu-bench.json, where a GPU visit's file is committed);
no file renders the "unmeasured" section, the one bench/templates/BENCHMARKS.md.tmpl carries.
--write: replaces the section (from its "## GPU (" heading to the next "## ") in that file;
otherwise the section goes to stdout. A CPU dry run's file is refused (exit 2): its numbers
are not GPU numbers. --allow-dry-run prints it anyway, labelled as a CPU dry run in its
heading and every table, and still never writes it into a file.

Targets (issue 13): c=32 >= 1500 tok/s in aggregate, c=8 with 1k-token prompts TTFT P95 <
500 ms, c=1 TPOT <= 12 ms (the median, P50), VRAM < 16 GB read as 16 x 10^9 bytes (15259
MiB; the stricter reading of "GB") for the peak of every load, by nvidia-smi (the gauge
where nvidia-smi gave nothing)."""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_JSON = os.path.join(REPO, "bench", "gpu", "gpu-bench.json")
HEADING = "## GPU (H100/H200)"
MIB = 2**20

UNMEASURED = """## GPU (H100/H200): unmeasured

No GPU host has been available yet, so there are **no GPU figures**: the targets of issue 13
(random Mistral-7B-shaped Q8_0 weights on an H100/H200: c=32 >= 1500 tok/s in aggregate, c=8
with 1k-token prompts TTFT P95 < 500 ms, c=1 TPOT <= 12 ms, VRAM < 16 GB) are **unmeasured**,
and no estimate stands in for them.

They will be produced by `scripts/gpu-check.sh` on a borrowed GPU host (DEVELOPERS.md, "GPU
check"), from a CUDA binary staged here (`scripts/gpu-check.sh stage`: PTX compute_80 and SASS
sm_80/86/89/90, `TARGET_CPU=x86-64-v3`, stripped and xz'd under the 64 MiB carry limit). On
the host it builds the 7B-shaped GGUF (Q8_0, random weights, llama-spm vocab), checks a tiny
random Mistral's logits against torch fp32, and serves the 7B file with `--device cuda
--backend candle --max-kv-tokens 49152` (the device-resident path: paged bf16 KV cache, RoPE,
attention and the greedy choice on the GPU). It runs c=1 and c=8 with 1k-token prompts and
c=32 with mixed 64-2048-token prompts, 128 output tokens each, then compares one sequence's
logits alone and inside a batch of 12 (candle switches quantized-matmul kernels above 8
rows). It writes TTFT P50/P95, TPOT, tok/s and the peak VRAM of each load (nvidia-smi and the
server's `gpu_memory_used_bytes`, both sampled every 0.5 s during the load) to
`gpu-bench.json`; `scripts/gpu-check/render_gpu_section.py` turns that file into this section.
The CPU rehearsal (`scripts/gpu-check.sh --dry-run`, tiny shapes on candle's CPU device) only
proves that the script runs end to end: its numbers are not GPU numbers, and the renderer
refuses to write them here.
"""

class DryRun(Exception):
    pass


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def load_ok(load):
    return load.get("status") == "ran" and (load.get("successes") or 0) > 0


def vram_peak_bytes(load):
    """The load's peak by nvidia-smi (MiB), else by the gauge; None when neither sampled."""
    vram = load.get("vram") or {}
    if vram.get("nvidia_smi_peak_mib") is not None:
        return vram["nvidia_smi_peak_mib"] * MIB, "nvidia-smi"
    if vram.get("gauge_peak_bytes") is not None:
        return vram["gauge_peak_bytes"], "gauge"
    return None, None


def verdict(load, measured, passes):
    if not load_ok(load):
        return "unmeasured (the load did not run)"
    errors = load.get("errors") or 0
    if measured is None:
        return "unmeasured"
    if errors:
        return f"**not met** ({errors} of {load.get('requests')} requests failed)"
    return "**met**" if passes(measured) else "**not met**"


def targets_table(result):
    loads = result.get("loads") or {}
    targets = result.get("targets") or {}
    rows = ["| load | target | measured | verdict |", "|---|---|---|---|"]
    c32, c8, c1 = (loads.get(k, {}) for k in ("c32-mixed", "c8", "c1"))

    def name(concurrency, load, issue_prompts):
        # The issue's load; the prompts the run actually sent, where they differ (a dry run).
        lo, hi = load.get("prompt_tokens") or [None, None]
        sent = None if lo is None else (f"{lo}" if lo == hi else f"{lo}-{hi}")
        spec = {"1024": "1k", "64-2048": "64-2048"}.get(sent)
        return f"c={concurrency}, {spec or sent or issue_prompts}-token prompts"

    tok_s = c32.get("output_tokens_per_s")
    rows.append(f"| {name(32, c32, '64-2048')} | >= {targets.get('c32_tok_s_min', 1500)} tok/s in aggregate | "
                f"{fmt(tok_s)} tok/s | {verdict(c32, tok_s, lambda v: v >= targets.get('c32_tok_s_min', 1500))} |")
    ttft = c8.get("ttft_ms_p95")
    rows.append(f"| {name(8, c8, '1k')} | TTFT P95 < {targets.get('c8_ttft_p95_ms_max', 500)} ms | {fmt(ttft)} ms | "
                f"{verdict(c8, ttft, lambda v: v < targets.get('c8_ttft_p95_ms_max', 500))} |")
    tpot = c1.get("tpot_ms_p50")
    rows.append(f"| {name(1, c1, '1k')} | TPOT P50 <= {targets.get('c1_tpot_ms_max', 12)} ms | {fmt(tpot, 2)} ms | "
                f"{verdict(c1, tpot, lambda v: v <= targets.get('c1_tpot_ms_max', 12))} |")
    limit = targets.get("vram_bytes_max", 16 * 10**9)
    peaks = [(label, *vram_peak_bytes(load)) for label, load in loads.items() if load_ok(load)]
    measured = [p for p in peaks if p[1] is not None]
    if len(measured) < len(loads) or not measured:
        missing = sorted(set(loads) - {p[0] for p in measured})
        vram_verdict = f"unmeasured ({', '.join(missing)} without a VRAM sample)" if missing else "unmeasured"
        if measured and any(p[1] >= limit for p in measured):
            vram_verdict = "**not met**"
    else:
        vram_verdict = "**met**" if all(p[1] < limit for p in measured) else "**not met**"
    worst = max(measured, key=lambda p: p[1]) if measured else None
    shown = f"{worst[1] / MIB:.0f} MiB ({worst[1] / 1e9:.2f} GB, {worst[2]}, {worst[0]})" if worst else "-"
    rows.append(f"| all | VRAM < {limit / 1e9:.0f} GB ({limit / MIB:.0f} MiB) | {shown} | {vram_verdict} |")
    return "\n".join(rows)


def loads_table(result):
    rows = [
        "| load | requests (ok / errors) | prompt tokens | TTFT P50 ms | TTFT P95 ms | TPOT P50 ms | TPOT P95 ms | "
        "tok/s | peak VRAM nvidia-smi MiB | peak VRAM gauge MiB | peak KV blocks used |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, load in (result.get("loads") or {}).items():
        if load.get("status") != "ran":
            rows.append(f"| {label} | did not run | - | - | - | - | - | - | - | - | - |")
            continue
        vram = load.get("vram") or {}
        lo, hi = load.get("prompt_tokens") or [None, None]
        prompt = str(lo) if lo == hi else f"{lo}-{hi}"
        rows.append(
            f"| {label} | {load.get('requests')} ({load.get('successes')} / {load.get('errors')}) | {prompt} | "
            f"{fmt(load.get('ttft_ms_p50'))} | {fmt(load.get('ttft_ms_p95'))} | {fmt(load.get('tpot_ms_p50'), 2)} | "
            f"{fmt(load.get('tpot_ms_p95'), 2)} | {fmt(load.get('output_tokens_per_s'))} | "
            f"{fmt(vram.get('nvidia_smi_peak_mib'), 0)} | {fmt(vram.get('gauge_peak_mib'), 0)} | "
            f"{fmt(vram.get('kv_blocks_used_peak'), 0)} |"
        )
    return "\n".join(rows)


def checks_text(result):
    lines = []
    logits = result.get("logits_check") or {}
    if logits.get("prompts"):
        worst = min(p["cosine"] for p in logits["prompts"])
        agree = sum(1 for p in logits["prompts"] if p.get("same_argmax"))
        lines.append(f"- Tiny random Mistral vs {logits.get('reference')}: **{logits.get('status')}**, "
                     f"min cosine {worst:.6f}, same argmax {agree} of {len(logits['prompts'])} prompts.")
    else:
        lines.append(f"- Tiny random Mistral vs torch fp32: {logits.get('status', 'not run')} {logits.get('reason', '')}".rstrip())
    batch = result.get("batch_check")
    if batch:
        lines.append(
            f"- Batch invariance (the served file, one sequence of {batch.get('prompt_tokens')} prompt tokens alone vs as one of "
            f"{batch.get('batch')}, {batch.get('decode_steps')} decode steps): max abs logit diff "
            f"{fmt(batch.get('decode_max_abs_diff'), 4)}, min cosine {fmt(batch.get('decode_min_cosine'), 6)}, "
            f"greedy token equal in {batch.get('decode_greedy_equal')} of {batch.get('decode_steps')} steps "
            f"(prefill: max abs diff {fmt((batch.get('prefill') or {}).get('max_abs_diff'), 4)})."
        )
    else:
        lines.append("- Batch invariance: not run.")
    return "\n".join(lines)


def steps_text(result):
    steps = result.get("steps") or []
    if not steps:
        return "No step finished."
    return ", ".join(f"{s['step']} {s['status']} ({fmt(s.get('seconds'), 0)} of {fmt(s.get('bound_s'), 0)} s)" for s in steps)


def render(result, allow_dry_run=False):
    if result is None:
        return UNMEASURED
    dry = result.get("mode") != "gpu" or not result.get("measured_on_gpu")
    if dry and not allow_dry_run:
        raise DryRun(f"a {result.get('mode')!r} run is a CPU dry run: its numbers are not GPU figures")
    gpu = result.get("gpu") or {}
    server = result.get("server") or {}
    if dry:
        heading = "## GPU check: CPU dry run (not GPU figures)"
        caption = "**CPU dry run: tiny shapes on candle's CPU device; these are not GPU figures.**\n\n"
    else:
        heading = f"{HEADING}: measured on {gpu.get('name', 'an unnamed GPU')}"
        caption = ""
    command = " ".join(server.get("command") or [])
    state = "complete" if result.get("complete") else "**incomplete** (the run was cut short; what it left is shown)"
    parts = [
        heading,
        "",
        f"{caption}Run: `scripts/gpu-check.sh` on {result.get('written_utc', '-')} ({state}, {result.get('seconds')} s), {result.get('model')}, "
        f"GPU {gpu.get('name', '-')} (compute capability {gpu.get('compute_cap', '-')}, driver {gpu.get('driver', '-')}, "
        f"{gpu.get('memory_total', '-')}), nvidia-smi before the server: {fmt(result.get('nvidia_smi_idle_mib'), 0)} MiB used, "
        f"whole-run peak {fmt(result.get('nvidia_smi_peak_mib_whole_run'), 0)} MiB.",
        "",
        f"Server: `{command}`" if command else "Server: not started.",
        "",
        f"Steps: {steps_text(result)}.",
        "",
        f"{caption}Targets of issue 13 (VRAM: the highest per-load peak; 16 GB read as 16 x 10^9 bytes):",
        "",
        targets_table(result),
        "",
        f"{caption}Per load (peaks sampled every 0.5 s during the load):",
        "",
        loads_table(result),
        "",
        checks_text(result),
        "",
    ]
    return "\n".join(parts)


def splice(document, section):
    """`document` with its GPU section (heading to the next "## ") replaced by `section`."""
    lines = document.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.startswith(HEADING)), None)
    if start is None:
        raise ValueError(f"no line starting with {HEADING!r}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[:start]) + section.rstrip("\n") + "\n\n" + "".join(lines[end:])


def main(argv):
    path, target, allow = DEFAULT_JSON, None, False
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--json" and args:
            path = args.pop(0)
        elif a == "--write" and args:
            target = args.pop(0)
        elif a == "--allow-dry-run":
            allow = True
        else:
            print(__doc__, file=sys.stderr)
            return 2
    result = None
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
    try:
        section = render(result, allow_dry_run=allow and target is None)
    except DryRun as e:
        print(f"render_gpu_section.py: refusing {path}: {e}", file=sys.stderr)
        return 2
    if target is None:
        sys.stdout.write(section)
        return 0
    with open(target) as f:
        document = f.read()
    with open(target, "w") as f:
        f.write(splice(document, section))
    print(f"render_gpu_section.py: wrote the GPU section of {target} from {path if result else 'no run (unmeasured)'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
