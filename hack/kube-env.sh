#!/usr/bin/env bash
# A real Kubernetes control plane for tests: etcd + kube-apiserver on loopback,
# with their own certificates, data and logs under DIR (no kubelet, no
# controller-manager: enough for CRDs, CEL validation, RBAC, leases, events).
# Usage: hack/kube-env.sh up|down|status DIR
#   up      starts both, waits for /readyz, writes DIR/kubeconfig and prints
#           `export ESB_TEST_...=...` lines on stdout (logs go to stderr)
#   down    stops both and kills anything left over from DIR
#   status  says whether each is running
# Binaries come from PATH or ~/.cache/esb/bin (hack/build-kubernetes.sh).
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 up|down|status DIR" >&2; exit 2; }
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
export PATH=$PATH:${ESB_CACHE_DIR:-$HOME/.cache/esb}/bin

log() { echo "[kube-env] $*" >&2; }

running() { [[ -f $dir/$1.pid ]] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

# Pids of etcd/kube-apiserver processes whose command line mentions this
# folder (leftovers of an earlier run whose pid file is gone); never matches
# by program name alone, and never other programs (an editor, `tail -f`).
pids_of_dir() {
  local p comm
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    [[ $comm == etcd || $comm == kube-apiserver ]] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$dir/" && echo "${p#/proc/}"
  done
  return 0
}

stop() { # name
  local f="$dir/$1.pid" pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  stop kube-apiserver
  stop etcd
  local left; left=$(pids_of_dir)
  if [[ -n $left ]]; then
    log "killing leftovers: $(echo $left)"
    kill -9 $left 2>/dev/null || true
  fi
}

free_ports() { # count
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_for() { # description, timeout seconds, pid-name, command...
  local what=$1 t=$2 name=$3; shift 3
  for ((i = 0; i < t * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    running "$name" || { log "$what exited; last lines of $dir/$name.log:"; tail -20 "$dir/$name.log" >&2; return 1; }
    sleep 0.2
  done
  log "$what did not become ready within ${t}s; last lines of $dir/$name.log:"; tail -20 "$dir/$name.log" >&2
  return 1
}

gen_pki() {
  local p=$dir/pki
  mkdir -p "$p"
  (
    cd "$p"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    ec ca.key
    openssl req -x509 -new -key ca.key -subj "/CN=esb-test-ca" -days 3650 -out ca.crt 2>/dev/null
    # Serving certificate: what clients on this machine and in-cluster names use.
    ec apiserver.key
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    # Admin client certificate: group system:masters bypasses RBAC.
    ec admin.key
    openssl req -new -key admin.key -subj "/O=system:masters/CN=esb-test-admin" -out admin.csr 2>/dev/null
    printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >admin.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile admin.ext -out admin.crt 2>/dev/null
    # Service-account token signing pair.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext ./*.srl
  )
}

write_kubeconfig() { # server
  local p=$dir/pki b64="base64 -w0"
  cat >"$dir/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: esb-test
    cluster:
      server: $1
      certificate-authority-data: $($b64 <"$p/ca.crt")
users:
  - name: esb-test-admin
    user:
      client-certificate-data: $($b64 <"$p/admin.crt")
      client-key-data: $($b64 <"$p/admin.key")
contexts:
  - name: esb-test
    context:
      cluster: esb-test
      user: esb-test-admin
      namespace: default
current-context: esb-test
YAML
  chmod 600 "$dir/kubeconfig"
}

up() {
  local b
  for b in etcd kube-apiserver; do
    command -v "$b" >/dev/null || { log "$b not found: run hack/build-kubernetes.sh (installs into ~/.cache/esb/bin)"; exit 1; }
  done
  if running kube-apiserver || running etcd; then log "already running in $dir; stopping it first"; down; fi
  trap 'log "start-up failed; stopping what started"; down' ERR

  gen_pki
  local etcd_port peer_port api_port
  read -r etcd_port peer_port api_port < <(free_ports 3)
  local etcd_url=http://127.0.0.1:$etcd_port p=$dir/pki

  rm -rf "$dir/etcd"
  # No fsync: a throw-away test store on a shared machine, speed over durability.
  setsid etcd --name esb-test --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "esb-test=http://127.0.0.1:$peer_port" --initial-cluster-state new \
    --unsafe-no-fsync --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) --log-level warn \
    >"$dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$dir/etcd.pid"
  log "etcd starting on $etcd_url (log $dir/etcd.log)"
  wait_for etcd 60 etcd curl -sf "$etcd_url/health"

  # Loopback advertise address: no endpoint reconciler (it rejects 127.0.0.1).
  # ServiceAccount admission off: no controller-manager creates default service accounts.
  setsid kube-apiserver \
    --etcd-servers "$etcd_url" --etcd-prefix /registry \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$p" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --disable-admission-plugins ServiceAccount \
    --profiling=false --v 1 \
    >"$dir/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >"$dir/kube-apiserver.pid"
  local server=https://127.0.0.1:$api_port
  log "kube-apiserver starting on $server (log $dir/kube-apiserver.log)"
  wait_for kube-apiserver 180 kube-apiserver \
    curl -sf --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" "$server/readyz"
  write_kubeconfig "$server"
  trap - ERR
  log "ready: kubectl --kubeconfig $dir/kubeconfig get ns"
  echo "export ESB_TEST_KUBECONFIG=$dir/kubeconfig"
  echo "export ESB_TEST_KUBE_SERVER=$server"
  echo "export ESB_TEST_KUBE_CA=$p/ca.crt"
  echo "export ESB_TEST_ETCD=$etcd_url"
}

case $cmd in
  up) up ;;
  down) down; log "stopped (state kept in $dir)" ;;
  status)
    for n in etcd kube-apiserver; do
      if running $n; then echo "$n: running"; else echo "$n: stopped"; fi
    done
    ;;
  *) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
