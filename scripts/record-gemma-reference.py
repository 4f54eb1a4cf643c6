#!/usr/bin/env python3
"""Records llama.cpp llama-server's tokens and greedy completions for Gemma 3 270M.

Writes server/tests/fixtures/gemma3_llama_server.json: for each prompt, llama-server's
/tokenize ids (with and without special-token parsing, without BOS) and its greedy
/completion token ids for the prompt given as token ids (BOS 2 first), n_predict 16,
temperature 0, cache_prompt false, with the top-2 candidates of every step (to tell
near-ties from real disagreements).

usage: scripts/record-gemma-reference.py [MODEL] [LLAMA_SERVER]
  MODEL defaults to $INFERGATE_GEMMA_MODEL or ~/.cache/infergate/models/gemma-3-270m-q4_k_m.gguf;
  LLAMA_SERVER to the last line of scripts/build-llama-server.sh (the cached binary).
Only the standard library; the server listens on 127.0.0.1 and is stopped at the end.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "server", "tests", "fixtures", "gemma3_llama_server.json")
N_PREDICT = 16

COUNTING = "Counting: " + ", ".join(str(i) for i in range(1, 301)) + ","

# (name, text): the last one is longer than the 512-token sliding window.
PROMPTS = [
    ("capital", "The capital of France is"),
    ("code", "def fibonacci(n):\n    "),
    ("story", "Once upon a time, in a small village by the sea,"),
    ("chat", "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"),
    ("counting_past_window", COUNTING),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.load(resp)


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as resp:
        return json.load(resp)


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "INFERGATE_GEMMA_MODEL", os.path.expanduser("~/.cache/infergate/models/gemma-3-270m-q4_k_m.gguf")
    )
    if len(sys.argv) > 2:
        binary = sys.argv[2]
    else:
        built = subprocess.run(
            [os.path.join(ROOT, "scripts", "build-llama-server.sh")], check=True, capture_output=True, text=True
        )
        binary = built.stdout.strip().splitlines()[-1]
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(binary))
    version = subprocess.run([binary, "--version"], env=env, capture_output=True, text=True)
    version = (version.stdout + version.stderr).strip()
    port = free_port()
    command = [
        binary, "-m", model, "--host", "127.0.0.1", "--port", str(port),
        "-c", "2048", "--temp", "0", "-t", "2", "--parallel", "1", "--no-warmup",
        # The AMX repacked-weights path crashes (SIGSEGV in ggml_backend_amx_mul_mat) on this
        # machine; plain CPU kernels compute the same model.
        "--no-repack",
    ]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                sys.exit(f"llama-server exited with {server.returncode}")
            try:
                if get(base, "/health").get("status") == "ok":
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            sys.exit("llama-server did not become ready")
        props = get(base, "/props")
        prompts = []
        for name, text in PROMPTS:
            special = post(base, "/tokenize", {"content": text, "add_special": False, "parse_special": True})["tokens"]
            plain = post(base, "/tokenize", {"content": text, "add_special": False, "parse_special": False})["tokens"]
            with_bos = post(base, "/tokenize", {"content": text, "add_special": True, "parse_special": True})["tokens"]
            prompt_ids = [2] + special
            assert with_bos == prompt_ids, (name, with_bos[:4])
            done = post(base, "/completion", {
                "prompt": prompt_ids, "n_predict": N_PREDICT, "temperature": 0, "cache_prompt": False,
                "return_tokens": True, "n_probs": 2, "samplers": ["top_k"], "top_k": 1,
            })
            top2 = [
                [{"id": c["id"], "logprob": c["logprob"]} for c in step["top_logprobs"]]
                for step in done.get("completion_probabilities", [])
            ]
            prompts.append({
                "name": name,
                "text": text,
                "tokenize_parse_special": special,
                "tokenize_no_parse_special": plain,
                "prompt_ids": prompt_ids,
                "completion_ids": done["tokens"],
                "completion_text": done["content"],
                "top2_per_step": top2,
            })
            print(f"{name}: {len(prompt_ids)} prompt tokens -> {done['tokens']} {done['content']!r}")
        fixture = {
            "about": "llama.cpp llama-server greedy reference for infergate's Gemma 3 tests "
                     "(scripts/record-gemma-reference.py)",
            "llama_server_version": version,
            "command": " ".join(command[:4] + ["<port>" if a == str(port) else a for a in command[4:]]).replace(
                model, os.path.basename(model)),
            "model_file": os.path.basename(model),
            "model_bytes": os.path.getsize(model),
            "completion_request": {"n_predict": N_PREDICT, "temperature": 0, "cache_prompt": False,
                                   "return_tokens": True, "n_probs": 2, "samplers": ["top_k"], "top_k": 1},
            "n_ctx": props.get("default_generation_settings", {}).get("n_ctx"),
            "prompts": prompts,
        }
        with open(OUT, "w") as f:
            json.dump(fixture, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"wrote {OUT}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
