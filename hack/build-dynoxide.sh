#!/usr/bin/env bash
# Builds Dynoxide (the DynamoDB-API server `esb up` embeds and the data-services
# tests run against; SQLite-backed, keeps data across restarts) from its
# crates.io package `dynoxide-rs`, unmodified, with the versions its lock file
# pins, into ~/.cache/esb/bin, once per machine: a second run finds the version
# stamp and prints "cached".
# Environment: DYNOXIDE_VERSION (default 3.2.0, the version ESB is tested with),
# ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail

cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
bin=$cache/bin
stamp=$bin/.dynoxide.version
version=${DYNOXIDE_VERSION:-3.2.0}
crate=dynoxide-rs
# SQLite compiled in (no system library needed), the HTTP server and the CLI;
# the default features add what a local server does not use.
features=native-sqlite,http-server,cli

log() { echo "[build-dynoxide] $*" >&2; }

mkdir -p "$bin" "$cache/build"
exec 9>"$cache/build/dynoxide.lock"
flock 9

if [[ -x $bin/dynoxide && -f $stamp && $(cat "$stamp") == "$version" ]]; then
  echo "dynoxide $version cached in $bin"
  exit 0
fi

# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH.
[[ -d $HOME/.cargo/bin ]] && PATH=$PATH:$HOME/.cargo/bin
command -v cargo >/dev/null || { log "cargo is not installed (Dynoxide is a Rust crate; rustc >= 1.85)"; exit 1; }
start=$SECONDS
tmp=$(mktemp -d "$cache/build/dynoxide.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building $crate $version (features $features)"
# --locked: the dependency versions the published Cargo.lock pins, not whatever is newest today.
# nice: the build takes both cores for minutes; interactive work and tests keep priority.
CARGO_TARGET_DIR=$tmp/target nice -n 10 cargo install --locked --root "$tmp/root" \
  --version "$version" --no-default-features --features "$features" "$crate"
mv -f "$tmp/root/bin/dynoxide" "$bin/dynoxide"
echo "$version" >"$stamp"
echo "dynoxide $version built into $bin in $((SECONDS - start))s"
