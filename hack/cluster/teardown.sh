# `hack/cluster.sh down`: undoes everything `up` did (sourced; needs the variables set there).
# Every step tolerates a cluster that never started or is half-gone.

stop_proc() { # name...: SIGTERM to all at once, then SIGKILL whatever still runs after 10 s
  local name pid pids=()
  for name in "$@"; do
    [[ -f $dir/pids/$name ]] || continue
    pid=$(cat "$dir/pids/$name")
    kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$dir/pids/$name"
  done
  local alive
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

# Every task in the cluster's containerd (pods in k8s.io, ESB's workers in esb):
# thawed (a frozen task ignores SIGKILL), killed and deleted with its container. `tasks
# resume` thaws tasks containerd paused; the agent freezes its workers by cgroup (containerd
# lists them RUNNING, resume refuses) and `kill -a` thaws those: runc freezes, signals, thaws.
remove_containers() { # socket
  local c="ctr --address $1" ns t
  $c version >/dev/null 2>&1 || return 0
  for ns in $($c namespaces ls -q 2>/dev/null); do
    for t in $($c -n "$ns" tasks ls -q 2>/dev/null); do
      $c -n "$ns" tasks resume "$t" >/dev/null 2>&1 || true
      $c -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for t in $($c -n "$ns" tasks ls -q 2>/dev/null); do $c -n "$ns" tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for t in $($c -n "$ns" containers ls -q 2>/dev/null); do $c -n "$ns" containers delete "$t" >/dev/null 2>&1 || true; done
  done
}

# Shims of this containerd that outlived it, and the sockets they leave in /run/containerd/s.
kill_shims() {
  pkill -9 -f -- "-address $containerd_sock" 2>/dev/null || true
  local s listening
  listening=$(ss -xlH 2>/dev/null | awk '{ print $5 }')
  for s in /run/containerd/s/*; do
    [[ -S $s ]] || continue
    grep -qxF "${s#unix://}" <<<"$listening" || rm -f "$s"
  done
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
}

# Mounts under the cluster's folder (pod volumes, network namespaces, rootfs snapshots), deepest first.
unmount_all() {
  local m
  for m in $(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# Rules and chains of kubelet and kube-proxy (KUBE-*) and ours (ESB-LOCAL-*), IPv4 and IPv6.
remove_iptables() {
  local ipt table chain rule
  [[ -x $(command -v kube-proxy) && -f $dir/kube-proxy-esb-node.yaml ]] &&
    kube-proxy --cleanup --config "$dir/kube-proxy-esb-node.yaml" >/dev/null 2>&1 || true
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for table in filter nat mangle; do
      # Jumps into those chains from the built-in chains first, then the chains themselves.
      $ipt -t $table -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE-|ESB-LOCAL-)' | grep -vE '^-A (KUBE-|ESB-LOCAL-)' |
        while read -r rule; do eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null || true; done || true
      for chain in $($ipt -t $table -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|ESB-LOCAL-)/ { print $2 }'); do
        $ipt -t $table -F "$chain" 2>/dev/null || true
      done
      for chain in $($ipt -t $table -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|ESB-LOCAL-)/ { print $2 }'); do
        $ipt -t $table -X "$chain" 2>/dev/null || true
      done
    done
  done
}

restore_host_state() {
  local line f
  if [[ -f $dir/host/sysctls ]]; then
    while IFS= read -r line; do sysctl -qw "$line" 2>/dev/null || log "could not restore $line"; done <"$dir/host/sysctls"
  fi
  if [[ -f $dir/host/created ]]; then
    while IFS= read -r f; do [[ -n $f ]] && rm -rf "$f"; done <"$dir/host/created"
  fi
  # kubelet's device-plugin socket and container-log links of this cluster, where the folders were there before.
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null || true
  # Empty cgroups the kubelet made (kubepods and its QoS and pod children).
  find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/esb-node2 -depth -type d \
    -exec rmdir {} + 2>/dev/null || true
}

# The second node (--nodes 2): its processes, containers, namespace and route. Its
# mounts live in its own mount namespace and go with its last process.
down_all() {
  local node2=$dir/nodes/esb-node2/run/containerd.sock owner
  owner=$(cat "$lock" 2>/dev/null || true)
  if [[ -n $owner && $owner != "$dir" && -d $owner ]]; then
    # The machine-wide parts (bridge, iptables, sysctls, node 2's namespace) are that cluster's.
    log "the cluster of $owner owns this machine's cluster network; removing only what $dir holds"
    stop_proc "${procs[@]}"
    [[ -f $dir/.esb-cluster ]] && rm -rf "$dir"
    return 0
  fi
  stop_proc ingress kube-proxy node2-kube-proxy kube-scheduler kube-controller-manager
  remove_containers "$containerd_sock"
  remove_containers "$node2"
  stop_proc kubelet node2-kubelet
  # Pods the kubelets restarted meanwhile.
  remove_containers "$containerd_sock"
  remove_containers "$node2"
  stop_proc containerd node2-containerd
  kill_shims
  # The second node (--nodes 2): its mounts live in its own mount namespace and went
  # with its last process; its route goes with its namespace's veth.
  ip route del 10.244.1.0/24 2>/dev/null || true
  ip netns del esb-node2 2>/dev/null || true
  stop_proc kube-apiserver
  stop_proc etcd
  unmount_all
  # Network namespaces of ESB's workers (the chart's agent.netnsDir under $dir) go with the unmount;
  # veths die with their namespaces; the bridge is ours.
  ip link del "$bridge" 2>/dev/null || true
  remove_iptables
  restore_host_state
  # Only a folder that `up` marked as its own is removed whole.
  if [[ -f $dir/.esb-cluster ]]; then rm -rf "$dir"; else log "$dir is not marked as a cluster folder; left in place"; fi
  [[ -f $lock && $(cat "$lock") == "$dir" ]] && rm -f "$lock" "$lock.flock"
  return 0
}
