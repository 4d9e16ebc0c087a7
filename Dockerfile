# syntax=docker/dockerfile:1
#
# marketplace-sync container image.
#
#   docker build -t marketplace-sync .
#   docker compose up --build          # with RabbitMQ, Postgres and Redis (docker-compose.yml)
#
# The build stage installs Deno from npm (the same channel CI uses), type-checks the service and fills a
# DENO_DIR with every locked npm package. The runtime stage is that DENO_DIR, the sources and the bare deno
# binary: start-up reads the cache only (--cached-only), so a container needs no registry access.

# Keep equal to .deno-version (tests/deploy_test.ts checks it).
ARG DENO_VERSION=2.9.6

FROM node:20-bookworm-slim AS build
ARG DENO_VERSION
# The npm package ships a native binary behind a Node shim; the runtime stage gets the real executable only.
RUN npm install -g --no-fund --no-audit "deno@${DENO_VERSION}" \
  && deno --version \
  && cp "$(deno eval 'console.log(Deno.execPath())')" /usr/local/bin/deno-native
ENV DENO_DIR=/deno-dir
WORKDIR /app
# Dependencies first, so source edits reuse this layer. --frozen: fail if deno.lock does not match deno.json.
COPY deno.json deno.lock ./
# The browser code's workspace member (its own compiler options; docs/DECISIONS.md, "The status page").
COPY src/http/browser/deno.jsonc src/http/browser/
RUN deno install --frozen
# The patched Postgres driver deno.json maps "postgres" to (vendor/postgres-3.4.9/README.md).
COPY vendor/ vendor/
COPY src/ src/
COPY scripts/ scripts/
# Type-check, then cache the module graphs of the service and of its launcher so `deno run --cached-only`
# finds everything.
RUN deno check src/main.ts scripts/launch.ts \
  && deno install --frozen --entrypoint src/main.ts scripts/launch.ts

FROM debian:bookworm-slim AS runtime
# Deno needs only glibc and libgcc, which the slim image has. TLS roots are bundled in the binary (Mozilla's).
COPY --from=build /usr/local/bin/deno-native /usr/local/bin/deno
# Owned by root and read-only for the service user: the service writes nothing (no --allow-write), and Deno
# runs fine with an unwritable cache, so the image also works with a read-only root filesystem.
COPY --from=build /deno-dir /deno-dir
# DENO_NO_UPDATE_CHECK: no background request for the latest Deno release.
ENV DENO_DIR=/deno-dir \
  DENO_NO_UPDATE_CHECK=1
WORKDIR /app
COPY --from=build /app/deno.json /app/deno.lock ./
COPY --from=build /app/vendor/ vendor/
COPY --from=build /app/src/ src/
# scripts/ makes `docker compose exec worker deno task publish-sample` work against the compose broker.
COPY --from=build /app/scripts/ scripts/
# Numeric, so Kubernetes can verify runAsNonRoot without an /etc/passwd entry.
USER 10001:10001
EXPOSE 8080
# SIGTERM starts the graceful shutdown (stop consuming, finish in-flight custody, close, exit 0) within
# SHUTDOWN_TIMEOUT (25 s by default): give `docker stop` more than that (docker-compose.yml does).
STOPSIGNAL SIGTERM
# Liveness only (the process serves HTTP); /readyz is for traffic and dependency state. No curl in the
# image, so deno fetches. Assumes HTTP_HOST accepts loopback connections (the default 0.0.0.0 does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["deno", "eval", "const r = await fetch('http://127.0.0.1:' + (Deno.env.get('HTTP_PORT') || '8080') + '/healthz', { signal: AbortSignal.timeout(3000) }); Deno.exit(r.ok ? 0 : 1);"]
# `deno task start` (deno.json), plus --cached-only / --frozen for both processes: never fetch or re-lock.
# The launcher (env + running `deno` only) validates the configuration — a bad value exits 2 with the
# service's own message —, prints the granted set and runs src/main.ts with the permissions derived from
# the container's configuration (src/permissions.ts): net only to RABBITMQ_URL, DATABASE_URL, REDIS_URL, the
# marketplaces and the listen address, env only the variables the service and its libraries read, sys
# hostname; no read, write, run or ffi. The same derivation adds --no-code-cache and the service's V8
# settings (`--v8-flags=--max-semi-space-size=2,--max-old-space-size=256,--expose-gc`) and, unless set here,
# GLIBC_TUNABLES for glibc's allocator (src/permissions.ts DENO_FLAGS / V8_FLAGS / SERVICE_ENV,
# docs/DECISIONS.md "Memory"); to change the heap settings append e.g. "--v8-flags=--max-old-space-size=512"
# after "--frozen" below. It forwards SIGTERM to the service and exits with its exit code.
CMD ["deno", "run", "--cached-only", "--frozen", "--allow-env", "--allow-run=deno", "scripts/launch.ts", "--cached-only", "--frozen", "src/main.ts"]
