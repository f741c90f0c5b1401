# syntax=docker/dockerfile:1
# Images for MIC and NMI:
#   docker build --target mic -t ghcr.io/aad-pod-identity-ts/aad-pod-identity-ts/mic:v0.1.0 .
#   docker build --target nmi -t ghcr.io/aad-pod-identity-ts/aad-pod-identity-ts/nmi:v0.1.0 .
# TypeScript is compiled to dist/ in the build stage; the runtime stages hold production dependencies only
# (no tsx, no compiler). Both images also carry the admin commands: node /app/dist/cmd/explain.js, node
# /app/dist/cmd/doctor.js and the kubectl plugin's entry node /app/dist/cmd/kubectl-plugin.js.

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY cmd ./cmd
COPY src ./src
# Only cmd/ and src/ are in the build context of this stage, so only they are compiled.
RUN npx tsc -p tsconfig.json --outDir dist --sourceMap false

FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
ENV NODE_ENV=production
COPY package.json ./
COPY --from=prod-deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist

# MIC: no privilege needed; the manifests run it as root only to read the node's root-owned azure.json.
FROM runtime AS mic
# A small young generation keeps RSS down during write bursts at no cost in speed (bench/README.md). The old-space
# bound is left to Node's own sizing from the container's memory limit: a fixed one would crash MIC on big clusters.
ENV NODE_OPTIONS="--max-semi-space-size=4"
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/cmd/mic.js"]

# NMI: programs the node's nat table, so it runs as root with NET_ADMIN (and NET_RAW for iptables-legacy).
FROM runtime AS nmi
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables conntrack ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Use the iptables backend the node already uses (where kube-proxy's rules are), unless --iptables-binary is given.
COPY --chmod=0755 <<'SCRIPT' /usr/local/bin/nmi-entrypoint
#!/bin/sh
set -eu
for arg in "$@"; do
  case "$arg" in --iptables-binary*|-iptables-binary*) exec node /app/dist/cmd/nmi.js "$@" ;; esac
done
count() { { "$1" -t nat; "$1" -t mangle; } 2>/dev/null | grep -c '^-' || true; }
legacy=$(count iptables-legacy-save)
nft=$(count iptables-nft-save)
if [ "${legacy:-0}" -gt "${nft:-0}" ]; then binary=iptables-legacy; else binary=iptables-nft; fi
exec node /app/dist/cmd/nmi.js "--iptables-binary=$binary" "$@"
SCRIPT
USER 0:0
ENTRYPOINT ["/usr/local/bin/nmi-entrypoint"]
