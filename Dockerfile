# syntax=docker/dockerfile:1
#
# One image for every llmq process:
#   gateway   (default)  node apps/gateway/dist/main.js
#   worker               node apps/worker/dist/main.js
#   connector            node apps/connector/dist/main.js
#
# Build:  docker build -t llmq .
#         docker build --build-arg LLAMA_BINARIES=all -t llmq:gpu .   # keep CUDA/Vulkan builds
#
# node-llama-cpp ships its prebuilt binaries as optional packages: ~30 MB for the CPU build of
# this architecture, plus ~610 MB of CUDA and Vulkan builds. `npm ci --omit=optional` would drop
# them all, and pulsar-client (the Pulsar source's optional native client) with them, so instead
# the full install runs and LLAMA_BINARIES=cpu (the default) deletes the GPU and foreign-arch
# folders afterwards. pulsar-client downloads its prebuilt addon at install time; where that
# fails (no network to its host) npm skips it, the image still builds, and only the Pulsar
# source is unavailable (ERR_DEPENDENCY_MISSING at connector start-up).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- manifests: only package.json files + lockfile, so `npm ci` is cached until they change
FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN mkdir -p /manifests \
 && find . -name package.json -not -path '*/node_modules/*' -not -path '*/dist/*' -exec cp --parents '{}' /manifests/ ';' \
 && cp package-lock.json /manifests/

# ---- deps: every dependency, dev included (the build needs TypeScript)
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
# node-llama-cpp's postinstall would otherwise try to download/compile llama.cpp when no
# prebuilt binary fits; the prebuilt packages are what the image uses.
ENV NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
COPY --from=manifests /manifests/ ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund

# ---- build: compile, then drop dev dependencies and the binaries the image does not need
FROM deps AS build
ARG LLAMA_BINARIES=cpu
COPY . .
RUN npm run build
RUN --mount=type=cache,target=/root/.npm \
    npm prune --omit=dev --no-audit --no-fund
# LLAMA_BINARIES=cpu keeps only node-llama-cpp's CPU build for this architecture; sources, tests
# and build metadata stay out of the runtime image.
RUN set -eu; \
    if [ "$LLAMA_BINARIES" = "cpu" ]; then \
      arch="$(node -p 'process.arch === "arm" ? "armv7l" : process.arch')"; \
      for dir in node_modules/@node-llama-cpp/*; do \
        [ -d "$dir" ] || continue; \
        [ "$(basename "$dir")" = "linux-$arch" ] || rm -rf "$dir"; \
      done; \
    fi; \
    find packages apps -mindepth 2 -maxdepth 2 \( -name src -o -name test -o -name 'tsconfig*.json' \) -exec rm -rf '{}' +; \
    find packages apps -name '*.tsbuildinfo' -delete; \
    rm -rf test tsconfig*.json vitest.config.*

# ---- runtime
FROM ${NODE_IMAGE} AS runtime
ARG LLAMA_BINARIES=cpu
# The GPU image also gets the Vulkan loader: node-llama-cpp's Vulkan build needs libvulkan.so.1,
# and Vulkan is the way onto an NVIDIA GPU whose driver is older than the toolkit of its CUDA
# build (README, "GPUs"). With the NVIDIA container toolkit, run it with
# NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics so the driver's Vulkan files are mounted.
RUN if [ "$LLAMA_BINARIES" != "cpu" ]; then \
      apt-get update && apt-get install -y --no-install-recommends libvulkan1 && rm -rf /var/lib/apt/lists/*; \
    fi
# Config is read from /app/config/default.yaml unless LLMQ_CONFIG names another file. Source maps
# are kept: NODE_OPTIONS=--enable-source-maps makes stack traces point at TypeScript lines (it
# slows every stack trace, so it is not on by default).
ENV NODE_ENV=production \
    NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
WORKDIR /app
# Owned by root and read-only for the process: the app never writes to its own tree.
COPY --from=build /app /app
RUN mkdir -p /app/models
# The `node` user (uid 1000) of the official image.
USER node
EXPOSE 8080 9464
CMD ["node", "apps/gateway/dist/main.js"]
