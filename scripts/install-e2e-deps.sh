#!/usr/bin/env bash
# What the end-to-end suite needs from Debian: openssl (the local control plane's certificates)
# and prometheus (the Prometheus gate source). The control plane itself is built from Go
# modules by tests/cluster/build.sh. Installs only what is missing.
set -euo pipefail
missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if ! command -v go >/dev/null 2>&1; then
  echo "go is required (the end-to-end control plane is built from Go modules)" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} from Debian" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
