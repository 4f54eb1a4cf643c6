"""Tests of render_gpu_section.py and summarize.py (stdlib unittest; scripts/gpu-check.sh
--dry-run runs them): `python3 -m unittest discover -s scripts/gpu-check -p 'test_*.py'`."""

import copy
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import render_gpu_section as render  # noqa: E402
import summarize  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))


def load(tok_s, ttft_p95, tpot_p50, smi_mib, gauge_bytes, errors=0, requests=24, prompts=(1024, 1024)):
    return {
        "status": "ran", "concurrency": 8, "requests": requests, "prompt_tokens": list(prompts),
        "successes": requests - errors, "errors": errors, "ttft_ms_p50": ttft_p95 / 2, "ttft_ms_p95": ttft_p95,
        "tpot_ms_p50": tpot_p50, "tpot_ms_p95": tpot_p50 * 1.2, "output_tokens_per_s": tok_s,
        "vram": {"samples": 40, "nvidia_smi_peak_mib": smi_mib, "gauge_peak_bytes": gauge_bytes,
                 "gauge_peak_mib": None if gauge_bytes is None else round(gauge_bytes / 2**20), "kv_blocks_used_peak": 900},
    }


GPU_RUN = {
    "mode": "gpu", "measured_on_gpu": True, "label": "GPU run", "complete": True, "seconds": 400,
    "written_utc": "2026-12-02 10:00 UTC", "model": "random mistral-7b Q8_0 GGUF, llama-spm vocab",
    "gpu": {"name": "NVIDIA H200", "compute_cap": "9.0", "driver": "570.0", "memory_total": "143771 MiB"},
    "server": {"command": ["infergate-server", "--max-kv-tokens", "49152"], "max_kv_tokens": 49152},
    "steps": [{"step": "models", "status": "ok", "seconds": 30, "bound_s": 90, "note": None}],
    "logits_check": {"status": "passed", "reference": "torch fp32", "prompts": [{"cosine": 0.99999, "same_argmax": True}]},
    "batch_check": {"batch": 12, "prompt_tokens": 24, "decode_steps": 8, "decode_max_abs_diff": 0.01,
                    "decode_min_cosine": 0.99999, "decode_greedy_equal": 8, "prefill": {"max_abs_diff": 0.002}},
    "loads": {
        "c1": load(80.0, 60.0, 11.5, 14500, 14.9e9, requests=6),
        "c8": load(600.0, 450.0, 13.0, 14700, 15.2e9),
        "c32-mixed": load(1600.0, 900.0, 19.0, 15000, 15.6e9, requests=64, prompts=(64, 2048)),
    },
    "nvidia_smi_idle_mib": 500, "nvidia_smi_peak_mib_whole_run": 15010, "targets": summarize.TARGETS,
}


def section_of(document):
    """The GPU section of a BENCHMARKS.md text, as render.splice delimits it."""
    lines = document.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(render.HEADING))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[start:end]).rstrip("\n") + "\n"


