#!/usr/bin/env bash
# Starts/stops Podman's Docker-compatible API with its own storage under DIR:
# the stand-in for a Docker engine in docker-mode tests (this machine has none).
# Usage: hack/podman-env.sh up|down DIR [insecure-registry host:port]
# `up` prints `export ESB_TEST_DOCKER_SOCKET=...` on stdout; logs go to stderr.
set -euo pipefail
cmd=$1 dir=$2 registry=${3:-}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
pm() { CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_REGISTRIES_CONF="$dir/registries.conf" \
  podman --root "$dir/root" --runroot "$dir/runroot" "$@"; }
case $cmd in
  up)
    mkdir -p "$dir/net" "$dir/root" "$dir/runroot"
    # default_ulimits = []: this kernel refuses podman's default nofile/nproc ulimits.
    cat >"$dir/containers.conf" <<CONF
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
runtime = "runc"
tmp_dir = "$dir/tmp"
[network]
network_config_dir = "$dir/net"
CONF
    {
      echo 'unqualified-search-registries = []'
      if [[ -n $registry ]]; then printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$registry"; fi
    } >"$dir/registries.conf"
    # From its own folder: conmon drops files (e.g. "oom") into its working directory.
    cd "$dir"
    CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_REGISTRIES_CONF="$dir/registries.conf" setsid \
      podman --root "$dir/root" --runroot "$dir/runroot" system service --time 0 "unix://$dir/podman.sock" \
      >"$dir/podman.log" 2>&1 </dev/null &
    echo $! >"$dir/podman.pid"
    for _ in $(seq 100); do curl -sf --unix-socket "$dir/podman.sock" http://d/_ping >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf --unix-socket "$dir/podman.sock" http://d/_ping >/dev/null || { echo "podman service did not start: $dir/podman.log" >&2; exit 1; }
    echo "[podman-env] Docker-compatible API at $dir/podman.sock, log $dir/podman.log" >&2
    echo "export ESB_TEST_DOCKER_SOCKET=$dir/podman.sock"
    ;;
  down)
    [[ -f $dir/containers.conf ]] || exit 0
    pm rm -af -t 0 >/dev/null 2>&1 || true
    for n in $(pm network ls -q 2>/dev/null); do [[ $n == podman ]] || pm network rm -f "$n" >/dev/null 2>&1 || true; done
    if [[ -f $dir/podman.pid ]]; then kill "$(cat "$dir/podman.pid")" 2>/dev/null || true; rm -f "$dir/podman.pid"; fi
    grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    ;;
  *) echo "usage: $0 up|down DIR [registry]" >&2; exit 2 ;;
esac
