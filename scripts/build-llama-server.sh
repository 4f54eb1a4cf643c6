#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (the peer of the side-by-side benchmark) from the sources
# vendored in the PyPI sdist llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION, and caches the binary
# plus its shared libraries in $CACHE_DIR (default $HOME/.cache/infergate)/llama-server-<version>/.
#
# Prints the path of the cached llama-server binary on stdout (last line); logs go to stderr.
# Run it with LD_LIBRARY_PATH=<that directory> (done by scripts/bench.sh).
#
# Environment:
#   LLAMA_CPP_PYTHON_VERSION  sdist version (default 0.3.36); the cache is keyed by it
#   LLAMA_SERVER_CACHE        cache directory (default $CACHE_DIR/llama-server-<version>)
#   LLAMA_BUILD_DIR           an existing cmake build dir of the same sources: wait for a build
#                             running in it to finish, then copy bin/llama-server and bin/*.so*
#   LLAMA_JOBS                parallel compile jobs (default 2)
#   LLAMA_WAIT_SECONDS        how long to wait for a running llama.cpp build (default 5400)
#   LLAMA_FETCH_ONLY=1        only download and unpack the sources
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="${CACHE_DIR:-$HOME/.cache/infergate}"
CACHE="${LLAMA_SERVER_CACHE:-$ROOT/llama-server-$VERSION}"
WORK="$ROOT/llama-src-$VERSION"
JOBS="${LLAMA_JOBS:-2}"
WAIT_SECONDS="${LLAMA_WAIT_SECONDS:-5400}"
PYTHON="${PYTHON:-python3}"

log() { echo "build-llama-server: $*" >&2; }

cached_ok() {
    [[ -x "$CACHE/llama-server" ]] && LD_LIBRARY_PATH="$CACHE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$CACHE/llama-server" --version >/dev/null 2>&1
}

# PIDs of running `cmake --build` processes whose build dir matches the pattern $1.
running_builds() {
    pgrep -f -- "cmake --build $1" || true
}

# Waits until no `cmake --build` matching $1 runs (never starts a second llama.cpp compile).
wait_for_builds() {
    local pattern="$1" waited=0 pids
    while pids="$(running_builds "$pattern")" && [[ -n "$pids" ]]; do
        if ((waited == 0)); then
            log "a llama.cpp build is running (pids: $(echo $pids)); waiting for it to finish"
        fi
        if ((waited >= WAIT_SECONDS)); then
            log "gave up after ${WAIT_SECONDS}s waiting for pids $(echo $pids)"
            exit 1
        fi
        sleep 10
        waited=$((waited + 10))
        if ((waited % 300 == 0)); then log "still waiting (${waited}s)"; fi
    done
}

# Copies bin/llama-server and bin/*.so* of build dir $1 into the cache, atomically.
install_from() {
    local build="$1" tmp
    [[ -x "$build/bin/llama-server" ]] || { log "no $build/bin/llama-server"; exit 1; }
    tmp="$(mktemp -d "$ROOT/.llama-server-install.XXXXXX")"
    cp -a "$build/bin/llama-server" "$tmp/"
    # Shared libs with their version symlinks (libllama.so -> libllama.so.0 -> ...).
    find "$build/bin" -maxdepth 1 -name '*.so*' -exec cp -a {} "$tmp/" \;
    rm -rf "$CACHE"
    mv "$tmp" "$CACHE"
    if ! cached_ok; then
        log "installed binary does not run:"
        LD_LIBRARY_PATH="$CACHE" "$CACHE/llama-server" --version >&2 || true
        exit 1
    fi
    log "installed into $CACHE"
}

mkdir -p "$ROOT"
if cached_ok; then
    log "cached: $CACHE/llama-server"
    echo "$CACHE/llama-server"
    exit 0
fi

# One instance of this script at a time.
exec 9>"$ROOT/.llama-server-$VERSION.lock"
flock 9
if cached_ok; then
    echo "$CACHE/llama-server"
    exit 0
fi

if [[ -n "${LLAMA_BUILD_DIR:-}" ]]; then
    wait_for_builds "$LLAMA_BUILD_DIR"
    install_from "$LLAMA_BUILD_DIR"
    echo "$CACHE/llama-server"
    exit 0
fi

# Fresh build from the sdist.
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
    mkdir -p "$WORK"
    log "downloading the llama-cpp-python==$VERSION sdist"
    # --no-binary for this package only: with :all: pip would also compile the sdist's build
    # dependencies (needed for its metadata step) from source, which takes very long.
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$WORK/sdist" >&2
    tar -xzf "$WORK/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
fi
[[ -f "$SRC/CMakeLists.txt" ]] || { log "no llama.cpp sources at $SRC"; exit 1; }
if [[ "${LLAMA_FETCH_ONLY:-0}" == 1 ]]; then
    log "sources at $SRC (LLAMA_FETCH_ONLY=1: not building)"
    exit 0
fi

# cmake >= 3.21 (llama.cpp needs 3.14+; take margin); else cmake from PyPI in a venv.
CMAKE=cmake
cmake_ok() {
    local v
    v="$("$1" --version 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)" || return 1
    [[ -n "$v" ]] && printf '3.21\n%s\n' "$v" | sort -V -C
}
if ! cmake_ok "$CMAKE"; then
    log "system cmake missing or too old; installing cmake from PyPI"
    "$PYTHON" -m venv "$WORK/venv" >&2
    "$WORK/venv/bin/pip" install --quiet --disable-pip-version-check cmake >&2
    CMAKE="$WORK/venv/bin/cmake"
fi

BUILD="$WORK/build"
# Do not compete with another llama.cpp compile on this machine.
wait_for_builds '.*llama'
log "configuring ($SRC -> $BUILD)"
"$CMAKE" -S "$SRC" -B "$BUILD" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release >&2
log "compiling llama-server with -j$JOBS (takes a while)"
"$CMAKE" --build "$BUILD" --target llama-server -j"$JOBS" >&2
install_from "$BUILD"
echo "$CACHE/llama-server"
