# syntax=docker/dockerfile:1

# ssehub container image: a build stage that compiles TypeScript, and a small runtime
# stage with production dependencies and dist/ only.
#   docker build -t ssehub:0.1.0 .

ARG NODE_IMAGE=node:24-alpine

# ---- build: all dependencies, compile src/ to dist/ ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and the compiled output ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# The stand-alone server needs the peers the library leaves optional (ioredis, pg, koa,
# @koa/router): installed at the versions the lockfile pins.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm install --no-save --omit=dev --ignore-scripts --no-audit --no-fund $(node -p \
      "const l = require('./package-lock.json').packages; Object.keys(require('./package.json').peerDependencies).map((n) => n + '@' + l['node_modules/' + n].version).join(' ')") \
    && npm cache clean --force
COPY --from=build /app/dist ./dist

# The image's built-in unprivileged "node" user, by number so that Kubernetes'
# runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080

# Liveness only: readiness (/readyz) depends on the transport and belongs to the orchestrator.
# Node itself does the request (alpine has no curl); PORT is honoured if overridden.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/livez').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# SIGTERM starts the graceful drain (see README.md, "Deploy on Kubernetes"); node runs as PID 1 and handles it.
STOPSIGNAL SIGTERM
CMD ["node", "dist/main.js"]
