# From a laptop with Docker to an invoked function on a local kind cluster:
#   make kind-up images kind-load deploy
#   kubectl apply -f examples/functions/hello.yaml
#   curl -s -XPOST localhost/2015-03-31/functions/hello/invocations -d '{"name":"ESB"}'
#   make kind-down
# Included from the Makefile (`include mk/kind.mk`). See docs/kubernetes.md.

KIND_CLUSTER ?= esb
KIND_CONFIG ?= kind-config.yaml
KIND_REGISTRY_NAME ?= kind-registry
KIND_REGISTRY_PORT ?= 5001
ESB_NAMESPACE ?= esb-system
ESB_RELEASE ?= esb
ESB_IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}.*/\1/p' charts/esb/Chart.yaml)
ESB_COMPONENTS := controller agent gateway
INGRESS_NGINX_MANIFEST ?= https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.13.3/deploy/static/provider/kind/deploy.yaml
HELM ?= helm
KUBECTL ?= kubectl

# need-<tool>: fail early with a sentence saying what is missing and where to get it.
define need
	@command -v $(1) >/dev/null 2>&1 || { echo "make $@: '$(1)' is not installed. $(2)" >&2; exit 1; }
endef
NEED_DOCKER = $(call need,docker,Install Docker (https://docs.docker.com/get-docker/); kind and the image builds need a running Docker engine.)
NEED_KIND = $(call need,kind,Install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) or: go install sigs.k8s.io/kind@latest)
NEED_KUBECTL = $(call need,$(KUBECTL),Install kubectl (https://kubernetes.io/docs/tasks/tools/) or run make kube-apiserver (builds it into ~/.cache/esb/bin).)
NEED_HELM = $(call need,$(HELM),Install helm v3 (https://helm.sh/docs/intro/install/) or run make helm (builds it into ~/.cache/esb/bin).)
DOCKER_RUNNING = @docker info >/dev/null 2>&1 || { echo "make $@: the Docker engine is not reachable (is Docker running? docker info fails)." >&2; exit 1; }

.PHONY: kind-up kind-down images kind-load deploy undeploy

## kind-up: kind cluster "esb" (kind-config.yaml) + local registry on localhost:5001
kind-up:
	$(NEED_DOCKER)
	$(DOCKER_RUNNING)
	$(NEED_KIND)
	$(NEED_KUBECTL)
	@if [ "$$(docker inspect -f '{{.State.Running}}' $(KIND_REGISTRY_NAME) 2>/dev/null)" != true ]; then \
	  echo "starting registry $(KIND_REGISTRY_NAME) on 127.0.0.1:$(KIND_REGISTRY_PORT)"; \
	  docker rm -f $(KIND_REGISTRY_NAME) >/dev/null 2>&1 || true; \
	  docker run -d --restart=always -p 127.0.0.1:$(KIND_REGISTRY_PORT):5000 --network bridge \
	    --name $(KIND_REGISTRY_NAME) registry:2 >/dev/null; \
	fi
	@if kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) exists"; \
	else \
	  kind create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG); \
	fi
	@# containerd on each node: localhost:5001 is the registry container.
	@for node in $$(kind get nodes --name $(KIND_CLUSTER)); do \
	  docker exec $$node mkdir -p /etc/containerd/certs.d/localhost:$(KIND_REGISTRY_PORT); \
	  printf '[host."http://%s:5000"]\n' $(KIND_REGISTRY_NAME) | \
	    docker exec -i $$node cp /dev/stdin /etc/containerd/certs.d/localhost:$(KIND_REGISTRY_PORT)/hosts.toml; \
	done
	@docker network connect kind $(KIND_REGISTRY_NAME) 2>/dev/null || true
	@printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-registry-hosting\n  namespace: kube-public\ndata:\n  localRegistryHosting.v1: |\n    host: "localhost:%s"\n    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"\n' $(KIND_REGISTRY_PORT) | \
	  $(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f - >/dev/null
	@echo "kind cluster $(KIND_CLUSTER) is up (kubectl context kind-$(KIND_CLUSTER)); registry localhost:$(KIND_REGISTRY_PORT). Next: make images kind-load deploy"

## images: docker build esb/{controller,agent,gateway}:<version> from docker/*.Dockerfile
images:
	$(NEED_DOCKER)
	$(DOCKER_RUNNING)
	@for c in $(ESB_COMPONENTS); do \
	  echo "building esb/$$c:$(ESB_IMAGE_TAG)"; \
	  DOCKER_BUILDKIT=1 docker build -f docker/$$c.Dockerfile -t esb/$$c:$(ESB_IMAGE_TAG) . || exit 1; \
	done

## kind-load: load the three images into the kind nodes (no registry needed)
kind-load:
	$(NEED_DOCKER)
	$(NEED_KIND)
	@for c in $(ESB_COMPONENTS); do \
	  docker image inspect esb/$$c:$(ESB_IMAGE_TAG) >/dev/null 2>&1 || { echo "make kind-load: image esb/$$c:$(ESB_IMAGE_TAG) is missing; run make images first" >&2; exit 1; }; \
	  kind load docker-image --name $(KIND_CLUSTER) esb/$$c:$(ESB_IMAGE_TAG) || exit 1; \
	done

## deploy: ingress-nginx + helm upgrade --install charts/esb with the loaded images
deploy:
	$(NEED_KUBECTL)
	$(NEED_HELM)
	@$(KUBECTL) --context kind-$(KIND_CLUSTER) get nodes >/dev/null 2>&1 || { echo "make deploy: no kind cluster $(KIND_CLUSTER) (kubectl context kind-$(KIND_CLUSTER)); run make kind-up first" >&2; exit 1; }
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f $(INGRESS_NGINX_MANIFEST)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n ingress-nginx rollout status deployment/ingress-nginx-controller --timeout=180s
	$(HELM) --kube-context kind-$(KIND_CLUSTER) upgrade --install $(ESB_RELEASE) charts/esb \
	  --namespace $(ESB_NAMESPACE) --create-namespace \
	  --set image.tag=$(ESB_IMAGE_TAG) --set image.pullPolicy=IfNotPresent \
	  --set gateway.defaultNamespace=default \
	  --set gateway.ingress.enabled=true --set gateway.ingress.className=nginx \
	  --set 'agent.insecureRegistries={$(KIND_REGISTRY_NAME):5000}' \
	  --wait --timeout 5m
	@echo "ESB is deployed. Try: kubectl apply -f examples/functions/hello.yaml && curl -s -XPOST localhost/2015-03-31/functions/hello/invocations -d '{\"name\":\"ESB\"}'"

## undeploy: helm uninstall (CRDs and LambdaFunctions stay)
undeploy:
	$(NEED_HELM)
	$(HELM) --kube-context kind-$(KIND_CLUSTER) uninstall $(ESB_RELEASE) --namespace $(ESB_NAMESPACE)

## kind-down: delete the kind cluster and the registry container
kind-down:
	$(NEED_KIND)
	kind delete cluster --name $(KIND_CLUSTER)
	@docker rm -f $(KIND_REGISTRY_NAME) >/dev/null 2>&1 || true
