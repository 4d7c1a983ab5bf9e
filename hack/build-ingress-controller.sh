#!/usr/bin/env bash
# Builds the Skipper ingress controller (github.com/zalando/skipper/cmd/skipper,
# unmodified) into ~/.cache/esb/bin, once per machine: a second run finds the
# version stamp and prints "cached".
#
# `go install github.com/zalando/skipper/cmd/skipper@VERSION` does not work here:
# it asks the module proxy for skipper's version list (to check deprecation),
# and the proxy refuses that (403). A two-line wrapper module that requires the
# pinned version builds the same package. Skipper v0.27.65 needs Go >= 1.27, so
# an older local go fetches the go1.27.3 toolchain from the module proxy
# (GOTOOLCHAIN, ~76 MB once).
#
# Environment: SKIPPER_VERSION (default below; the proxy serves only some
# versions), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

SKIPPER_VERSION=${SKIPPER_VERSION:-v0.27.65}
SKIPPER_GO=${SKIPPER_GO:-go1.27.3}   # toolchain when the local go is older than 1.27
cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
stamp=$bin/.skipper.version

log() { echo "[build-ingress-controller] $*" >&2; }

mkdir -p "$bin" "$cache/build"
exec 9>"$cache/build/skipper.lock"
flock 9

if [[ -x $bin/skipper && -f $stamp && $(cat "$stamp") == "$SKIPPER_VERSION" ]]; then
  echo "skipper $SKIPPER_VERSION cached in $bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off
gover=$(cd / && go env GOVERSION)
if [[ -z ${GOTOOLCHAIN:-} && $(printf '%s\n' go1.27 "$gover" | sort -V | head -1) != go1.27 ]]; then
  export GOTOOLCHAIN=$SKIPPER_GO
  log "local $gover is older than go1.27: using GOTOOLCHAIN=$GOTOOLCHAIN"
fi
start=$SECONDS
w=$(mktemp -d "$cache/build/skipper.XXXXXX")
trap 'rm -rf "$w"' EXIT
printf 'module esb.local/skipper-build\n\ngo 1.27.0\n\nrequire github.com/zalando/skipper %s\n' \
  "$SKIPPER_VERSION" >"$w/go.mod"
log "building skipper $SKIPPER_VERSION (github.com/zalando/skipper/cmd/skipper; ~8 min on 2 cores)"
(
  cd "$w"
  go build -trimpath -ldflags="-s -w -X main.version=$SKIPPER_VERSION" \
    -o "$bin/skipper.new" github.com/zalando/skipper/cmd/skipper
)
mv -f "$bin/skipper.new" "$bin/skipper"
echo "$SKIPPER_VERSION" >"$stamp"
echo "skipper $SKIPPER_VERSION built into $bin in $((SECONDS - start))s"
