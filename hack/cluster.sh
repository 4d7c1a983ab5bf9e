#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this Linux machine, without Docker:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy (built from their Go modules by hack/build-kubernetes.sh node), a
# containerd of the cluster's own with its CRI plugin (never the system daemon),
# a pod network on a bridge of its own, and an ingress controller on loopback.
#
# Usage: hack/cluster.sh up|down|status|env [--dir DIR]
#   up      starts everything (idempotent: a running cluster is left as it is) and
#           prints KUBECONFIG=<path> and INGRESS=http://127.0.0.1:<port> on lines of their own
#   down    stops everything and removes every process, interface, mount, iptables rule,
#           file and sysctl change that `up` made (idempotent)
#   status  says what runs;  env  prints the two lines of `up` again
# Environment: ESB_CLUSTER_DIR (default /var/lib/esb/cluster), ESB_CLUSTER_INGRESS_PORT
# (default 9080), ESB_CACHE_DIR (~/.cache/esb: the binaries). One cluster per machine.
# Pods have no route off this machine: the bridge forwards only to itself.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}; shift || true
dir=${ESB_CLUSTER_DIR:-/var/lib/esb/cluster}
nodes=${ESB_CLUSTER_NODES:-1}
node=1
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
log() { echo "[cluster] $*" >&2; }
[[ -n $cmd ]] || { sed -n '8,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "hack/cluster.sh must run as root (kubelet, containerd, bridges, iptables)" >&2; exit 1; }
if [[ $cmd == up ]]; then mkdir -p "$dir"; fi
if [[ ! -d $dir ]]; then
  [[ $cmd == down ]] && { log "no cluster in $dir: nothing to stop"; exit 0; }
  echo "no cluster in $dir" >&2; exit 1
fi
dir=$(cd "$dir" && pwd)
export PATH=${ESB_CACHE_DIR:-$HOME/.cache/esb}/bin:$PATH:/usr/sbin:/sbin

[[ $nodes =~ ^[12]$ ]] || { echo "--nodes must be 1 or 2" >&2; exit 2; }
bridge=esb-k8s0
cluster_cidr=10.244.0.0/16
service_cidr=10.96.0.0/16
service_ip=10.96.0.1
api_url=https://10.244.0.1:6443
ingress_port=${ESB_CLUSTER_INGRESS_PORT:-9080}
containerd_sock=$dir/run/containerd.sock
cni_bin_dir=/usr/lib/cni
pause_image=esb.local/pause:1
lock=/run/esb-cluster.dir

# What differs between the nodes. Node 1 is this machine's network namespace; node 2
# (--nodes 2) a network namespace of its own (esb-node2) on the cluster bridge, whose
# pods live on a bridge inside it, routed through this machine. pfx: process names.
node_vars() {
  node=$1
  if [[ $node == 1 ]]; then
    node_name=esb-node node_ip=10.244.0.1 pod_cidr=10.244.0.0/24 pod_gateway=10.244.0.1 cgroup_root=/ pfx=""
  else
    node_name=esb-node$node node_ip=10.244.0.$node pod_cidr=10.244.$((node - 1)).0/24
    pod_gateway=10.244.$((node - 1)).1 cgroup_root=/esb-node$node pfx=node$node-
  fi
  pod_range_start=${pod_cidr%.0/24}.10
}
node_vars "$node"
# Host settings kubelet and kube-proxy may rewrite: saved by `up`, restored by `down`.
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait)
procs=(ingress kube-proxy kube-scheduler kube-controller-manager kubelet containerd kube-apiserver etcd)
((nodes < 2)) && [[ ! -d $dir/nodes/esb-node2 ]] || procs+=(node2-kube-proxy node2-kubelet node2-containerd)

# shellcheck source=hack/cluster/pki.sh
source "$here/cluster/pki.sh"
# shellcheck source=hack/cluster/configs.sh
source "$here/cluster/configs.sh"
# shellcheck source=hack/cluster/teardown.sh
source "$here/cluster/teardown.sh"

running() { [[ -f $dir/pids/$1 ]] && kill -0 "$(cat "$dir/pids/$1")" 2>/dev/null; }

start() { # name, command...: runs in its own session, log in $dir/logs/<name>.log
  local name=$1; shift
  mkdir -p "$dir/pids" "$dir/logs"
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name"
}

