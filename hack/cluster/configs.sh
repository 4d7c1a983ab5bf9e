# Configuration files of hack/cluster.sh (sourced; needs the variables set there).

write_containerd_config() {
  mkdir -p "$dir/containerd/root" "$dir/containerd/state" "$dir/run" "$dir/runc"
  cat >"$dir/containerd/config.toml" <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
# The opt plugin would write /opt/containerd.
disabled_plugins = ["io.containerd.internal.v1.opt"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[debug]
  address = "$dir/run/containerd-debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # This kind of VM lacks CAP_SYS_RESOURCE: without it every sandbox fails
  # ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin_dir"
    conf_dir = "$dir/cni/net.d"
TOML
}

# The pod network: pods (and, in the chart's cluster CNI mode, ESB's workers) on
# the cluster bridge, addresses from host-local with its data under $dir.
write_cni_config() {
  mkdir -p "$dir/cni/net.d" "$dir/cni/ipam"
  cat >"$dir/cni/net.d/10-esb-local.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "esb-local",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{ "subnet": "$pod_cidr", "rangeStart": "$pod_range_start", "gateway": "$pod_gateway" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
}

write_kubelet_config() {
  mkdir -p "$dir/kubelet/root" "$dir/kubelet/pod-logs" "$dir/kubelet/volume-plugins"
  cat >"$dir/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $dir/pki/ca.crt }
authorization: { mode: Webhook }
# cgroup v1 hybrid on this kind of machine; Kubernetes 1.37 refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
cgroupRoot: $cgroup_root
oomScoreAdj: 0
podLogsDir: $dir/kubelet/pod-logs
volumePluginDir: $dir/kubelet/volume-plugins
resolvConf: /etc/resolv.conf
# Images are imported, never pulled: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%" }
serializeImagePulls: false
containerLogMaxSize: 10Mi
YAML
}

write_kube_proxy_config() {
  cat >"$dir/kube-proxy-$node_name.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $node_name
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
clusterCIDR: $cluster_cidr
clientConnection: { kubeconfig: $dir/kube-proxy.kubeconfig }
conntrack: { maxPerCore: 0 }
iptables: { localhostNodePorts: false }
nodePortAddresses: ["$node_ip/32"]
YAML
}

# Chart values for this cluster (make deploy passes them when KUBECONFIG is this cluster's).
write_esb_values() {
  cat >"$dir/esb-values.yaml" <<YAML
# Written by hack/cluster.sh for the chart on this cluster.
image:
  pullPolicy: Never          # images are imported into the node (make images), never pulled
agent:
  containerd:
    socket: $containerd_sock
    cgroupParent: /kubepods/esb   # workers count in the kubelet's node accounting
  stateDir: $dir/esb-agent
  netnsDir: $dir/netns
  cni:
    mode: cluster            # workers get pod-network addresses on $bridge
    binDir: $cni_bin_dir
    confDir: $dir/cni/net.d
    stateDir: $dir/cni
    installPlugins: false
gateway:
  defaultNamespace: default
  ingress:
    enabled: true
    className: esb
events:
  nats:
    persistence:
      enabled: false         # no volume provisioner here: JetStream's store is an emptyDir
logs:
  victoriaLogs:
    persistence:
      enabled: false         # the same for VictoriaLogs' store
YAML
}
