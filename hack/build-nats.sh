#!/usr/bin/env bash
# Builds nats-server (the JetStream broker the chart deploys for durable Event
# invocations; the gateway's NATS event store is tested against it) from its Go
# module, unmodified, into ~/.cache/esb/bin, once per machine: a second run
# finds the version stamp and prints "cached".
# Environment: NATS_VERSION (default v2.15.3, the version the gateway is tested
# with), ESB_CACHE_DIR (~/.cache/esb).
set -euo pipefail
source "$(dirname "$0")/lib/go-install.sh"
go_install_cached nats-server "${NATS_VERSION:-v2.15.3}" github.com/nats-io/nats-server/v2