wait_for() { # what, seconds, process name, command...
  local what=$1 t=$2 name=$3; shift 3
  for ((i = 0; i < t * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    running "$name" || { log "$what exited; last lines of $dir/logs/$name.log:"; tail -20 "$dir/logs/$name.log" >&2; return 1; }
    sleep 0.2
  done
  log "$what not ready after ${t}s; last lines of $dir/logs/$name.log:"; tail -20 "$dir/logs/$name.log" >&2
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kc() { kubectl --kubeconfig "$dir/kubeconfig" "$@"; }

print_env() {
  echo "KUBECONFIG=$dir/kubeconfig"
  echo "INGRESS=http://127.0.0.1:$ingress_port"
}

check_prerequisites() {
  local b missing=()
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl skipper; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  for b in containerd runc ctr gcc iptables ip python3; do command -v "$b" >/dev/null || missing+=("$b"); done
  [[ -x $cni_bin_dir/bridge && -x $cni_bin_dir/host-local && -x $cni_bin_dir/portmap ]] || missing+=("CNI plugins in $cni_bin_dir")
  ((${#missing[@]} == 0)) || { log "missing: ${missing[*]} (make cluster-up builds and installs them)"; exit 1; }
  [[ -f $here/../runtime/dist/image/oci-image-writer.js ]] || { log "run make build first (the pause image uses runtime/dist)"; exit 1; }
}

# Claims the machine for this cluster (the bridge, iptables names and sysctls are
# machine-wide): atomically, so that two starts at once cannot both pass.
claim_machine() {
  local owner
  exec 8>"$lock.flock"
  flock 8
  owner=$(cat "$lock" 2>/dev/null || true)
  if [[ -n $owner && $owner != "$dir" && -d $owner ]]; then
    flock -u 8
    log "another ESB cluster runs from $owner; stop it first: hack/cluster.sh down --dir $owner"; exit 1
  fi
  if [[ $owner != "$dir" ]] && (echo >"/dev/tcp/127.0.0.1/$ingress_port") 2>/dev/null; then
    flock -u 8
    log "127.0.0.1:$ingress_port is taken; choose another port with ESB_CLUSTER_INGRESS_PORT"; exit 1
  fi
  echo "$dir" >"$lock"
  touch "$dir/.esb-cluster"
  flock -u 8
}

save_host_state() {
  # Saved once: a second `up` must not record values the first one changed.
  [[ -f $dir/host/sysctls ]] && return 0
  mkdir -p "$dir/host"
  local s
  for s in "${sysctls[@]}"; do
    sysctl -n "$s" >/dev/null 2>&1 && echo "$s=$(sysctl -n "$s")" >>"$dir/host/sysctls"
  done
  for s in /var/lib/kubelet /var/log/containers /var/log/pods; do [[ -e $s ]] || echo "$s" >>"$dir/host/created"; done
  touch "$dir/host/created"
}

setup_network() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$node_ip/24" dev "$bridge"
  fi
  ip link set "$bridge" up
  # Forwarding on the cluster bridge only (pod -> service -> pod), and nothing
  # forwarded from it to any other interface: pods cannot leave the machine.
  sysctl -qw "net.ipv4.conf.$bridge.forwarding=1"
  iptables -N ESB-LOCAL-CLUSTER 2>/dev/null || iptables -F ESB-LOCAL-CLUSTER
  iptables -A ESB-LOCAL-CLUSTER ! -o "$bridge" -j DROP
  iptables -C FORWARD -i "$bridge" -j ESB-LOCAL-CLUSTER 2>/dev/null || iptables -I FORWARD -i "$bridge" -j ESB-LOCAL-CLUSTER
}

# The agent pod mounts the containerd socket's folder (HostToContainer) and its
# network-namespace folder (Bidirectional); the kubelet requires those host folders
# to be shared mounts, as they are on systemd machines. Here: shared bind mounts.
share_folders() {
  local d
  for d in "$dir/run" "$dir/netns"; do
    mkdir -p "$d"
    mountpoint -q "$d" || mount --bind "$d" "$d"
    mount --make-shared "$d"
  done
}

build_pause_image() {
  mkdir -p "$dir/images"
  [[ -f $dir/images/pause.oci.tar ]] && return 0
  gcc -static -Os -o "$dir/images/pause" "$here/cluster/pause.c"
  strip "$dir/images/pause" 2>/dev/null || true
  node "$here/cluster/pause-image.mjs" "$dir/images/pause" "$dir/images/pause.oci.tar" "$pause_image"
}

start_control_plane() {
  local etcd_port peer_port p=$dir/pki
  etcd_port=$(free_port); peer_port=$(free_port)
  start etcd etcd --name esb-local --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "esb-local=http://127.0.0.1:$peer_port" --log-level warn
  wait_for etcd 60 etcd curl -sf "http://127.0.0.1:$etcd_port/health"
  start kube-apiserver kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$node_ip" --advertise-address "$node_ip" --secure-port 6443 \
    --cert-dir "$p" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range "$service_cidr" --allow-privileged=true \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --requestheader-client-ca-file "$p/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-extra-headers-prefix X-Remote-Extra- --requestheader-group-headers X-Remote-Group \
    --requestheader-username-headers X-Remote-User \
    --proxy-client-cert-file "$p/front-proxy-client.crt" --proxy-client-key-file "$p/front-proxy-client.key" \
    --profiling=false --v 1
  wait_for kube-apiserver 180 kube-apiserver kc get --raw /readyz
  start kube-controller-manager kube-controller-manager --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --use-service-account-credentials --leader-elect=false --secure-port 0 \
    --flex-volume-plugin-dir "$dir/kubelet/volume-plugins" --profiling=false --v 1
  start kube-scheduler kube-scheduler --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --leader-elect=false --secure-port 0 --profiling=false --v 1
}

start_node() {
  start "${pfx}containerd" containerd --config "$dir/containerd/config.toml"
  wait_for containerd 30 "${pfx}containerd" ctr --address "$containerd_sock" version
  ctr --address "$containerd_sock" -n k8s.io images import "$dir/images/pause.oci.tar" >/dev/null
  kubelet_healthz_port=$(free_port)
  write_kubelet_config
  start "${pfx}kubelet" kubelet --config "$dir/kubelet/config.yaml" --kubeconfig "$dir/kubelet-$node_name.kubeconfig" \
    --root-dir "$dir/kubelet/root" --cert-dir "$dir/kubelet/pki" --hostname-override "$node_name" \
    --node-ip "$node_ip" --container-runtime-endpoint "unix://$containerd_sock" --v 1
  proxy_healthz_port=$(free_port); proxy_metrics_port=$(free_port)
  write_kube_proxy_config
  start "${pfx}kube-proxy" kube-proxy --config "$dir/kube-proxy-$node_name.yaml"
  wait_for "node $node_name Ready" 120 "${pfx}kubelet" kc wait --for=condition=Ready "node/$node_name" --timeout=1s
}

# The second node's network: namespace esb-node2 with eth0 on the cluster bridge
# (10.244.0.2), its pods' bridge inside it (10.244.1.0/24, routed by this machine).
setup_node_network() {
  local ns=esb-node$node host_if=esb-n${node}h
  ip netns add "$ns" 2>/dev/null || true
  if ! ip link show "$host_if" >/dev/null 2>&1; then
    ip link add "$host_if" type veth peer name eth0 netns "$ns"
    ip link set "$host_if" master "$bridge" up
  fi
  ip -n "$ns" link set lo up
  ip -n "$ns" addr replace "$node_ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route replace default via 10.244.0.1
  ip -n "$ns" link show "$bridge" >/dev/null 2>&1 || ip -n "$ns" link add "$bridge" type bridge
  ip -n "$ns" addr replace "$pod_gateway/24" dev "$bridge"
  ip -n "$ns" link set "$bridge" up
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$ns" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  ip route replace "$pod_cidr" via "$node_ip" dev "$bridge"
}

# Runs inside the second node's namespaces (see up_node): its own folders appear at
# the cluster's paths, so the chart's one set of host paths serves both nodes.
node_mounts() {
  local n=$dir/nodes/$node_name d
  for d in run netns cni containerd runc esb-agent kubelet; do
    mkdir -p "$n/$d" "$dir/$d"
    # Node 1's shared bind mounts (share_folders) are replaced, not stacked: containerd
    # checks the propagation of the first mount it finds at a path.
    while mountpoint -q "$dir/$d"; do umount "$dir/$d"; done
    mount --bind "$n/$d" "$dir/$d"
  done
  mount --make-shared "$dir/run"
  mount --make-shared "$dir/netns"
  mkdir -p /var/lib/kubelet /var/log/containers "$n/var-log-containers"
  mount -t tmpfs -o size=16m tmpfs /var/lib/kubelet   # kubelet's device-plugin socket
  mount --bind "$n/var-log-containers" /var/log/containers
}

# The kubelet of node 2 keeps its pods under cgroup /esb-node2 (node 1's under /kubepods),
# which must exist in every hierarchy; cpuset children start empty, so copy the parent's.
node_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d ${h}esb-node$node ]] || mkdir "${h}esb-node$node" 2>/dev/null || continue
    if [[ -f ${h}cpuset.cpus ]]; then
      cat "${h}cpuset.cpus" >"${h}esb-node$node/cpuset.cpus"
      cat "${h}cpuset.mems" >"${h}esb-node$node/cpuset.mems"
    fi
  done
}

# `hack/cluster.sh node-up --node N`, run by up_node inside that node's namespaces.
node_up() {
  node_mounts
  node_cgroups
  write_containerd_config
  write_cni_config
  start_node
}

up_node() { # N
  node_vars "$1"
  log "starting node $node_name (network namespace esb-node$node, pods $pod_cidr)"
  setup_node_network
  nsenter --net="/run/netns/esb-node$node" unshare --mount --propagation slave \
    "$here/cluster.sh" node-up --dir "$dir" --node "$node"
  node_vars 1
}

# Skipper (github.com/zalando/skipper) as the ingress controller: one Go binary,
# built unmodified from its module, on loopback only, reading the Ingresses of
# class "esb" with a list-only ServiceAccount of its own and proxying straight to
# the pods' addresses. It cannot read a kubeconfig: it gets the API URL, a token
# and the cluster CA. Timeouts allow Lambda's 900 s.
start_ingress() {
  kc apply -f "$here/cluster/ingress-rbac.yaml" >/dev/null
  kc -n kube-system create token esb-ingress --duration 8760h >"$dir/ingress.token"
  chmod 600 "$dir/ingress.token"
  start ingress env SSL_CERT_FILE="$dir/pki/ca.crt" skipper -kubernetes -kubernetes-url "$api_url" \
    -kubernetes-token-file "$dir/ingress.token" -kubernetes-ingress-class '^esb$' \
    -enable-kubernetes-endpointslices -kubernetes-https-redirect=false \
    -address "127.0.0.1:$ingress_port" -support-listener "127.0.0.1:$(free_port)" \
    -metrics-listener "127.0.0.1:$(free_port)" -response-header-timeout-backend 910s \
    -write-timeout-server 920s -wait-for-healthcheck-interval 0 -application-log-level WARN
  wait_for "the ingress controller" 60 ingress curl -s -o /dev/null "http://127.0.0.1:$ingress_port/"
}

up() {
  if [[ -f $lock && $(cat "$lock") == "$dir" ]] && all_running && kc get --raw /readyz >/dev/null 2>&1; then
    log "already running in $dir"
    print_env
    return 0
  fi
  check_prerequisites
  claim_machine
  if [[ -d $dir/pids ]]; then
    log "cleaning up an earlier, partial start in $dir"
    down_all
    mkdir -p "$dir"
    claim_machine
  fi
  local t0=$SECONDS
  trap 'log "start-up failed; undoing it (logs are in $dir/logs until then)"; down_all' ERR
  save_host_state
  setup_network
  share_folders
  make_pki
  write_containerd_config
  write_cni_config
  write_esb_values
  build_pause_image
  log "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler"
  start_control_plane
  log "control plane ready after $((SECONDS - t0))s; starting containerd, kubelet, kube-proxy"
  start_node
  log "node $node_name Ready after $((SECONDS - t0))s"
  ((nodes < 2)) || up_node 2
  log "starting the ingress controller"
  start_ingress
  trap - ERR
  log "cluster up in $((SECONDS - t0))s (logs: $dir/logs; stop: make cluster-down)"
  print_env
}

all_running() { local p; for p in "${procs[@]}"; do running "$p" || return 1; done; }

case $cmd in
  up) up ;;
  node-up) node_up ;;
  down) down_all; log "stopped; the machine is as it was before up" ;;
  env) print_env ;;
  status)
    for p in "${procs[@]}"; do if running "$p"; then echo "$p: running"; else echo "$p: stopped"; fi; done
    ;;
  *) echo "unknown command: $cmd (up|down|status|env)" >&2; exit 2 ;;
esac
