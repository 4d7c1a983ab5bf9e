#!/usr/bin/env bash
# Builds victoria-logs (the store for function logs: `esb up` starts it as its
# embedded default, the agent ships worker output to it, `esb logs` queries it,
# and the chart can deploy it) from its Go module, unmodified, into
# ~/.cache/esb/bin, once per machine: a second run finds the version stamp and
# prints "cached".
# Environment: VICTORIALOGS_VERSION (default v1.52.2, the version ESB is tested
# with), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail
source "$(dirname "$0")/lib/go-install.sh"
go_install_cached victoria-logs "${VICTORIALOGS_VERSION:-v1.52.2}" github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs
