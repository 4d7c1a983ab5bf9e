# Certificates and kubeconfigs of hack/cluster.sh (sourced; needs $dir, $node_ip, $node_name,
# $service_ip, $api_url). Each file is made once: a restarted cluster keeps its identities.

pki_key() { [[ -f $1 ]] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# pki_cert NAME SUBJECT EXTENSIONS [CA]: NAME.key + NAME.crt signed by CA (default ca).
pki_cert() {
  local name=$1 subject=$2 ext=$3 ca=${4:-ca} p=$dir/pki
  [[ -f $p/$name.crt ]] && return 0
  pki_key "$p/$name.key"
  openssl req -new -key "$p/$name.key" -subj "$subject" -out "$p/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" | tr ';' '\n' >"$p/$name.ext"
  openssl x509 -req -in "$p/$name.csr" -CA "$p/$ca.crt" -CAkey "$p/$ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/$name.ext" -out "$p/$name.crt" 2>/dev/null
  rm -f "$p/$name.csr" "$p/$name.ext"
}

pki_ca() { # NAME CN
  local p=$dir/pki
  [[ -f $p/$1.crt ]] && return 0
  pki_key "$p/$1.key"
  openssl req -x509 -new -key "$p/$1.key" -subj "/CN=$2" -days 3650 -out "$p/$1.crt" 2>/dev/null
}

pki_client() { # NAME SUBJECT
  pki_cert "$1" "$2" "extendedKeyUsage=clientAuth;keyUsage=critical,digitalSignature,keyEncipherment"
}

# kubeconfig NAME [FILE]: FILE (default $dir/NAME.kubeconfig) for the client certificate NAME.
kubeconfig() {
  local p=$dir/pki b64="base64 -w0" f=${2:-$dir/$1.kubeconfig}
  cat >"$f" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: esb-local
    cluster:
      server: $api_url
      certificate-authority-data: $($b64 <"$p/ca.crt")
users:
  - name: $1
    user:
      client-certificate-data: $($b64 <"$p/$1.crt")
      client-key-data: $($b64 <"$p/$1.key")
contexts:
  - name: esb-local
    context:
      cluster: esb-local
      user: $1
      namespace: default
current-context: esb-local
YAML
  chmod 600 "$f"
}

make_pki() {
  mkdir -p "$dir/pki"
  pki_ca ca esb-local-ca
  pki_ca front-proxy-ca esb-local-front-proxy-ca
  pki_cert apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:$node_ip,IP:$service_ip,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local;extendedKeyUsage=serverAuth;keyUsage=critical,digitalSignature,keyEncipherment"
  pki_client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  pki_cert front-proxy-client "/CN=front-proxy-client" \
    "extendedKeyUsage=clientAuth;keyUsage=critical,digitalSignature,keyEncipherment" front-proxy-ca
  pki_client admin "/O=system:masters/CN=esb-local-admin"
  local n
  for n in esb-node esb-node2; do pki_client "kubelet-$n" "/O=system:nodes/CN=system:node:$n"; done
  pki_client controller-manager "/CN=system:kube-controller-manager"
  pki_client scheduler "/CN=system:kube-scheduler"
  pki_client kube-proxy "/CN=system:kube-proxy"
  if [[ ! -f $dir/pki/sa.key ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/pki/sa.key" 2>/dev/null
    openssl pkey -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null
  fi
  rm -f "$dir"/pki/*.srl
  local c
  # The admin's is the one users get (KUBECONFIG=$dir/kubeconfig).
  kubeconfig admin "$dir/kubeconfig"
  for c in kubelet-esb-node kubelet-esb-node2 controller-manager scheduler kube-proxy; do kubeconfig "$c"; done
}
