#!/usr/bin/env python3
"""Records rotary inverse frequencies under RoPE scaling as a test fixture.

Usage: record-rope-fixtures.py OUT.json   (needs numpy)

Computed here independently of the server, from the published formulas:
- llama3: Meta's Llama 3.1 reference (`apply_scaling` in llama-models) and transformers'
  `_compute_llama3_parameters`: wavelengths longer than original/low_freq_factor are divided
  by `factor`, shorter than original/high_freq_factor kept, a linear blend in between.
- linear: position interpolation, every frequency divided by `factor`.
"""
import json
import sys

import numpy as np


def base_inv_freq(theta, dims):
    return 1.0 / (theta ** (np.arange(0, dims, 2, dtype=np.float64) / dims))


def llama3(inv_freq, factor, low_freq_factor, high_freq_factor, original):
    low_freq_wavelen = original / low_freq_factor
    high_freq_wavelen = original / high_freq_factor
    wavelen = 2 * np.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled)


CASES = [
    {"name": "llama3.1-8b", "theta": 500000.0, "dims": 128,
     "scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}},
    {"name": "llama3.2-1b", "theta": 500000.0, "dims": 64,
     "scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}},
    {"name": "smollm2-llama3", "theta": 100000.0, "dims": 64,
     "scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 2048}},
    {"name": "smollm2-llama3.1", "theta": 100000.0, "dims": 64,
     "scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}},
    {"name": "linear-4", "theta": 10000.0, "dims": 128, "scaling": {"rope_type": "linear", "factor": 4.0}},
    {"name": "none", "theta": 10000.0, "dims": 64, "scaling": {"rope_type": "default"}},
]


def main() -> None:
    out = sys.argv[1]
    cases = []
    for case in CASES:
        inv = base_inv_freq(case["theta"], case["dims"])
        s = case["scaling"]
        if s["rope_type"] == "llama3":
            inv = llama3(inv, s["factor"], s["low_freq_factor"], s["high_freq_factor"],
                         s["original_max_position_embeddings"])
        elif s["rope_type"] == "linear":
            inv = inv / s["factor"]
        cases.append({**case, "inv_freq": [float(x) for x in inv]})
    with open(out, "w") as f:
        json.dump({"tool": f"scripts/record-rope-fixtures.py (numpy {np.__version__})", "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
