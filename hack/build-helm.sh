#!/usr/bin/env bash
# Builds helm v3 from its Go module (helm.sh/helm/v3/cmd/helm) into
# ~/.cache/esb/bin, once per machine: a second run finds the version stamp and
# prints "cached".
# Environment: HELM_VERSION (default: the newest v3.x release on the Go module
# proxy), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
[[ $proxy == direct || $proxy == off ]] && proxy=https://proxy.golang.org
stamp=$bin/.helm.version

log() { echo "[build-helm] $*" >&2; }

mkdir -p "$bin" "$cache/build"
exec 9>"$cache/build/helm.lock"
flock 9

if [[ -z ${HELM_VERSION:-} ]]; then
  # Newest release without a pre-release suffix.
  HELM_VERSION=$(curl -fsSL "$proxy/helm.sh/helm/v3/@v/list" 2>/dev/null | grep -E '^v3\.[0-9]+\.[0-9]+$' | sort -V | tail -1) || true
  if [[ -z $HELM_VERSION ]]; then
    # Offline: whatever was built before is good enough.
    if [[ -x $bin/helm && -f $stamp ]]; then echo "helm $(cat "$stamp") cached in $bin (proxy unreachable)"; exit 0; fi
    log "cannot list helm versions from $proxy"; exit 1
  fi
fi

if [[ -x $bin/helm && -f $stamp && $(cat "$stamp") == "$HELM_VERSION" ]]; then
  echo "helm $HELM_VERSION cached in $bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (need Go >= 1.26)"; exit 1; }
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off
start=$SECONDS
tmp=$(mktemp -d "$cache/build/helm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building helm $HELM_VERSION (helm.sh/helm/v3/cmd/helm)"
# helm's go.mod has no replace lines, so `go install pkg@version` works directly.
GOBIN=$tmp go install -trimpath \
  -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv -f "$tmp/helm" "$bin/helm"
echo "$HELM_VERSION" >"$stamp"
echo "helm $HELM_VERSION built into $bin in $((SECONDS - start))s"
