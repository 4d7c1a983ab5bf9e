#!/usr/bin/env bash
# Builds victoria-logs (the store for function logs: `esb up` starts it as its
# embedded default, the agent ships worker output to it, `esb logs` queries it,
# and the chart can deploy it) from its Go module, unmodified, into
# ~/.cache/esb/bin, once per machine: a second run finds the version stamp and
# prints "cached".
# Environment: VICTORIALOGS_VERSION (default v1.52.2, the version ESB is tested
# with), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
stamp=$bin/.victoria-logs.version
version=${VICTORIALOGS_VERSION:-v1.52.2}
module=github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs

log() { echo "[build-victorialogs] $*" >&2; }

mkdir -p "$bin" "$cache/build"
exec 9>"$cache/build/victorialogs.lock"
flock 9

if [[ -x $bin/victoria-logs && -f $stamp && $(cat "$stamp") == "$version" ]]; then
  echo "victoria-logs $version cached in $bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (need the Go version VictoriaLogs' go.mod names)"; exit 1; }
# The machine's Go only: a go.mod asking for a newer one fails here instead of downloading a toolchain.
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local
start=$SECONDS
tmp=$(mktemp -d "$cache/build/victorialogs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building victoria-logs $version ($module)"
# VictoriaLogs' go.mod has no replace lines, so `go install pkg@version` works directly.
GOBIN=$tmp go install -trimpath -ldflags="-s -w" "$module@$version"
mv -f "$tmp/victoria-logs" "$bin/victoria-logs"
echo "$version" >"$stamp"
echo "victoria-logs $version built into $bin in $((SECONDS - start))s"
