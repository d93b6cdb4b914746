/**
 * The audit trail of the tenant API: every successful change (POST, PUT,
 * PATCH, DELETE answered < 400) under /api/tenants/:tid is recorded as an
 * `audit.log` event - who (user, email), what (method and route, resource),
 * when, from which IP and user agent - after the response is sent. The
 * consumer appends it to `audit_log`; admins read it at
 * GET /api/tenants/:tid/audit (src/audit/routes.ts). Capabilities that want an
 * entry inside their own transaction call `recordAudit` (src/audit/record.ts),
 * or write `auditRow(auditEntryOf(request, status))` with their own outbox rows
 * (uploads), and set `request.auditRecorded` so it is not recorded again here.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Kysely } from 'kysely';
import type { TenantSchema } from '../db/schema.js';
import { recordAudit, type AuditEntry } from './record.js';
import { auditRoutes } from './routes.js';

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** `documents` and the :id of /api/tenants/:tid/documents/:id; `tenant` and the tid for the tenant itself. */
function resourceOf(request: FastifyRequest): { type: string | null; id: string | null } {
  const route = request.routeOptions.url ?? '';
  const params = (request.params ?? {}) as Record<string, string | undefined>;
  const id = params.id ?? params.fid ?? params.uid ?? params.user_id ?? null;
  const m = /^\/api\/tenants\/:tid(?:\/([^/:]+))?/.exec(route);
  if (m) return { type: m[1] ?? 'tenant', id: id ?? (m[1] ? null : params.tid ?? null) };
  return { type: /^\/api\/([^/:]+)/.exec(route)?.[1] ?? null, id };
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The route wrote this request's audit entry in its own transaction. */
    auditRecorded?: boolean;
  }
}

/** The audit entry of a tenant request answered with `statusCode` (request.tenant and request.user set). */
export function auditEntryOf(request: FastifyRequest, statusCode: number): AuditEntry {
  const { tenant, user } = request;
  const resource = resourceOf(request);
  return {
    tenantId: tenant.id,
    userId: user.id,
    actorEmail: user.email,
    action: `${request.method} ${request.routeOptions.url ?? request.url}`,
    resourceType: resource.type,
    resourceId: resource.id,
    ip: request.ip,
    userAgent: typeof request.headers['user-agent'] === 'string' ? request.headers['user-agent'] : null,
    details: { status_code: statusCode, request_id: request.id, role: tenant.role },
  };
}

export const auditPlugin = fp(
  async (app: FastifyInstance) => {
    app.addHook('onResponse', async (request, reply) => {
      if (!MUTATING.has(request.method) || reply.statusCode >= 400 || request.auditRecorded) return;
      if (!request.tenant || !request.user) return;
      try {
        await recordAudit(app.db as unknown as Kysely<TenantSchema>, auditEntryOf(request, reply.statusCode));
      } catch (err) {
        request.log.error({ err }, 'could not record the audit entry');
      }
    });
    await app.register(auditRoutes, { prefix: '/api/tenants/:tid/audit' });
  },
  { name: 'audit', dependencies: ['core', 'auth', 'tenant-context'] },
);
