# Sourced by hack/build-*.sh: builds one Go program from its published module, unmodified, into
# ~/.cache/esb/bin, once per machine (a version stamp; a second run prints "cached"; a lock file
# keeps two builds of the same program apart).
#   go_install_cached NAME VERSION PACKAGE [WHY_NO_REPLACE]
# NAME is the binary's file name, PACKAGE the module path of its main package, installed with
# `go install PACKAGE@VERSION` (only possible when the module's go.mod has no replace lines).
# Environment: ESB_CACHE_DIR (~/.cache/esb).

go_install_cached() {
  local name=$1 version=$2 package=$3
  local cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
  local bin=$cache/bin
  local stamp=$bin/.$name.version
  mkdir -p "$bin" "$cache/build"
  exec 9>"$cache/build/$name.lock"
  flock 9
  if [[ -x $bin/$name && -f $stamp && $(cat "$stamp") == "$version" ]]; then
    echo "$name $version cached in $bin"
    return 0
  fi
  command -v go >/dev/null || { echo "[build-$name] go is not installed (need the Go version $package's go.mod names)" >&2; return 1; }
  local start=$SECONDS tmp
  tmp=$(mktemp -d "$cache/build/$name.XXXXXX")
  echo "[build-$name] building $name $version ($package)" >&2
  # The machine's Go only: a go.mod asking for a newer one fails here instead of downloading a toolchain.
  if ! GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOBIN=$tmp \
    go install -trimpath -ldflags="-s -w" "$package@$version"; then
    rm -rf "$tmp"
    return 1
  fi
  mv -f "$tmp/$name" "$bin/$name"
  rm -rf "$tmp"
  echo "$version" >"$stamp"
  echo "$name $version built into $bin in $((SECONDS - start))s"
}
