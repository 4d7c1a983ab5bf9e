#!/usr/bin/env bash
# Builds containerd 2.x from its Go module (github.com/containerd/containerd/v2:
# cmd/containerd and cmd/containerd-shim-runc-v2), once per machine: a second
# run finds the version stamp and prints "cached". The agent's conformance suite
# runs on it as well as on Debian's containerd 1.6 (hack/dev-env.sh, component
# containerd2).
#
# Layout: both binaries live in ~/.cache/esb/containerd2/bin (as `containerd`
# and `containerd-shim-runc-v2`), and ~/.cache/esb/bin/containerd2 links to
# that daemon. The v2 shim is deliberately NOT in ~/.cache/esb/bin: that folder
# is on PATH for every Makefile target, and the system containerd 1.6 (or the
# cluster's) must keep finding its own shim in /usr/bin. Whoever starts
# containerd 2.x puts ~/.cache/esb/containerd2/bin first on PATH for that
# process only (containerd looks the shim up on PATH, then beside itself).
#
# containerd's go.mod has no replace lines, so `go install pkg@version` works
# directly; both binaries build with CGO_ENABLED=0 (the btrfs snapshotter,
# the only cgo part, is then left out; the agent uses overlayfs).
#
# Environment: CONTAINERD2_VERSION (default: the newest v2.x release on the Go
# module proxy), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
dest=$cache/containerd2/bin
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
[[ $proxy == direct || $proxy == off ]] && proxy=https://proxy.golang.org
stamp=$dest/.containerd.version
module=github.com/containerd/containerd/v2

log() { echo "[build-containerd] $*" >&2; }
built() {
  [[ -x $dest/containerd && -x $dest/containerd-shim-runc-v2 && -f $stamp ]] &&
    [[ -z ${1:-} || $(cat "$stamp") == "$1" ]]
}
link() { ln -sfn ../containerd2/bin/containerd "$bin/containerd2"; }

mkdir -p "$bin" "$dest" "$cache/build"
exec 9>"$cache/build/containerd2.lock"
flock 9

if [[ -z ${CONTAINERD2_VERSION:-} ]]; then
  # Newest release without a pre-release suffix.
  CONTAINERD2_VERSION=$(curl -fsSL "$proxy/$module/@v/list" 2>/dev/null | grep -E '^v2\.[0-9]+\.[0-9]+$' | sort -V | tail -1) || true
  if [[ -z $CONTAINERD2_VERSION ]]; then
    # Offline: whatever was built before is good enough.
    if built; then link; echo "containerd $(cat "$stamp") cached in $dest (proxy unreachable)"; exit 0; fi
    log "cannot list containerd versions from $proxy"; exit 1
  fi
fi

if built "$CONTAINERD2_VERSION"; then
  link
  echo "containerd $CONTAINERD2_VERSION cached in $dest"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (need the Go version containerd's go.mod names)"; exit 1; }
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off
start=$SECONDS
tmp=$(mktemp -d "$cache/build/containerd2.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
buildlog=$cache/build/containerd2.log
log "building containerd $CONTAINERD2_VERSION ($module/cmd/containerd, cmd/containerd-shim-runc-v2; ~2 min on 2 cores; log $buildlog)"
# go's download lines go to the log; its tail is shown when the build fails.
if ! GOBIN=$tmp go install -trimpath \
  -ldflags="-s -w -X $module/version.Version=$CONTAINERD2_VERSION -X $module/version.Package=$module" \
  "$module/cmd/containerd@$CONTAINERD2_VERSION" "$module/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION" \
  >"$buildlog" 2>&1; then
  tail -20 "$buildlog" >&2
  log "build failed; full log in $buildlog"
  exit 1
fi
mv -f "$tmp/containerd" "$tmp/containerd-shim-runc-v2" "$dest/"
echo "$CONTAINERD2_VERSION" >"$stamp"
link
echo "containerd $CONTAINERD2_VERSION built into $dest (and $bin/containerd2) in $((SECONDS - start))s"
