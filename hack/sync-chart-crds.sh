#!/usr/bin/env bash
# Copies the CRDs from crds/ (the source of truth) into charts/esb/crds/, where
# helm installs them before the chart's templates.
#   hack/sync-chart-crds.sh           copy
#   hack/sync-chart-crds.sh --check   fail when the chart's copies differ
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/crds
dst=$root/charts/esb/crds
check=false
[[ ${1:-} == --check ]] && check=true

shopt -s nullglob
files=("$src"/*.yaml)
((${#files[@]})) || { echo "sync-chart-crds: no CRDs in $src" >&2; exit 1; }

status=0
for f in "${files[@]}"; do
  name=$(basename "$f")
  if $check; then
    cmp -s "$f" "$dst/$name" || { echo "sync-chart-crds: charts/esb/crds/$name differs from crds/$name; run hack/sync-chart-crds.sh" >&2; status=1; }
  else
    mkdir -p "$dst"
    cp "$f" "$dst/$name"
    echo "charts/esb/crds/$name <- crds/$name"
  fi
done
# A CRD removed from crds/ must not linger in the chart.
for f in "$dst"/*.yaml; do
  name=$(basename "$f")
  [[ -f $src/$name ]] && continue
  if $check; then
    echo "sync-chart-crds: charts/esb/crds/$name has no source in crds/" >&2; status=1
  else
    rm -f "$f"; echo "removed charts/esb/crds/$name"
  fi
done
exit $status
