#!/usr/bin/env bash
# Builds the local control plane from Go modules into a cache folder keyed by every version,
# and prints that folder: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (the
# server's own minor) and helm from this module's pinned graph, etcd through cmd/etcd, KWOK at
# its own release.
# A warm call only checks the binaries are there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${INFERGATE_CACHE:-${CACHE_DIR:-$HOME/.cache/infergate}}

kube_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$here/go.mod")
helm_version=$(awk '$1 == "helm.sh/helm/v3" { print $2; exit }' "$here/go.mod")
kwok_version=v0.7.0
go_version=$(go env GOVERSION)
sum=$(cat "$here/go.mod" "$here/go.sum" "$here/cmd/etcd/main.go" "$0" | sha256sum | cut -c1-12)
out="$cache/control-plane/kube-$kube_version-etcd-$etcd_version-helm-$helm_version-kwok-$kwok_version-$go_version-$sum"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm kwok)

complete() {
  local b
  for b in "${binaries[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
}
if complete; then
  echo "$out"
  exit 0
fi

mkdir -p "$out/bin"
log() { echo "[control-plane] $*" >&2; }
started=$SECONDS
minor=${kube_version#v1.}
minor=${minor%%.*}
# What `make` in the kubernetes repository stamps in, so every component reports its real version.
pkg=k8s.io/component-base/version
kube_ldflags="-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

cd "$here"
log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $kube_version"
go build -trimpath -ldflags "$kube_ldflags" -o "$out/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
log "building etcd $etcd_version"
go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" ./cmd/etcd
log "building helm $helm_version"
# helm's default Kubernetes version (for `helm template` and chart kubeVersion checks without a
# cluster) comes from ldflags too; stamp the control plane's own.
helm_pkg=helm.sh/helm/v3
helm_ldflags="-s -w -X $helm_pkg/internal/version.version=$helm_version"
helm_ldflags+=" -X $helm_pkg/pkg/chartutil.k8sVersionMajor=1 -X $helm_pkg/pkg/chartutil.k8sVersionMinor=$minor"
go build -trimpath -ldflags "$helm_ldflags" -o "$out/bin/helm" "$helm_pkg/cmd/helm"
log "building kwok $kwok_version"
GOBIN="$out/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
log "done in $((SECONDS - started)) s"
complete
echo "$out"
