#!/usr/bin/env bash
# Builds the final stage of every Dockerfile in docker/ with podman, offline, and checks the
# result: no registry is reachable here, so the `build` stage is replaced by a folder holding
# the binaries built on this machine (--build-context build=...), the model stage by a folder
# holding the default model, and the base images by scratch. What this proves: the final
# stages' paths, user, entrypoint, environment and baked model. What it cannot: the compile
# stages (they pull rust/CUDA images) and running the images (crun may not set rlimits here).
# The CUDA Dockerfile's final stage is checked with the CPU binary standing in.
#   scripts/test-images.sh   (make test-images builds the binaries and the model first)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$HOME/.cache/infergate/target}
model=${MODEL:-$HOME/.cache/infergate/models/SmolLM2-135M-Instruct.Q4_1.gguf}
model_name=SmolLM2-135M-Instruct.Q4_1.gguf

if ! command -v podman >/dev/null; then
  echo "test-images: podman is required (apt-get install podman)" >&2
  exit 1
fi
for file in "$target/release/infergate-operator" "$target/release/infergate-server" "$model"; do
  [ -s "$file" ] || { echo "test-images: missing $file" >&2; exit 1; }
done

work=$(mktemp -d)
tag="test-$$"
image=
images=()
cleanup() {
  [ ${#images[@]} -eq 0 ] || podman rmi -f "${images[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/build/out" "$work/model/models"
cp "$target/release/infergate-operator" "$target/release/infergate-server" "$work/build/out/"
cp "$model" "$work/model/models/$model_name"

failures=0
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }

# build NAME DOCKERFILE ARGS...: builds $image (localhost/infergate-NAME:$tag) from scratch and
# the folders given as --build-context. Sets a global rather than printing it: images must be recorded for the cleanup.
build() {
  local name=$1 dockerfile=$2
  shift 2
  image="localhost/infergate-$name:$tag"
  images+=("$image")
  podman build --quiet --network none --pull=never --layers=false \
    --build-context "build=$work/build" "$@" \
    -f "$dockerfile" -t "$image" . >/dev/null
}

# expect IMAGE FORMAT WANT: one field of the image config.
expect() {
  local got
  got=$(podman image inspect --format "$2" "$1")
  [ "$got" = "$3" ] || fail "$1: $2 is '$got', want '$3'"
}

# has_file IMAGE PATH MODE_PREFIX: PATH exists in the image with permissions starting so.
has_file() {
  local container listing
  container=$(podman create "$1")
  listing=$(podman export "$container" | tar -tvf - "$2" 2>/dev/null || true)
  podman rm "$container" >/dev/null
  [[ $listing == $3* ]] || fail "$1: $2 missing or not $3 (${listing:-absent})"
}

build operator docker/operator.Dockerfile --build-arg RUNTIME_IMAGE=scratch
expect "$image" '{{.Config.User}}' 65532:65532
expect "$image" '{{json .Config.Entrypoint}}' '["/usr/local/bin/infergate-operator"]'
has_file "$image" usr/local/bin/infergate-operator -rwxr-xr-x

build server docker/server.Dockerfile --build-arg RUNTIME_IMAGE=scratch --build-context "model=$work/model"
expect "$image" '{{.Config.User}}' 65532:65532
expect "$image" '{{json .Config.Entrypoint}}' '["/usr/local/bin/infergate-server"]'
env=$(podman image inspect --format '{{json .Config.Env}}' "$image")
for var in HOST=0.0.0.0 PORT=8080 "INFERGATE_MODEL=/models/$model_name"; do
  [[ $env == *"\"$var\""* ]] || fail "$image: no $var in $env"
done
has_file "$image" usr/local/bin/infergate-server -rwxr-xr-x
has_file "$image" "models/$model_name" -rw-r--r--

# The slim target: the same server without the model.
build server-slim docker/server.Dockerfile --build-arg RUNTIME_IMAGE=scratch --target slim
expect "$image" '{{.Config.User}}' 65532:65532
has_file "$image" usr/local/bin/infergate-server -rwxr-xr-x
has_file "$image" models/README.txt -rw-r--r--
container=$(podman create "$image")
if podman export "$container" | tar -tf - | grep -q '\.gguf$'; then
  fail "$image: the slim target holds a model"
fi
podman rm "$container" >/dev/null

build server-cuda docker/server-cuda.Dockerfile --build-arg CUDA_RUNTIME_IMAGE=scratch
expect "$image" '{{.Config.User}}' 65532:65532
expect "$image" '{{json .Config.Entrypoint}}' '["/usr/local/bin/infergate-server"]'
has_file "$image" usr/local/bin/infergate-server -rwxr-xr-x

if [ "$failures" -gt 0 ]; then
  echo "test-images: $failures check(s) failed" >&2
  exit 1
fi
echo "test-images: operator, server and server-cuda final stages build and check out"
