# syntax=docker/dockerfile:1
# ESB agent image: one per node; drives containerd (or Docker), CNI and the freezer (DaemonSet).
# Build from the repository root (the context must hold the whole workspace):
#   docker build -f docker/agent.Dockerfile -t esb/agent:0.1.0 .
# or `make images`. The base image is pinned by version; pin it by digest
# (node:...@sha256:...) for reproducible production builds.
ARG NODE_IMAGE=node:24.9.0-bookworm-slim

# --- build: compile the agent-daemonset workspace and the workspaces it references ---------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Every workspace's package.json: npm ci checks them against the lock file.
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY common/package.json common/
COPY runtime/package.json runtime/
COPY agent-daemonset/package.json agent-daemonset/
COPY gateway/package.json gateway/
COPY controller/package.json controller/
COPY cli/package.json cli/
COPY test/package.json test/
# Root dev dependencies (TypeScript) plus this component's dependencies. No
# install scripts: the base image already is Node 24, so the npm package
# `node` need not download another copy.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund --ignore-scripts --include-workspace-root --workspace agent-daemonset
COPY common/ common/
COPY runtime/ runtime/
COPY agent-daemonset/ agent-daemonset/
RUN node node_modules/typescript/bin/tsc -b agent-daemonset \
 && mkdir -p /out \
 && for d in */dist; do mkdir -p "/out/$d" && cp -r "$d/." "/out/$d/"; done \
 && find /out -name '*.test.*' -delete

# --- production dependencies of agent-daemonset only -----------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/common/package.json common/
COPY --from=build /src/runtime/package.json runtime/
COPY --from=build /src/agent-daemonset/package.json agent-daemonset/
COPY --from=build /src/gateway/package.json gateway/
COPY --from=build /src/controller/package.json controller/
COPY --from=build /src/cli/package.json cli/
COPY --from=build /src/test/package.json test/
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund --ignore-scripts --omit=dev --workspace agent-daemonset

# --- runtime ------------------------------------------------------------------------
FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="esb-agent" \
      org.opencontainers.image.description="ESB agent: per-node worker runtime (containerd, CNI, freezer)" \
      org.opencontainers.image.licenses="Apache-2.0"
# CNI plugins (bridge, host-local, loopback, portmap in /usr/lib/cni; the
# chart's init container copies them to nodes that lack them), iproute2 for
# diagnosing worker networks, ca-certificates for pulling from TLS registries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends containernetworking-plugins iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/ ./
COPY --from=build /out/ ./
# Root on purpose: network namespaces, CNI, cgroups and the containerd socket
# need it (the chart runs the agent privileged).
USER 0:0
EXPOSE 50051 9090
ENTRYPOINT ["node", "agent-daemonset/dist/main.js"]
