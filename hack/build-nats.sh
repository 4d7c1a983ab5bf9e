#!/usr/bin/env bash
# Builds nats-server (the JetStream broker the chart deploys for durable Event
# invocations; the gateway's NATS event store is tested against it) from its Go
# module, unmodified, into ~/.cache/esb/bin, once per machine: a second run
# finds the version stamp and prints "cached".
# Environment: NATS_VERSION (default v2.15.3, the version the gateway is tested
# with), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
stamp=$bin/.nats-server.version
version=${NATS_VERSION:-v2.15.3}
module=github.com/nats-io/nats-server/v2

log() { echo "[build-nats] $*" >&2; }

mkdir -p "$bin" "$cache/build"
exec 9>"$cache/build/nats.lock"
flock 9

if [[ -x $bin/nats-server && -f $stamp && $(cat "$stamp") == "$version" ]]; then
  echo "nats-server $version cached in $bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (need the Go version nats-server's go.mod names)"; exit 1; }
# The machine's Go only: a go.mod asking for a newer one fails here instead of downloading a toolchain.
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local
start=$SECONDS
tmp=$(mktemp -d "$cache/build/nats.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building nats-server $version ($module)"
# nats-server's go.mod has no replace lines, so `go install pkg@version` works directly.
GOBIN=$tmp go install -trimpath -ldflags="-s -w" "$module@$version"
mv -f "$tmp/nats-server" "$bin/nats-server"
echo "$version" >"$stamp"
echo "nats-server $version built into $bin in $((SECONDS - start))s"
