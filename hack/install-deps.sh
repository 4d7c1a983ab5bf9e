#!/usr/bin/env bash
# Installs the Debian packages ESB's tests and `make up` need: containerd, runc
# and the CNI plugins (the worker runtime), docker-registry (a local OCI
# registry), podman (stands in for a Docker engine in docker-mode tests),
# iproute2/iptables (network namespaces, bridge NAT), busybox-static (a
# one-file rootfs for containerd smoke tests), python3 (free ports in
# hack/dev-env.sh), the toolchain that builds aws-lambda-ric's native part (the official AWS
# runtime client, used in tests), wrk (make bench's load generator), mmdebstrap (the Debian
# root file systems of the Python runtime images, hack/build-python-runtime.sh) with pip
# (downloads awslambdaric and boto3 wheels for them), and tools.
set -euo pipefail
packages=(containerd runc containernetworking-plugins docker-registry podman iproute2 iptables
  busybox-static python3 curl openssl ca-certificates git make
  autoconf automake libtool cmake g++ wrk mmdebstrap python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "system packages present: ${packages[*]}"
