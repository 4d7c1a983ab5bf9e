#!/usr/bin/env bash
# Starts (up) or stops (down) ESB's test environment: real components with
# their own state under one folder, never the machine's system daemons.
#   containerd  own root/state/socket   ($DIR/containerd/containerd.sock)
#   containerd2 containerd 2.x (hack/build-containerd.sh), own root/state/socket
#               ($DIR/containerd2/containerd.sock): the agent's conformance suite runs on both
#   registry    docker-registry on 127.0.0.1:<free port>
#   kube        etcd + kube-apiserver on loopback, kubeconfig at $DIR/kube/kubeconfig
# Usage: hack/dev-env.sh up|down|status --dir DIR [--only containerd,containerd2,registry,kube,podman]
#   podman      Docker-compatible API (docker-mode tests) at $DIR/podman/podman.sock
# `up` writes $DIR/env.sh (shell exports) and $DIR/env.json (for tests) and
# prints where everything is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}; shift || true
dir=""; only="containerd,containerd2,registry,kube,podman"
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 up|down|status --dir DIR [--only containerd,containerd2,registry,kube,podman]" >&2; exit 2; }
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
want() { [[ ",$only," == *",$1,"* ]]; }
log() { echo "[dev-env] $*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # description, timeout seconds, command...
  local what=$1 t=$2; shift 2
  for ((i = 0; i < t * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "$what did not come up within ${t}s"; return 1
}

start_bg() { # name, logfile, command... ; records pid in $dir/<name>.pid
  local name=$1 logf=$2; shift 2
  setsid "$@" >"$logf" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

stop_pid() {
  local f="$dir/$1.pid"
  [[ -f $f ]] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

up_containerd() {
  local c="$dir/containerd"
  mkdir -p "$c/root" "$c/state"
  cat >"$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = "$c/debug.sock"
TOML
  start_bg containerd "$c/containerd.log" containerd --config "$c/config.toml"
  wait_for containerd 30 ctr --address "$c/containerd.sock" version
  echo "export ESB_TEST_CONTAINERD_SOCKET=$c/containerd.sock" >>"$dir/env.sh"
  log "containerd: socket $c/containerd.sock (ctr --address $c/containerd.sock -n esb ...), log $c/containerd.log"
}

# containerd 2.x from hack/build-containerd.sh. Its folder (the daemon and its v2
# shim) comes first on PATH for this process only: containerd finds its shim on
# PATH, and every other containerd on the machine keeps Debian's 1.6 shim.
up_containerd2() {
  local c="$dir/containerd2" cbin="${ESB_CACHE_DIR:-$HOME/.cache/esb}/containerd2/bin"
  [[ -x $cbin/containerd && -x $cbin/containerd-shim-runc-v2 ]] ||
    { log "containerd 2.x not found in $cbin: run hack/build-containerd.sh (make containerd2)"; return 1; }
  mkdir -p "$c/root" "$c/state"
  # Config version 3 is what every 2.x reads (2.4 migrates it to its version 4 with a warning).
  # No CRI (its images/runtime parts and the pod sandbox controller need it), no NRI (its
  # socket is machine-wide, /var/run/nri), and the opt plugin's folder under $c, not /opt.
  cat >"$c/config.toml" <<TOML
version = 3
root = "$c/root"
state = "$c/state"
imports = []
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.nri.v1.nri"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = "$c/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
TOML
  start_bg containerd2 "$c/containerd.log" env PATH="$cbin:$PATH" "$cbin/containerd" --config "$c/config.toml"
  wait_for containerd2 30 ctr --address "$c/containerd.sock" version
  echo "export ESB_TEST_CONTAINERD2_SOCKET=$c/containerd.sock" >>"$dir/env.sh"
  # For tests that run a containerd 2.x of their own (its shim is in the same folder).
  echo "export ESB_TEST_CONTAINERD2_BIN=$cbin/containerd" >>"$dir/env.sh"
  log "containerd2: $("$cbin/containerd" --version | awk '{print $3}'), socket $c/containerd.sock, log $c/containerd.log"
}

up_registry() {
  local r="$dir/registry" port; port=$(free_port)
  mkdir -p "$r/data"
  cat >"$r/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $r/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
  start_bg registry "$r/registry.log" docker-registry serve "$r/config.yml"
  wait_for registry 30 curl -sf "http://127.0.0.1:$port/v2/"
  echo "export ESB_TEST_REGISTRY=127.0.0.1:$port" >>"$dir/env.sh"
  log "registry: http://127.0.0.1:$port, log $r/registry.log"
}

up_podman() {
  local reg; reg=$( (source "$dir/env.sh"; echo "${ESB_TEST_REGISTRY:-}") )
  "$here/podman-env.sh" up "$dir/podman" "$reg" >>"$dir/env.sh"
}

up_kube() {
  "$here/kube-env.sh" up "$dir/kube" >>"$dir/env.sh"
}

down_containerd() { # name: containerd or containerd2 (pid file, folder)
  local name=$1
  [[ -f $dir/$name.pid ]] || return 0
  local sock="$dir/$name/containerd.sock"
  # Kill any task left behind so shims exit and nothing outlives the environment.
  if ctr --address "$sock" version >/dev/null 2>&1; then
    for ns in $(ctr --address "$sock" namespaces ls -q 2>/dev/null); do
      for t in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
        ctr --address "$sock" -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
        ctr --address "$sock" -n "$ns" tasks delete -f "$t" >/dev/null 2>&1 || true
      done
    done
  fi
  stop_pid "$name"
  # Shims of this daemon only (1.6 and 2.x start them as `-namespace NS -id ID -address SOCK`).
  pkill -9 -f "containerd-shim-runc-v2 -namespace [^ ]+ (-id [^ ]+ )?-address $sock( |\$)" 2>/dev/null || true
  # Snapshot mounts of leftover containers would keep the folder busy.
  grep -o " $dir/$name/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

write_json() {
  # env.json: the same facts for the jest global setup.
  (set +u; source "$dir/env.sh"; python3 - "$dir" <<'PY'
import json, os, sys
keys = [k for k in os.environ if k.startswith("ESB_TEST_")]
json.dump({k: os.environ[k] for k in sorted(keys)}, open(os.path.join(sys.argv[1], "env.json"), "w"), indent=2)
PY
  )
}

case $cmd in
  up)
    : >"$dir/env.sh"
    echo "export ESB_TEST_ENV_DIR=$dir" >>"$dir/env.sh"
    trap 'log "start-up failed; stopping what started"; "$0" down --dir "$dir" >/dev/null 2>&1 || true' ERR
    want containerd && up_containerd
    want containerd2 && up_containerd2
    want registry && up_registry
    want kube && up_kube
    want podman && up_podman
    trap - ERR
    write_json
    log "environment up: source $dir/env.sh"
    cat "$dir/env.sh"
    ;;
  down)
    [[ -x $here/kube-env.sh && -d $dir/kube ]] && "$here/kube-env.sh" down "$dir/kube" || true
    "$here/podman-env.sh" down "$dir/podman" || true
    stop_pid registry
    down_containerd containerd2
    down_containerd containerd
    log "environment in $dir stopped"
    ;;
  status)
    for n in containerd containerd2 registry; do
      if [[ -f $dir/$n.pid ]] && kill -0 "$(cat "$dir/$n.pid")" 2>/dev/null; then echo "$n: running"; else echo "$n: stopped"; fi
    done
    [[ -x $here/kube-env.sh ]] && "$here/kube-env.sh" status "$dir/kube" || true
    ;;
  *) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
