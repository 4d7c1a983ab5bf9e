# ESB: the two commands a newcomer needs are `make up` and `make test`.
# Every npm script runs on Node 24 from the npm package `node@24`
# (node_modules/.bin comes first on PATH).
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(HOME)/.cache/esb/bin:$(PATH)

.PHONY: all install build proto proto-check lint format test test-unit dev-env dev-env-down \
	kube-apiserver helm containerd2 nats victorialogs data-services python-runtimes up bench chaos clean chart-crds

all: build

node_modules/.package-lock.json: package.json package-lock.json */package.json
	@# npm itself runs on the machine's Node (often older than the node@24 it installs): its
	@# engine warnings about that say nothing useful, so only errors are shown.
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

## install: npm dependencies from the lock file (Node 24 comes with them)
install: node_modules/.package-lock.json

## build: compile every workspace (TypeScript project references)
build: install
	npx tsc -b tsconfig.json
	chmod +x cli/dist/main.js 2>/dev/null || true

## proto: regenerate common/src/gen from proto/ (generated code is committed)
proto: install
	npx buf generate
	npx prettier --log-level warn --write common/src/gen >/dev/null 2>&1 || true

## proto-check: fail when the committed generated code is stale
proto-check: proto
	@git diff --exit-code --stat -- common/src/gen || { echo "common/src/gen is stale: run make proto and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- common/src/gen)" || { echo "untracked generated files: run make proto and commit" >&2; exit 1; }

## lint: eslint + prettier + buf lint
lint: install
	npx eslint .
	npx prettier --check .
	npx buf lint

format: install
	npx prettier --write .

## kube-apiserver: build kube-apiserver, kubectl and etcd from their Go modules, cached in ~/.cache/esb/bin
kube-apiserver:
	hack/build-kubernetes.sh control-plane

## helm: build helm from its Go module, cached in ~/.cache/esb/bin
helm:
	hack/build-helm.sh

## nats: build nats-server (JetStream broker for the chart's durable Event invocations) from its Go module, cached in ~/.cache/esb/bin
nats:
	hack/build-nats.sh

## victorialogs: build victoria-logs (the function log store of esb up, the agent's tests and the chart) from its Go module, cached in ~/.cache/esb/bin
victorialogs:
	hack/build-victorialogs.sh

## data-services: build versitygw (S3) and Dynoxide (DynamoDB), the servers esb up runs beside the functions, cached in ~/.cache/esb/bin
data-services:
	hack/build-versitygw.sh
	hack/build-dynoxide.sh

## python-runtimes: the root file systems of the python3.13 and python3.11 runtime images (Debian's
## CPython via mmdebstrap, awslambdaric and boto3 from PyPI), cached in ~/.cache/esb/python-runtimes
python-runtimes:
	hack/build-python-runtime.sh

## containerd2: build containerd 2.x from its Go module (the agent is tested on 1.6 and 2.x), cached in ~/.cache/esb
containerd2:
	hack/build-containerd.sh

## dev-env / dev-env-down: start/stop containerd (1.6 and 2.x), registry, etcd, kube-apiserver by hand
DEV_ENV_DIR ?= /tmp/esb-dev-env
dev-env: kube-apiserver containerd2
	hack/dev-env.sh up --dir $(DEV_ENV_DIR)
dev-env-down:
	hack/dev-env.sh down --dir $(DEV_ENV_DIR)

## test: every test, against real containerd, registry, kube-apiserver and a local cluster
test: build cluster-binaries helm containerd2 nats victorialogs data-services python-runtimes
	npm test

## test-unit: the tests marked `// @esb-test unit` (first line): no test environment, no root-only host changes; seconds, for the edit-test loop
test-unit: build
	ESB_TEST_ENV=none npm test -- --filter=$(CURDIR)/jest-unit-filter.cjs

## up: run ESB on this machine (containerd-backed agent, gateway, controller) with examples/functions
up: build victorialogs data-services
	hack/install-deps.sh
	hack/build-python-runtime.sh
	node cli/dist/main.js up --functions examples/functions

## bench: the performance figures of DESIGN.md
bench: build
	node bench/dist/main.js

## chaos: fault injection (workers, agent, containerd, gateway killed under load); docs/chaos.md
CHAOS_ARGS ?=
chaos: build
	node test/dist/chaos/main.js $(CHAOS_ARGS)

## chart-crds: copy crds/ into charts/esb/crds/ (a test checks they are identical)
chart-crds:
	hack/sync-chart-crds.sh

clean:
	rm -rf */dist */*.tsbuildinfo

# ESB on Kubernetes (docs/kubernetes.md). Included from the Makefile.
#
# A local cluster on this Linux machine, no Docker needed (root):
#   make cluster-up                         # prints KUBECONFIG=... and INGRESS=...
#   KUBECONFIG=<path> make images deploy    # images built without Docker, loaded into the node
#   kubectl apply -f examples/functions/hello.yaml
#   curl -s -XPOST $INGRESS/2015-03-31/functions/hello/invocations -d '{"name":"ESB"}'
#   make cluster-down                       # leaves the machine as it was
# kind on a laptop with Docker:
#   make kind-up images kind-load kind-deploy

ESB_NAMESPACE ?= esb-system
ESB_RELEASE ?= esb
ESB_IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}.*/\1/p' charts/esb/Chart.yaml)
ESB_COMPONENTS := controller agent gateway nats victoria-logs
ESB_IMAGES_DIR ?= .esb/images
ESB_CLUSTER_DIR ?= /var/lib/esb/cluster
export ESB_CLUSTER_DIR
HELM ?= helm
KUBECTL ?= kubectl
KIND_CLUSTER ?= esb
KIND_CONFIG ?= kind-config.yaml
INGRESS_NGINX_MANIFEST ?= https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.13.3/deploy/static/provider/kind/deploy.yaml

# need-<tool>: fail early with a sentence saying what is missing and where to get it.
define need
	@command -v $(1) >/dev/null 2>&1 || { echo "make $@: '$(1)' is not installed. $(2)" >&2; exit 1; }
endef
NEED_DOCKER = $(call need,docker,Install Docker (https://docs.docker.com/get-docker/); kind needs a running Docker engine.)
NEED_KIND = $(call need,kind,Install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) or: go install sigs.k8s.io/kind@latest)
NEED_KUBECTL = $(call need,$(KUBECTL),Install kubectl (https://kubernetes.io/docs/tasks/tools/) or run make kube-apiserver (builds it into ~/.cache/esb/bin).)
NEED_HELM = $(call need,$(HELM),Install helm v3 (https://helm.sh/docs/intro/install/) or run make helm (builds it into ~/.cache/esb/bin).)

.PHONY: cluster-binaries cluster-up cluster-down cluster-load images deploy undeploy \
	kind-up kind-load kind-deploy kind-down

## cluster-binaries: kubelet, kube-controller-manager, kube-scheduler, kube-proxy and Skipper (cached)
cluster-binaries:
	hack/build-kubernetes.sh node
	hack/build-ingress-controller.sh

## cluster-up: a local Kubernetes cluster without Docker (prints KUBECONFIG= and INGRESS=);
## ESB_CLUSTER_NODES=2 adds a second node in a network namespace of its own
cluster-up: build cluster-binaries
	hack/install-deps.sh >/dev/null
	hack/cluster.sh up

## cluster-down: stop it and remove everything it made
cluster-down:
	hack/cluster.sh down

## images: the three component images, nats-server's and victoria-logs' as OCI archives in .esb/images, built without
## Docker; loaded into the local cluster's node when one runs
images: build nats victorialogs python-runtimes
	hack/fetch-node-runtime.sh 22 >/dev/null
	node runtime/dist/image/build-component-images-main.js --out-dir .esb/component-images --archive-dir $(ESB_IMAGES_DIR)
	@if hack/cluster.sh status 2>/dev/null | grep -q '^containerd: running'; then $(MAKE) --no-print-directory cluster-load; fi

## cluster-load: import .esb/images/*.oci.tar into the local cluster's nodes (containerd namespace k8s.io)
cluster-load:
	@for c in $(ESB_COMPONENTS); do \
	  test -f $(ESB_IMAGES_DIR)/$$c.oci.tar || { echo "make cluster-load: $(ESB_IMAGES_DIR)/$$c.oci.tar is missing; run make images" >&2; exit 1; }; \
	  for sock in $(ESB_CLUSTER_DIR)/run/containerd.sock $(wildcard $(ESB_CLUSTER_DIR)/nodes/*/run/containerd.sock); do \
	    ctr --address $$sock -n k8s.io images import $(ESB_IMAGES_DIR)/$$c.oci.tar >/dev/null || exit 1; \
	  done; \
	  echo "loaded esb/$$c:$(ESB_IMAGE_TAG) into the local cluster"; \
	done

## deploy: helm upgrade --install charts/esb --wait on the cluster KUBECONFIG names
## (the local cluster's own values when it is that cluster; ESB_VALUES adds a values file)
deploy:
	$(NEED_KUBECTL)
	$(NEED_HELM)
	@$(KUBECTL) get nodes >/dev/null 2>&1 || { echo "make deploy: no cluster reachable (KUBECONFIG=$${KUBECONFIG:-~/.kube/config}); run make cluster-up or make kind-up first" >&2; exit 1; }
	@values=""; \
	if [ "$$KUBECONFIG" = "$(ESB_CLUSTER_DIR)/kubeconfig" ]; then values="-f $(ESB_CLUSTER_DIR)/esb-values.yaml"; fi; \
	if [ -n "$(ESB_VALUES)" ]; then values="$$values -f $(ESB_VALUES)"; fi; \
	echo "helm upgrade --install $(ESB_RELEASE) charts/esb -n $(ESB_NAMESPACE) $$values --wait"; \
	$(HELM) upgrade --install $(ESB_RELEASE) charts/esb --namespace $(ESB_NAMESPACE) --create-namespace \
	  --set image.tag=$(ESB_IMAGE_TAG) $$values --wait --timeout 5m
	@echo "ESB is deployed. Try: kubectl apply -f examples/functions/hello.yaml, then invoke hello (see docs/kubernetes.md)"

## undeploy: helm uninstall (workers are removed; CRDs and LambdaFunctions stay)
undeploy:
	$(NEED_HELM)
	$(HELM) uninstall $(ESB_RELEASE) --namespace $(ESB_NAMESPACE) --wait

## kind-up: kind cluster "esb" from kind-config.yaml
kind-up:
	$(NEED_DOCKER)
	$(NEED_KIND)
	$(NEED_KUBECTL)
	@if kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then echo "kind cluster $(KIND_CLUSTER) exists"; \
	else kind create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG); fi

## kind-load: load .esb/images/*.oci.tar (make images) into the kind nodes
kind-load:
	$(NEED_KIND)
	@for c in $(ESB_COMPONENTS); do \
	  test -f $(ESB_IMAGES_DIR)/$$c.oci.tar || { echo "make kind-load: $(ESB_IMAGES_DIR)/$$c.oci.tar is missing; run make images" >&2; exit 1; }; \
	  kind load image-archive --name $(KIND_CLUSTER) $(ESB_IMAGES_DIR)/$$c.oci.tar || exit 1; \
	done

## kind-deploy: ingress-nginx, then make deploy with kind's values
kind-deploy:
	$(NEED_KUBECTL)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f $(INGRESS_NGINX_MANIFEST)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n ingress-nginx rollout status deployment/ingress-nginx-controller --timeout=180s
	$(KUBECTL) config use-context kind-$(KIND_CLUSTER)
	$(MAKE) --no-print-directory deploy ESB_VALUES=hack/kind-values.yaml

## kind-down: delete the kind cluster
kind-down:
	$(NEED_KIND)
	kind delete cluster --name $(KIND_CLUSTER)
