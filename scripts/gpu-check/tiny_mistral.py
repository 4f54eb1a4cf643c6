"""A tiny random Mistral checkpoint directory (config.json, model.safetensors, tokenizer.json),
stdlib only, and its fp32 reference logits computed with torch (the model written out by hand:
RMSNorm, rotary embeddings on the two halves of each head, grouped-query causal attention,
SiLU-gated MLP, as transformers' MistralForCausalLM)."""

import json
import os
import random
import struct
import sys

CONFIG = dict(
    model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=64, intermediate_size=160,
    num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2, vocab_size=256,
    max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2, sliding_window=None, torch_dtype="float32",
)


def tensor_shapes(c):
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * h // c["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f),
        })
    return shapes


def write_dir(out):
    os.makedirs(out, exist_ok=True)
    rng = random.Random(13)
    header, blobs, offset = {}, [], 0
    for name, shape in sorted(tensor_shapes(CONFIG).items()):
        count = 1
        for d in shape:
            count *= d
        if name.endswith("norm.weight"):
            values = [1.0 + rng.gauss(0, 0.1) for _ in range(count)]
        else:
            values = [rng.gauss(0, 0.08) for _ in range(count)]
        blob = struct.pack(f"<{count}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, CONFIG["vocab_size"])})
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for t, i in [("<unk>", 0), ("<s>", 1), ("</s>", 2)]
        ],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": False}, f)


def load_tensors(path, torch):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32).reshape(info["shape"])
    return out


def reference_logits(model_dir, tokens):
    import torch

    c = CONFIG
    w = load_tensors(os.path.join(model_dir, "model.safetensors"), torch)
    h, heads, kvh = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = h // heads
    n = len(tokens)

    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"]) * weight

    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cat([angles.cos()] * 2, -1).float(), torch.cat([angles.sin()] * 2, -1).float()

    def rope(x):  # (heads, n, d)
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        y = rms(x, w[p + "input_layernorm.weight"])
        q = (y @ w[p + "self_attn.q_proj.weight"].T).reshape(n, heads, d).transpose(0, 1)
        k = (y @ w[p + "self_attn.k_proj.weight"].T).reshape(n, kvh, d).transpose(0, 1)
        v = (y @ w[p + "self_attn.v_proj.weight"].T).reshape(n, kvh, d).transpose(0, 1)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(heads // kvh, 0)
        v = v.repeat_interleave(heads // kvh, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / d**0.5 + mask, -1) @ v
        x = x + att.transpose(0, 1).reshape(n, h) @ w[p + "self_attn.o_proj.weight"].T
        y = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = torch.nn.functional.silu(y @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (y @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    return (x[-1] @ w["lm_head.weight"].T).tolist()


def reference_logits_numpy(model_dir, tokens):
    """The same model in numpy fp32: the reference where the host has no torch."""
    import numpy as np

    c = CONFIG
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    w = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        w[name] = np.frombuffer(data[start:end], dtype=np.float32).reshape(info["shape"])
    h, heads, kvh = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = h // heads
    n = len(tokens)

    def rms(x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + c["rms_norm_eps"]) * weight

    inv = 1.0 / (c["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    angles = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, -1).astype(np.float32)
    sin = np.concatenate([np.sin(angles)] * 2, -1).astype(np.float32)

    def rope(x):
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    x = w["model.embed_tokens.weight"][np.array(tokens)]
    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        y = rms(x, w[p + "input_layernorm.weight"])
        q = (y @ w[p + "self_attn.q_proj.weight"].T).reshape(n, heads, d).transpose(1, 0, 2)
        k = (y @ w[p + "self_attn.k_proj.weight"].T).reshape(n, kvh, d).transpose(1, 0, 2)
        v = (y @ w[p + "self_attn.v_proj.weight"].T).reshape(n, kvh, d).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, heads // kvh, 0), np.repeat(v, heads // kvh, 0)
        s = q @ k.transpose(0, 2, 1) / np.float32(d**0.5) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        att = (s / s.sum(-1, keepdims=True)) @ v
        x = x + att.transpose(1, 0, 2).reshape(n, h) @ w[p + "self_attn.o_proj.weight"].T
        y = rms(x, w[p + "post_attention_layernorm.weight"])
        g = y @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (y @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    return (x[-1] @ w["lm_head.weight"].T).tolist()


PROMPTS = [[1, 17, 99, 4, 250, 31, 8, 8, 200], [1, 5], list(range(3, 43))]


def check(model_dir, server_bin, device):
    """Compares `infergate-server logits` with torch fp32; returns a JSON-able result."""
    import subprocess

    try:
        import torch  # noqa: F401

        reference, reference_name = reference_logits, "torch fp32"
    except ImportError:
        try:
            import numpy  # noqa: F401

            reference, reference_name = reference_logits_numpy, "numpy fp32 (no torch in this Python)"
        except ImportError:
            return {"status": "skipped", "reason": "neither torch nor numpy in this Python: no fp32 reference"}
    lines = "\n".join(" ".join(map(str, p)) for p in PROMPTS) + "\n"
    try:
        run = subprocess.run([server_bin, "logits", "--model", model_dir, "--device", device], input=lines,
                             capture_output=True, text=True, timeout=55)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": "the logits subcommand did not finish in 55 s"}
    if run.returncode != 0:
        return {"status": "failed", "reason": f"logits subcommand exited {run.returncode}: {run.stderr.strip()[-400:]}"}
    results, ok = [], True
    for prompt, line in zip(PROMPTS, run.stdout.splitlines()):
        got = [float(v) for v in line.split()]
        want = reference(model_dir, prompt)
        dot = sum(a * b for a, b in zip(got, want))
        na, nb = sum(a * a for a in got) ** 0.5, sum(b * b for b in want) ** 0.5
        cosine = dot / (na * nb)
        max_diff = max(abs(a - b) for a, b in zip(got, want))
        same_top = max(range(len(got)), key=got.__getitem__) == max(range(len(want)), key=want.__getitem__)
        ok = ok and cosine > 0.999 and same_top
        results.append({"prompt_tokens": len(prompt), "cosine": cosine, "max_abs_diff": max_diff, "same_argmax": same_top})
    return {"status": "passed" if ok else "failed", "reference": reference_name, "device": device, "prompts": results}


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write_dir(sys.argv[2])
        print(f"wrote the tiny Mistral checkpoint in {sys.argv[2]}")
    elif sys.argv[1] == "check":
        result = check(sys.argv[2], sys.argv[3], sys.argv[4])
        with open(sys.argv[5], "w") as f:
            json.dump(result, f, indent=1)
        print(f"tiny Mistral vs {result.get('reference', 'the fp32 reference')}: {result['status']} {result.get('reason', '')}")
