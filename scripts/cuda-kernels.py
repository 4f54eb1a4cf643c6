"""The GPU code inside a CUDA build of infergate-server, read without the CUDA tools (stdlib
only; scripts/check-cuda-build.sh runs it, `make test-cuda`):

- SASS: the cubins of the ELF's .nv_fatbin section (the statically linked kernels: candle's
  quantized matmuls), by architecture. Fatbin layout (as cuobjdump lists it): containers of
  a 16-byte header (magic 0xBA55ED50, version, header size, payload size) holding entries
  whose header gives the kind (1 PTX, 2 ELF cubin) and the architecture (e.g. 90 = sm_90).
- PTX: candle's own kernels are PTX text embedded in .rodata (compiled at build time for one
  compute capability, JIT-compiled by the driver for newer GPUs): every `.target sm_NN` line
  and `.version X.Y` found there.

usage: cuda-kernels.py BINARY [--json]   prints {"sass": {"sm_80": n, ...}, "fatbin_ptx": {...},
                                          "embedded_ptx_targets": {...}, "embedded_ptx_versions": {...}}"""

import json
import re
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2


def sections(data):
    """{name: (offset, size)} of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][4]
    out = {}
    for name_idx, _type, _flags, _addr, offset, size, *_ in headers:
        end = data.index(b"\0", names_off + name_idx)
        out[data[names_off + name_idx:end].decode()] = (offset, size)
    return out


def fatbin_entries(blob):
    """(kind, arch) of every entry of every fatbin container in `blob`."""
    entries, pos = [], 0
    while pos + 16 <= len(blob):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", blob, pos)
        if magic != FATBIN_MAGIC:
            # Containers are 8-byte aligned; padding between them is zero.
            pos += 8
            continue
        entry, end = pos + header_size, pos + header_size + fat_size
        while entry + 32 <= end:
            kind, _unknown, entry_header, payload = struct.unpack_from("<HHIQ", blob, entry)
            arch, = struct.unpack_from("<I", blob, entry + 28)
            if entry_header == 0:
                break
            entries.append((kind, arch))
            entry += entry_header + payload
        pos = end
    return entries


def inspect(path):
    with open(path, "rb") as f:
        data = f.read()
    found = sections(data)
    sass, fatbin_ptx = {}, {}
    if ".nv_fatbin" in found:
        offset, size = found[".nv_fatbin"]
        for kind, arch in fatbin_entries(data[offset:offset + size]):
            table = sass if kind == KIND_ELF else fatbin_ptx if kind == KIND_PTX else None
            if table is not None:
                table[f"sm_{arch}"] = table.get(f"sm_{arch}", 0) + 1
    rodata_off, rodata_size = found.get(".rodata", (0, 0))
    rodata = data[rodata_off:rodata_off + rodata_size]
    targets, versions = {}, {}
    for m in re.finditer(rb"^\.target (sm_[0-9a-z]+)", rodata, re.M):
        targets[m.group(1).decode()] = targets.get(m.group(1).decode(), 0) + 1
    for m in re.finditer(rb"^\.version ([0-9]+\.[0-9]+)", rodata, re.M):
        versions[m.group(1).decode()] = versions.get(m.group(1).decode(), 0) + 1
    return {"sass": dict(sorted(sass.items())), "fatbin_ptx": dict(sorted(fatbin_ptx.items())),
            "embedded_ptx_targets": targets, "embedded_ptx_versions": versions}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(json.dumps(inspect(sys.argv[1])))
