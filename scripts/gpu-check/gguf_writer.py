"""A GGUF v3 writer (stdlib only) for random llama-family models with the tokenizer of a
vocab GGUF (llama.cpp's models/ggml-vocab-llama-spm.gguf). Weights are Q8_0 with one
repeated random block pattern (PATTERN_BLOCKS long, no two rows alike): speed does not depend
on the values, only on the shapes."""

import os
import random
import struct
import sys

ALIGN = 32
T_STRING, T_ARRAY = 8, 9
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
GGML_F32, GGML_Q8_0 = 0, 8


def _skip_value(buf, pos, vtype):
    if vtype in FIXED:
        return pos + FIXED[vtype]
    if vtype == T_STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if vtype == T_ARRAY:
        etype, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if etype in FIXED:
            return pos + count * FIXED[etype]
        for _ in range(count):
            pos = _skip_value(buf, pos, etype)
        return pos
    raise ValueError(f"unknown GGUF value type {vtype}")


def read_metadata_raw(path):
    """(key, type, raw value bytes) of every metadata entry of a GGUF file."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    _version, _tensors, kvs = struct.unpack_from("<IQQ", buf, 4)
    pos, out = 24, []
    for _ in range(kvs):
        (n,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        (vtype,) = struct.unpack_from("<I", buf, pos)
        start = pos + 4
        pos = _skip_value(buf, start, vtype)
        out.append((key, vtype, buf[start:pos]))
    return out


def _string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _kv(key, vtype, raw):
    return _string(key) + struct.pack("<I", vtype) + raw


def u32(v):
    return (4, struct.pack("<I", v))


def f32(v):
    return (6, struct.pack("<f", v))


def string(v):
    return (T_STRING, _string(v))


# Blocks in the repeated pattern: a prime, so that no row of any matrix (a row is a power-of-two
# number of blocks here) starts where another does within 65521 rows: every row differs, the
# logits have no built-in ties, and greedy tokens mean something (the batch check compares them).
PATTERN_BLOCKS = 65521


def q8_0_pattern(blocks, scale, seed):
    """`blocks` Q8_0 blocks (f16 scale + 32 int8) of random quants."""
    rng = random.Random(seed)
    head = struct.pack("<e", scale)
    if not hasattr(rng, "randbytes"):  # Python < 3.9
        return b"".join(head + bytes(rng.randrange(256) for _ in range(32)) for _ in range(blocks))
    return b"".join(head + rng.randbytes(32) for _ in range(blocks))


def write_model(path, vocab_gguf, shape, name):
    """shape: dict with hidden, heads, kv_heads, layers, ffn, context, rope_base, vocab (or None: the vocab's)."""
    vocab_meta = [m for m in read_metadata_raw(vocab_gguf) if m[0].startswith("tokenizer.")]
    tokens = next(raw for key, _, raw in vocab_meta if key == "tokenizer.ggml.tokens")
    _etype, vocab = struct.unpack_from("<IQ", tokens, 0)
    h, heads, kvh, ffn = shape["hidden"], shape["heads"], shape["kv_heads"], shape["ffn"]
    head_dim = h // heads
    meta = [
        ("general.architecture", *string("llama")),
        ("general.name", *string(name)),
        ("general.file_type", *u32(7)),
        ("general.alignment", *u32(ALIGN)),
        ("llama.context_length", *u32(shape["context"])),
        ("llama.embedding_length", *u32(h)),
        ("llama.block_count", *u32(shape["layers"])),
        ("llama.feed_forward_length", *u32(ffn)),
        ("llama.attention.head_count", *u32(heads)),
        ("llama.attention.head_count_kv", *u32(kvh)),
        ("llama.rope.dimension_count", *u32(head_dim)),
        ("llama.rope.freq_base", *f32(shape["rope_base"])),
        ("llama.attention.layer_norm_rms_epsilon", *f32(1e-5)),
        ("llama.vocab_size", *u32(vocab)),
    ] + vocab_meta
    tensors = [("token_embd.weight", GGML_Q8_0, (h, vocab))]
    for i in range(shape["layers"]):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", GGML_F32, (h,)),
            (p + "attn_q.weight", GGML_Q8_0, (h, h)),
            (p + "attn_k.weight", GGML_Q8_0, (h, kvh * head_dim)),
            (p + "attn_v.weight", GGML_Q8_0, (h, kvh * head_dim)),
            (p + "attn_output.weight", GGML_Q8_0, (h, h)),
            (p + "ffn_norm.weight", GGML_F32, (h,)),
            (p + "ffn_gate.weight", GGML_Q8_0, (h, ffn)),
            (p + "ffn_up.weight", GGML_Q8_0, (h, ffn)),
            (p + "ffn_down.weight", GGML_Q8_0, (ffn, h)),
        ]
    tensors += [("output_norm.weight", GGML_F32, (h,)), ("output.weight", GGML_Q8_0, (h, vocab))]

    def nbytes(kind, dims):
        count = 1
        for d in dims:
            count *= d
        return count * 4 if kind == GGML_F32 else count // 32 * 34

    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    header += b"".join(_kv(k, t, raw) for k, t, raw in meta)
    offset = 0
    for tname, kind, dims in tensors:
        header += _string(tname) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        header += struct.pack("<IQ", kind, offset)
        offset += (nbytes(kind, dims) + ALIGN - 1) // ALIGN * ALIGN
    header += b"\0" * (-len(header) % ALIGN)
    # Scale so that a matmul of a unit-RMS input has outputs of about unit size.
    pattern = q8_0_pattern(PATTERN_BLOCKS, 1.0 / (73.0 * h**0.5), seed=7)
    ones = struct.pack("<f", 1.0) * 4096
    with open(path, "wb") as f:
        f.write(header)
        for _tname, kind, dims in tensors:
            left = nbytes(kind, dims)
            unit = pattern if kind == GGML_Q8_0 else ones
            while left > 0:
                chunk = unit[: min(left, len(unit))]
                f.write(chunk)
                left -= len(chunk)
            f.write(b"\0" * (-nbytes(kind, dims) % ALIGN))
    return os.path.getsize(path)


SHAPES = {
    # Mistral-7B-v0.1: 32 layers, 4096 hidden, 32/8 heads, 14336 FFN, rope base 1e6 (v0.2+).
    "mistral-7b": dict(hidden=4096, heads=32, kv_heads=8, layers=32, ffn=14336, context=32768, rope_base=1e6),
    # The dry run's stand-in: the same structure (GQA 4:1, head 128), tiny.
    "dry-run": dict(hidden=256, heads=2, kv_heads=1, layers=2, ffn=512, context=4096, rope_base=1e6),
}

if __name__ == "__main__":
    out, vocab_path, shape_name = sys.argv[1:4]
    size = write_model(out, vocab_path, SHAPES[shape_name], f"random-{shape_name}-q8_0")
    print(f"wrote {out}: {size / 2**30:.2f} GiB ({shape_name})")
