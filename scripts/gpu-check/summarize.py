"""Collects a gpu-check run into OUT/gpu-bench.json from whatever its steps have written so far:
scripts/gpu-check.sh calls it after every step, so a run killed at any point leaves a partial
file (`"complete": false`, each step's status in `steps`).

Per load: TTFT P50/P95, TPOT, tok/s, and peak VRAM twice, both sampled during the load
(every 0.5 s, vram-LABEL.txt): nvidia-smi's memory.used and the server's
gpu_memory_used_bytes gauge (what the driver reports in use on the device), with the peak of
KV cache blocks in use beside them.

usage: summarize.py OUT MODE SHAPE SECONDS [--complete]"""

import json
import os
import sys
import time

LOADS = ["c1", "c8", "c32-mixed"]
TARGETS = {"c32_tok_s_min": 1500, "c8_ttft_p95_ms_max": 500, "c1_tpot_ms_max": 12, "vram_bytes_max": 16 * 10**9}


def read_json(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_lines(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return [line.split() for line in f if line.strip()]
    except OSError:
        return []


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def peak(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def vram_during(out, label):
    """Peaks of the samples taken during one load: `time smi_mib gauge_bytes kv_blocks_used`."""
    rows = [r for r in read_lines(out, f"vram-{label}.txt") if len(r) == 4]
    if not rows:
        return None
    smi = peak(number(r[1]) for r in rows)
    gauge = peak(number(r[2]) for r in rows)
    return {
        "samples": len(rows),
        "nvidia_smi_peak_mib": smi,
        "gauge_peak_bytes": gauge,
        "gauge_peak_mib": None if gauge is None else round(gauge / 2**20),
        "kv_blocks_used_peak": peak(number(r[3]) for r in rows),
    }


def load_summary(out, label):
    r = read_json(out, f"bench-{label}.json")
    if r is None:
        return {"status": "missing"}
    p = r["params"]
    return {
        "status": "ran",
        "concurrency": p["concurrency"],
        "requests": p["requests"],
        "prompt_tokens": [p["prompt_tokens"], p.get("prompt_tokens_max") or p["prompt_tokens"]],
        "prompt_tokens_mean_reported": r.get("prompt_tokens_mean"),
        "max_tokens": p["max_tokens"],
        "max_duration_seconds": p.get("max_duration_seconds"),
        "successes": r.get("successes"),
        "errors": r.get("errors"),
        "wall_time_s": r.get("wall_time_s"),
        "error_kinds": r.get("error_kinds"),
        "ttft_ms_p50": r["ttft_ms"]["p50"],
        "ttft_ms_p95": r["ttft_ms"]["p95"],
        "tpot_ms_p50": r["tpot_ms"]["p50"],
        "tpot_ms_p95": r["tpot_ms"]["p95"],
        "output_tokens_per_s": r["output_tokens_per_s"],
        "server_peak_rss_kib": r.get("server_peak_rss_kib"),
        "vram": vram_during(out, label),
    }


def summarize(out, mode, shape, seconds, complete):
    steps = []
    for row in read_lines(out, "steps.txt"):
        # name status seconds bound_s [note...]
        if len(row) >= 4:
            steps.append({"step": row[0], "status": row[1], "seconds": number(row[2]), "bound_s": number(row[3]),
                          "note": " ".join(row[4:]) or None})
    smi_all = [number(r[0]) for r in read_lines(out, "nvidia-smi-mib.txt") if len(r) == 1]
    idle = read_lines(out, "nvidia-smi-idle-mib.txt")
    server = read_json(out, "server-command.json")
    result = {
        "mode": mode,
        # Only a run on a GPU measures GPU figures; the CPU dry run rehearses the script.
        "measured_on_gpu": mode == "gpu",
        "label": "GPU run" if mode == "gpu" else "CPU dry run: tiny shapes on the CPU, not GPU figures",
        "complete": complete,
        "model": f"random {shape} Q8_0 GGUF, llama-spm vocab",
        "seconds": seconds,
        "written_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": read_json(out, "gpu.json"),
        "server": server,
        "steps": steps,
        "logits_check": read_json(out, "logits-check.json"),
        "batch_check": read_json(out, "batch-check.json"),
        "loads": {label: load_summary(out, label) for label in LOADS},
        "nvidia_smi_idle_mib": number(idle[0][0]) if idle and idle[0] else None,
        "nvidia_smi_peak_mib_whole_run": peak(smi_all),
        "targets": TARGETS,
    }
    tmp = os.path.join(out, "gpu-bench.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, os.path.join(out, "gpu-bench.json"))
    return result


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--complete"]
    if len(args) != 4:
        sys.exit(__doc__)
    result = summarize(args[0], args[1], args[2], int(args[3]), "--complete" in sys.argv[1:])
    if "--complete" in sys.argv[1:]:
        print(json.dumps(result["loads"], indent=1))
