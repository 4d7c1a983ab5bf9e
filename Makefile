# ESB: the two commands a newcomer needs are `make up` and `make test`.
# Every npm script runs on Node 24 from the npm package `node@24`
# (node_modules/.bin comes first on PATH).
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(HOME)/.cache/esb/bin:$(PATH)

.PHONY: all install build proto proto-check lint format test test-unit dev-env dev-env-down \
	kube-apiserver helm containerd2 up bench clean chart-crds

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
test: build cluster-binaries helm containerd2
	npm test

## up: run ESB on this machine (containerd-backed agent, gateway, controller) with examples/functions
up: build
	hack/install-deps.sh
	node cli/dist/main.js up --functions examples/functions

## bench: the performance figures of DESIGN.md
bench: build
	node bench/dist/main.js

## chart-crds: copy crds/ into charts/esb/crds/ (a test checks they are identical)
chart-crds:
	hack/sync-chart-crds.sh

clean:
	rm -rf */dist */*.tsbuildinfo
# cluster-up/down, images, cluster-load, deploy, undeploy and the kind targets (docs/kubernetes.md)
include mk/kubernetes.mk
