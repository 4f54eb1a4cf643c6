"""Collects a gpu-check run into OUT/gpu-bench.json: per load TTFT P50/P95, TPOT, tok/s, and
peak VRAM from nvidia-smi and from the server's gpu_memory_used_bytes gauge."""

import json
import os
import sys

out, mode, shape, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def read_json(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


runs = {}
for label in ["c1", "c8", "c32-mixed"]:
    r = read_json(f"bench-{label}.json")
    if r is None:
        runs[label] = {"status": "missing"}
        continue
    runs[label] = {
        "concurrency": r["params"]["concurrency"],
        "requests": r["params"]["requests"],
        "prompt_tokens": [r["params"]["prompt_tokens"], r["params"].get("prompt_tokens_max") or r["params"]["prompt_tokens"]],
        "prompt_tokens_mean_reported": r.get("prompt_tokens_mean"),
        "max_tokens": r["params"]["max_tokens"],
        "successes": r.get("successes"),
        "errors": r.get("errors"),
        "ttft_ms_p50": r["ttft_ms"]["p50"],
        "ttft_ms_p95": r["ttft_ms"]["p95"],
        "tpot_ms_p50": r["tpot_ms"]["p50"],
        "tpot_ms_p95": r["tpot_ms"]["p95"],
        "output_tokens_per_s": r["output_tokens_per_s"],
        "server_peak_rss_kib": r.get("server_peak_rss_kib"),
    }
smi = None
try:
    with open(os.path.join(out, "nvidia-smi-mib.txt")) as f:
        values = [int(line.strip()) for line in f if line.strip().isdigit()]
        smi = max(values) if values else None
except OSError:
    pass
gauge = {}
try:
    with open(os.path.join(out, "gauge-bytes.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                gauge[parts[0]] = float(parts[1])
except OSError:
    pass
result = {
    "mode": mode,
    "model": f"random {shape} Q8_0 GGUF, llama-spm vocab",
    "measured": mode == "gpu",
    "seconds": seconds,
    "logits_check": read_json("logits-check.json"),
    "loads": runs,
    "peak_vram_mib_nvidia_smi": smi,
    "gpu_memory_used_bytes_gauge_after_each_load": gauge or None,
    "targets": {"c32_tok_s_min": 1500, "c8_ttft_p95_ms_max": 500, "c1_tpot_ms_max": 12, "vram_gib_max": 16},
}
with open(os.path.join(out, "gpu-bench.json"), "w") as f:
    json.dump(result, f, indent=1)
print(json.dumps(result["loads"], indent=1))
