# syntax=docker/dockerfile:1
# ESB controller image: reconciles LambdaFunction resources (Deployment, leader-elected).
# Build from the repository root (the context must hold the whole workspace):
#   docker build -f docker/controller.Dockerfile -t esb/controller:0.1.0 .
# or `make images`. The base image is pinned by version; pin it by digest
# (node:...@sha256:...) for reproducible production builds.
ARG NODE_IMAGE=node:24.9.0-bookworm-slim

# --- build: compile the controller workspace and the workspaces it references ---------
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
    npm ci --no-audit --no-fund --ignore-scripts --include-workspace-root --workspace controller
COPY common/ common/
COPY runtime/ runtime/
COPY controller/ controller/
RUN node node_modules/typescript/bin/tsc -b controller \
 && mkdir -p /out \
 && for d in */dist; do mkdir -p "/out/$d" && cp -r "$d/." "/out/$d/"; done \
 && find /out -name '*.test.*' -delete

# --- production dependencies of controller only -----------------------------------------
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
    npm ci --no-audit --no-fund --ignore-scripts --omit=dev --workspace controller

# --- runtime ------------------------------------------------------------------------
FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="esb-controller" \
      org.opencontainers.image.description="ESB controller: LambdaFunction reconciler" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/ ./
COPY --from=build /out/ ./
# An unprivileged uid without a home or shell (65532, "nonroot"), as the chart's securityContext expects.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["node", "controller/dist/main.js"]
