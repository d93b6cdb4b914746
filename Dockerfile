# syntax=docker/dockerfile:1
# One image for the API (default), the worker (`node dist/src/worker.js`)
# and the CLI (`node dist/src/cli.js migrate|tenants:migrate|init|create-admin ...`).

# ---- builder: full dependencies, compile TypeScript to dist/ ----
FROM node:20-bookworm-slim AS builder
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and the compiled output only ----
FROM node:20-bookworm-slim AS runtime
# The API starts as `npm start` does (package.json): two malloc arenas and a 4 MB
# young-generation semi-space keep its resident memory under 150 MB while it
# streams uploads of any size (README, "Deployment").
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    HOST=0.0.0.0 \
    PORT=4999 \
    DATA_DIR=/app/data \
    UPLOAD_FOLDER=/app/uploads
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=builder /app/dist ./dist
RUN mkdir -p /app/data /app/uploads && chown -R node:node /app/data /app/uploads
USER node
EXPOSE 4999
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:4999/health').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
CMD ["node","--max-semi-space-size=4","dist/src/server.js"]