class RenderTests(unittest.TestCase):
    def test_no_run_renders_unmeasured(self):
        text = render.render(None)
        self.assertTrue(text.startswith("## GPU (H100/H200): unmeasured"))
        self.assertIn("**unmeasured**", text)

    def test_the_template_and_benchmarks_md_carry_the_unmeasured_section(self):
        # `make bench` renders the template: it must not bring back another text.
        for path in ["bench/templates/BENCHMARKS.md.tmpl", "BENCHMARKS.md"]:
            with open(os.path.join(REPO, path)) as f:
                document = f.read()
            if os.path.exists(render.DEFAULT_JSON) and path == "BENCHMARKS.md":
                continue
            self.assertEqual(section_of(document), render.UNMEASURED, path)

    def test_targets_met_and_not_met(self):
        text = render.render(GPU_RUN)
        self.assertTrue(text.startswith("## GPU (H100/H200): measured on NVIDIA H200"))
        self.assertIn("| c=32, 64-2048-token prompts | >= 1500 tok/s in aggregate | 1600.0 tok/s | **met** |", text)
        self.assertIn("| c=8, 1k-token prompts | TTFT P95 < 500 ms | 450.0 ms | **met** |", text)
        self.assertIn("| c=1, 1k-token prompts | TPOT P50 <= 12 ms | 11.50 ms | **met** |", text)
        # 15000 MiB = 15.73 GB < 16 GB by nvidia-smi (the gauge's 15.6e9 is shown, not judged).
        self.assertIn("| all | VRAM < 16 GB (15259 MiB) | 15000 MiB (15.73 GB, nvidia-smi, c32-mixed) | **met** |", text)
        self.assertIn("| c8 | 24 (24 / 0) | 1024 | 225.0 | 450.0 | 13.00 | 15.60 | 600.0 | 14700 | 14496 | 900 |", text)
        self.assertIn("greedy token equal in 8 of 8 steps", text)
        slow = copy.deepcopy(GPU_RUN)
        slow["loads"]["c32-mixed"]["output_tokens_per_s"] = 1499.0
        slow["loads"]["c8"]["errors"] = 2
        slow["loads"]["c1"]["vram"]["nvidia_smi_peak_mib"] = 15300
        text = render.render(slow)
        self.assertIn("| 1499.0 tok/s | **not met** |", text)
        self.assertIn("| 450.0 ms | **not met** (2 of 24 requests failed) |", text)
        self.assertIn("| 15300 MiB (16.04 GB, nvidia-smi, c1) | **not met** |", text)

    def test_missing_loads_and_samples_are_unmeasured_not_met(self):
        cut = copy.deepcopy(GPU_RUN)
        cut["complete"] = False
        cut["loads"]["c32-mixed"] = {"status": "missing"}
        cut["loads"]["c8"]["vram"] = None
        text = render.render(cut)
        self.assertIn("**incomplete**", text)
        self.assertIn("| - tok/s | unmeasured (the load did not run) |", text)
        self.assertIn("unmeasured (c32-mixed, c8 without a VRAM sample)", text)
        self.assertIn("| c32-mixed | did not run |", text)

    def test_a_dry_run_is_refused_or_labelled(self):
        dry = copy.deepcopy(GPU_RUN)
        dry["mode"], dry["measured_on_gpu"] = "dry-run", False
        with self.assertRaises(render.DryRun):
            render.render(dry)
        text = render.render(dry, allow_dry_run=True)
        self.assertTrue(text.startswith("## GPU check: CPU dry run (not GPU figures)"))
        # The loads are named by the prompts they sent, not the issue's.
        dry["loads"]["c8"]["prompt_tokens"] = [64, 64]
        self.assertIn("| c=8, 64-token prompts |", render.render(dry, allow_dry_run=True))
        self.assertNotIn("measured on", text)
        self.assertEqual(text.count("these are not GPU figures"), 3, "the run line and both tables are labelled")

    def test_the_command_line_refuses_to_write_a_dry_run(self):
        with tempfile.TemporaryDirectory() as tmp:
            dry = dict(GPU_RUN, mode="dry-run", measured_on_gpu=False)
            path = os.path.join(tmp, "gpu-bench.json")
            with open(path, "w") as f:
                json.dump(dry, f)
            doc = os.path.join(tmp, "BENCHMARKS.md")
            original = "# x\n\n" + render.UNMEASURED + "\n## All runs\n"
            with open(doc, "w") as f:
                f.write(original)
            script = os.path.join(HERE, "render_gpu_section.py")
            for extra in [[], ["--allow-dry-run"]]:
                run = subprocess.run([sys.executable, script, "--json", path, "--write", doc, *extra],
                                     capture_output=True, text=True)
                self.assertEqual(run.returncode, 2, run.stderr)
                with open(doc) as f:
                    self.assertEqual(f.read(), original)
            # A GPU run is written in place of the section, the rest kept.
            with open(path, "w") as f:
                json.dump(GPU_RUN, f)
            run = subprocess.run([sys.executable, script, "--json", path, "--write", doc], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            with open(doc) as f:
                written = f.read()
            self.assertTrue(written.startswith("# x\n\n## GPU (H100/H200): measured on NVIDIA H200"))
            self.assertTrue(written.endswith("\n## All runs\n"))
            self.assertNotIn("unmeasured", written.split("## All runs")[0].split("| all |")[0])


class SummarizeTests(unittest.TestCase):
    def test_a_partial_run_summarizes_what_exists(self):
        with tempfile.TemporaryDirectory() as out:
            with open(os.path.join(out, "steps.txt"), "w") as f:
                f.write("models ok 12 90\nlogits-check timeout 60 60\n")
            with open(os.path.join(out, "vram-c1.txt"), "w") as f:
                f.write("1.0 14000 1.4e10 10\n1.5 14100 - 12\n2.0 - 1.5e10 -\n")
            bench = {"params": {"concurrency": 1, "requests": 6, "prompt_tokens": 1024, "max_tokens": 128},
                     "successes": 6, "errors": 0, "ttft_ms": {"p50": 1, "p95": 2}, "tpot_ms": {"p50": 3, "p95": 4},
                     "output_tokens_per_s": 5, "wall_time_s": 9}
            with open(os.path.join(out, "bench-c1.json"), "w") as f:
                json.dump(bench, f)
            result = summarize.summarize(out, "gpu", "mistral-7b", 100, complete=False)
            with open(os.path.join(out, "gpu-bench.json")) as f:
                self.assertEqual(json.load(f), result)
        self.assertFalse(result["complete"])
        self.assertEqual([s["status"] for s in result["steps"]], ["ok", "timeout"])
        self.assertEqual(result["loads"]["c8"], {"status": "missing"})
        vram = result["loads"]["c1"]["vram"]
        self.assertEqual((vram["samples"], vram["nvidia_smi_peak_mib"], vram["gauge_peak_bytes"], vram["kv_blocks_used_peak"]),
                         (3, 14100, 1.5e10, 12))
        self.assertTrue(result["measured_on_gpu"])
        self.assertEqual(result["logits_check"], None)


if __name__ == "__main__":
    unittest.main()
