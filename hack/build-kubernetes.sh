#!/usr/bin/env bash
# Builds Kubernetes from its Go module, and etcd from its own, into
# ~/.cache/esb/bin, once per machine: each binary carries a version stamp and a
# second run prints "cached".
# Usage: hack/build-kubernetes.sh [control-plane|node]
#   control-plane (default)  kube-apiserver, kubectl, etcd (what the tests' API server needs)
#   node                     those, plus kubelet, kube-controller-manager, kube-scheduler and
#                            kube-proxy (what hack/cluster.sh needs for a real node)
#
# k8s.io/kubernetes is not meant to be used as a dependency: its go.mod points
# every k8s.io/* staging module at ./staging/... and requires them as v0.0.0.
# A small wrapper module requires k8s.io/kubernetes and pins each staging
# module to its published release (kubernetes v1.X.Y <-> staging v0.X.Y); the
# replace lines are generated from k8s.io/kubernetes's own go.mod.
#
# Environment: KUBE_VERSION (default below), ETCD_VERSION (default: the etcd
# client version that Kubernetes release requires), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

what=${1:-control-plane}
case $what in
  control-plane) kube_bins=(kube-apiserver kubectl) ;;
  node) kube_bins=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy) ;;
  *) echo "usage: $0 [control-plane|node]" >&2; exit 2 ;;
esac
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
[[ $proxy == direct || $proxy == off ]] && proxy=https://proxy.golang.org

log() { echo "[build-kubernetes] $*" >&2; }
stamped() { [[ -x $bin/$1 && -f $bin/.$1.version && $(cat "$bin/.$1.version") == "$2" ]]; }

mkdir -p "$bin" "$cache/build"
# One build at a time per machine; a waiting run then finds the stamps.
exec 9>"$cache/build/kubernetes.lock"
flock 9

# Everything cached: no network needed (ETCD_VERSION is then read from etcd's stamp).
missing=()
for b in "${kube_bins[@]}"; do stamped "$b" "$KUBE_VERSION" || missing+=("$b"); done
if ((${#missing[@]} == 0)) && [[ -x $bin/etcd && -f $bin/.etcd.version ]] &&
  [[ -z ${ETCD_VERSION:-} || $(cat "$bin/.etcd.version") == "$ETCD_VERSION" ]]; then
  echo "${kube_bins[*]} ($KUBE_VERSION) and etcd ($(cat "$bin/.etcd.version")) cached in $bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (need Go >= 1.26 for Kubernetes $KUBE_VERSION)"; exit 1; }
kube_mod=$(curl -fsSL --retry 3 "$proxy/k8s.io/kubernetes/@v/$KUBE_VERSION.mod") || {
  log "cannot download go.mod of k8s.io/kubernetes@$KUBE_VERSION from $proxy"; exit 1; }
# The etcd release that this Kubernetes release is built against.
ETCD_VERSION=${ETCD_VERSION:-$(awk '$1 == "go.etcd.io/etcd/client/v3" { print $2; exit }' <<<"$kube_mod")}
[[ -n $ETCD_VERSION ]] || { log "cannot find the etcd version in k8s.io/kubernetes's go.mod"; exit 1; }

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off
start=$SECONDS

# --- Kubernetes ------------------------------------------------------------------
if ((${#missing[@]})); then
  staging=v0.${KUBE_VERSION#v1.}   # v1.37.2 -> v0.37.2
  major=${KUBE_VERSION#v}; major=${major%%.*}
  minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  w=$cache/build/kube-$KUBE_VERSION
  mkdir -p "$w"
  {
    echo "module esb.local/kube-build"
    echo
    awk '$1 == "go" { print; exit }' <<<"$kube_mod"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    # `k8s.io/api => ./staging/src/k8s.io/api` becomes `k8s.io/api => k8s.io/api v0.37.2`.
    awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }' <<<"$kube_mod"
    echo ")"
  } >"$w/go.mod.new"
  # A go.mod that did not change keeps its go.sum (no re-resolution).
  if cmp -s "$w/go.mod.new" "$w/go.mod"; then rm "$w/go.mod.new"; else mv "$w/go.mod.new" "$w/go.mod"; rm -f "$w/go.sum"; fi
  log "wrapper module for k8s.io/kubernetes $KUBE_VERSION in $w ($(grep -c '=> k8s.io/' "$w/go.mod") staging modules pinned to $staging)"
  vpkg=k8s.io/component-base/version
  flags="-s -w -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
  flags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  (
    cd "$w"
    log "downloading modules (first run: a few hundred MB into $(go env GOMODCACHE))"
    go mod download k8s.io/kubernetes
    for b in "${missing[@]}"; do
      t=$SECONDS
      log "building $b $KUBE_VERSION (kube-apiserver and kubelet take minutes on 2 cores)"
      go build -trimpath -ldflags="$flags -X $vpkg/verflag.programName=$b" -o "$bin/$b.new" "k8s.io/kubernetes/cmd/$b"
      mv -f "$bin/$b.new" "$bin/$b"
      echo "$KUBE_VERSION" >"$bin/.$b.version"
      log "$b built in $((SECONDS - t))s"
    done
  )
fi

# --- etcd ----------------------------------------------------------------------
# Its own wrapper: etcd's published go.mod has replace lines (so `go install
# pkg@version` refuses it) and its dependency versions must not mix with Kubernetes's.
if ! stamped etcd "$ETCD_VERSION"; then
  e=$cache/build/etcd-$ETCD_VERSION
  rm -rf "$e"; mkdir -p "$e"
  printf 'module esb.local/etcd-build\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$e/go.mod"
  (
    cd "$e"
    log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3)"
    go build -trimpath -ldflags="-s -w" -o "$bin/etcd.new" go.etcd.io/etcd/server/v3
  )
  mv -f "$bin/etcd.new" "$bin/etcd"
  echo "$ETCD_VERSION" >"$bin/.etcd.version"
fi

echo "${kube_bins[*]} ($KUBE_VERSION) and etcd ($ETCD_VERSION) built into $bin in $((SECONDS - start))s"
