#!/usr/bin/env bash
# Builds versitygw (Versity's S3 gateway; with its POSIX backend it is the S3
# server `esb up` embeds and the data-services tests run against) from its Go
# module, unmodified, into ~/.cache/esb/bin, once per machine: a second run
# finds the version stamp and prints "cached".
# Environment: VERSITYGW_VERSION (default v1.8.0, the version ESB is tested
# with), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
stamp=$bin/.versitygw.version
version=${VERSITYGW_VERSION:-v1.8.0}
pkg=github.com/versity/versitygw/cmd/versitygw

log() { echo "[build-versitygw] $*" >&2; }

mkdir -p "$bin" "$cache/build"
exec 9>"$cache/build/versitygw.lock"
flock 9

if [[ -x $bin/versitygw && -f $stamp && $(cat "$stamp") == "$version" ]]; then
  echo "versitygw $version cached in $bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (need the Go version versitygw's go.mod names)"; exit 1; }
# The machine's Go only: a go.mod asking for a newer one fails here instead of downloading a toolchain.
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local
start=$SECONDS
tmp=$(mktemp -d "$cache/build/versitygw.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building versitygw $version ($pkg)"
# versitygw's go.mod has no replace lines, so `go install pkg@version` works directly.
GOBIN=$tmp nice -n 10 go install -trimpath -ldflags="-s -w" "$pkg@$version"
mv -f "$tmp/versitygw" "$bin/versitygw"
echo "$version" >"$stamp"
echo "versitygw $version built into $bin in $((SECONDS - start))s"
