#!/usr/bin/env bash
# Builds versitygw (Versity's S3 gateway; with its POSIX backend it is the S3
# server `esb up` embeds and the data-services tests run against) from its Go
# module, unmodified, into ~/.cache/esb/bin, once per machine: a second run
# finds the version stamp and prints "cached". versitygw's go.mod has no
# replace lines, so `go install pkg@version` works directly.
# Environment: VERSITYGW_VERSION (default v1.8.0, the version ESB is tested
# with), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail
source "$(dirname "$0")/lib/go-install.sh"
go_install_cached versitygw "${VERSITYGW_VERSION:-v1.8.0}" github.com/versity/versitygw/cmd/versitygw
