#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the Kubernetes Go module, and etcd
# from its Go module, into ~/.cache/esb/bin (built once per machine: a second
# run finds the version stamp and prints "cached").
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

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
[[ $proxy == direct || $proxy == off ]] && proxy=https://proxy.golang.org
stamp=$bin/.kube-apiserver.version

log() { echo "[build-kube-apiserver] $*" >&2; }

command -v go >/dev/null || { log "go is not installed (need Go >= 1.26 for Kubernetes $KUBE_VERSION)"; exit 1; }
mkdir -p "$bin" "$cache/build"

# One build at a time per machine; a waiting run then finds the stamp.
exec 9>"$cache/build/kube-apiserver.lock"
flock 9

kube_mod=$(curl -fsSL "$proxy/k8s.io/kubernetes/@v/$KUBE_VERSION.mod") || {
  log "cannot download go.mod of k8s.io/kubernetes@$KUBE_VERSION from $proxy"; exit 1; }
# The etcd release that this Kubernetes release is built against.
ETCD_VERSION=${ETCD_VERSION:-$(awk '$1 == "go.etcd.io/etcd/client/v3" { print $2; exit }' <<<"$kube_mod")}
[[ -n $ETCD_VERSION ]] || { log "cannot find the etcd version in k8s.io/kubernetes's go.mod"; exit 1; }
want="kubernetes=$KUBE_VERSION etcd=$ETCD_VERSION"

if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $bin/kube-apiserver && -x $bin/kubectl && -x $bin/etcd ]]; then
  echo "kube-apiserver, kubectl ($KUBE_VERSION) and etcd ($ETCD_VERSION) cached in $bin"
  exit 0
fi

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off
start=$SECONDS
staging=v0.${KUBE_VERSION#v1.}   # v1.37.2 -> v0.37.2
major=${KUBE_VERSION#v}; major=${major%%.*}
minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}

# --- kube-apiserver + kubectl ------------------------------------------------
w=$cache/build/kube-$KUBE_VERSION
rm -rf "$w"; mkdir -p "$w"
log "wrapper module for k8s.io/kubernetes $KUBE_VERSION in $w (staging modules pinned to $staging)"
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
} >"$w/go.mod"
log "$(grep -c '=> k8s.io/' "$w/go.mod") staging modules pinned"

vpkg=k8s.io/component-base/version
kflags="-s -w -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
kflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
kflags+=" -X $vpkg/verflag.programName=kube-apiserver"
(
  cd "$w"
  log "downloading modules (first run: a few hundred MB into $(go env GOMODCACHE))"
  go mod download k8s.io/kubernetes
  log "building kube-apiserver (the slow part: several minutes on 2 cores)"
  go build -trimpath -ldflags="$kflags" -o "$bin/kube-apiserver.new" k8s.io/kubernetes/cmd/kube-apiserver
  log "building kubectl"
  go build -trimpath -ldflags="${kflags/programName=kube-apiserver/programName=kubectl}" \
    -o "$bin/kubectl.new" k8s.io/kubernetes/cmd/kubectl
)
log "kube-apiserver and kubectl built after $((SECONDS - start))s"

# --- etcd ----------------------------------------------------------------------
# Its own wrapper: etcd's published go.mod has replace lines (so `go install
# pkg@version` refuses it) and its dependency versions must not mix with Kubernetes's.
e=$cache/build/etcd-$ETCD_VERSION
rm -rf "$e"; mkdir -p "$e"
cat >"$e/go.mod" <<EOF
module esb.local/etcd-build

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
(
  cd "$e"
  log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3)"
  go build -trimpath -ldflags="-s -w" -o "$bin/etcd.new" go.etcd.io/etcd/server/v3
)

for b in kube-apiserver kubectl etcd; do mv -f "$bin/$b.new" "$bin/$b"; done
echo "$want" >"$stamp"
log "done in $((SECONDS - start))s"
echo "kube-apiserver, kubectl ($KUBE_VERSION) and etcd ($ETCD_VERSION) built into $bin in $((SECONDS - start))s"
