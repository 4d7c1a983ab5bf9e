#!/usr/bin/env bash
# Builds the root file systems of ESB's managed Python runtimes (python3.13 from Debian trixie,
# python3.11 from Debian bookworm) into ${ESB_CACHE_DIR:-~/.cache/esb}/python-runtimes/<runtime>/rootfs,
# once per machine: a second run finds the input stamp and prints "cached".
#   - Debian packages (python3.X, python3-minimal, libstdc++6, ca-certificates) extracted by
#     mmdebstrap --variant=extract (root mode; SOURCE_DATE_EPOCH pinned), unmodified;
#   - the official runtime client awslambdaric and boto3/botocore from PyPI (manylinux wheels,
#     installed offline with pip --target into /var/runtime, as AWS's images carry them);
#   - every module precompiled (unchecked-hash .pyc: the image writer sets every mtime to 0, and
#     the sandbox user cannot write __pycache__, so timestamp .pyc would be recompiled per start).
# The resolved Debian and PyPI versions are written to rootfs/usr/share/esb/python-runtime.txt;
# the runtime image's fingerprint hashes every file, so another resolution makes another image.
# Usage: hack/build-python-runtime.sh [python3.13] [python3.11]   (default: both)
#        ESB_PYTHON_REFRESH=1 re-resolves even when cached.
set -euo pipefail

cache=${ESB_CACHE_DIR:-$HOME/.cache/esb}
root_dir=$cache/python-runtimes
# Bump when this script's output changes; part of the stamp.
script_version=2
awslambdaric_version=${AWSLAMBDARIC_VERSION:-4.2.2}
boto3_version=${BOTO3_VERSION:-1.44.8}
mirror=${ESB_DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "[build-python-runtime] $*" >&2; }
# pip only downloads wheels and unpacks them into the target (never into the host's Python).
pip=${PIP:-python3 -m pip}

runtimes=("$@")
((${#runtimes[@]})) || runtimes=(python3.13 python3.11)
mkdir -p "$root_dir" "$cache/build"
exec 9>"$cache/build/python-runtime.lock"
flock 9

for runtime in "${runtimes[@]}"; do
  case $runtime in
    python3.13) suite=trixie ;;
    python3.11) suite=bookworm ;;
    *) log "unknown runtime $runtime (expected python3.13 or python3.11)"; exit 2 ;;
  esac
  py=${runtime#python}
  dest=$root_dir/$runtime
  stamp="$script_version $suite $runtime awslambdaric==$awslambdaric_version boto3==$boto3_version $mirror"
  if [[ -z ${ESB_PYTHON_REFRESH:-} && -f $dest/.stamp && $(cat "$dest/.stamp") == "$stamp" ]]; then
    echo "$runtime cached in $dest/rootfs"
    continue
  fi
  command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing: run hack/install-deps.sh"; exit 1; }
  $pip --version >/dev/null || { log "pip is missing ($pip): run hack/install-deps.sh"; exit 1; }
  start=$SECONDS
  tmp=$(mktemp -d "$cache/build/python-$runtime.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  rootfs=$tmp/rootfs
  log "$runtime: Debian $suite packages (mmdebstrap --variant=extract)"
  # Merged /usr as debootstrap makes it (mmdebstrap's own setup hook: bookworm's packages still
  # ship /lib, trixie's do not); the extract variant runs setup and extract hooks only, and the
  # extract hook records the resolved versions while the .debs are still in the apt cache.
  SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --mode=root --variant=extract \
    --include="$runtime,python3-minimal,libstdc++6,ca-certificates" \
    --skip=output/dev \
    --setup-hook=/usr/share/mmdebstrap/hooks/merged-usr/setup00.sh \
    --extract-hook='ls "$1"/var/cache/apt/archives/ | sed -n "s/\.deb$//p" | sort >"$1"/.debs' \
    "$suite" "$rootfs" "$mirror" >&2
  # A CA bundle as update-ca-certificates would make it (maintainer scripts do not run here).
  mkdir -p "$rootfs/etc/ssl/certs"
  cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"

  log "$runtime: awslambdaric $awslambdaric_version, boto3 $boto3_version (PyPI wheels)"
  wheels=$tmp/wheels
  pip_target=(--only-binary :all: --python-version "$py" --implementation cp --abi "cp${py/./}"
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any)
  $pip download --quiet --disable-pip-version-check --dest "$wheels" "${pip_target[@]}" \
    "awslambdaric==$awslambdaric_version" "boto3==$boto3_version" >&2
  $pip install --quiet --disable-pip-version-check --no-index --find-links "$wheels" --no-compile --no-warn-conflicts --root-user-action=ignore \
    --target "$rootfs/var/runtime" "${pip_target[@]}" \
    "awslambdaric==$awslambdaric_version" "boto3==$boto3_version" >&2
  # pip's console scripts and caches are not part of a runtime.
  rm -rf "$rootfs/var/runtime/bin" "$rootfs"/var/runtime/*.dist-info/RECORD

  log "$runtime: precompiling (unchecked-hash .pyc)"
  chroot "$rootfs" "/usr/bin/$runtime" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    "/usr/lib/$runtime" /var/runtime >/dev/null

  mkdir -p "$rootfs/usr/share/esb"
  {
    echo "# $runtime root file system built by hack/build-python-runtime.sh (Debian $suite)"
    sed 's/^/deb /' "$rootfs/.debs"
    ls "$wheels" | sed 's/^/wheel /' | sort
  } >"$rootfs/usr/share/esb/python-runtime.txt"
  rm -f "$rootfs/.debs"
  # apt's state from the extraction is not part of the runtime.
  rm -rf "$rootfs"/var/cache/apt "$rootfs"/var/lib/apt "$rootfs"/var/log/apt

  rm -rf "$dest"
  mkdir -p "$dest"
  mv "$rootfs" "$dest/rootfs"
  echo "$stamp" >"$dest/.stamp"
  rm -rf "$tmp"
  trap - EXIT
  echo "$runtime built into $dest/rootfs in $((SECONDS - start))s ($(du -sm "$dest/rootfs" | cut -f1) MB)"
done
