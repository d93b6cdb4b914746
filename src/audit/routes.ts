/**
 * GET /api/tenants/:tid/audit (admins): the tenant's audit trail, newest first -
 * who did what, when, from which IP. Filters: action, user_id, since, until.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { Nullable, PaginationQuery, Uuid, pageMeta, pageParams, problems } from '../http/schemas.js';
import { requireRole } from '../tenants/context.js';
import { listAudit } from './queries.js';

const AuditEntrySchema = Type.Object(
  {
    id: Type.Integer(),
    event_id: Type.String(),
    user_id: Nullable(Type.String()),
    actor_email: Nullable(Type.String()),
    action: Type.String(),
    resource_type: Nullable(Type.String()),
    resource_id: Nullable(Type.String()),
    ip: Nullable(Type.String()),
    user_agent: Nullable(Type.String()),
    details: Type.Unknown(),
    occurred_at: Type.String({ format: 'date-time' }),
    recorded_at: Type.String({ format: 'date-time' }),
  },
  { $id: 'AuditEntry' },
);

const AuditQuery = Type.Composite([
  PaginationQuery,
  Type.Object({
    action: Type.Optional(Type.String({ maxLength: 200 })),
    user_id: Type.Optional(Uuid),
    since: Type.Optional(Type.String({ format: 'date-time' })),
    until: Type.Optional(Type.String({ format: 'date-time' })),
  }),
]);

export const auditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.authenticate);
  app.addHook('onRequest', app.tenantContext);

  app.get('/', {
    preHandler: requireRole('admin'),
    schema: {
      tags: ['audit'],
      summary: "The tenant's audit trail, newest first (admins)",
      params: Type.Object({ tid: Type.String() }),
      querystring: AuditQuery,
      response: {
        200: Type.Object({
          entries: Type.Array(AuditEntrySchema),
          total: Type.Integer(),
          page: Type.Integer(),
          per_page: Type.Integer(),
          pages: Type.Integer(),
        }),
        ...problems(400, 401, 403, 404),
      },
    },
  }, async (request) => {
    const { page, perPage, offset } = pageParams(request.query);
    const { rows, total } = await listAudit(app.db, {
      tenantId: request.tenant.id,
      action: request.query.action,
      userId: request.query.user_id,
      since: request.query.since,
      until: request.query.until,
      limit: perPage,
      offset,
    });
    return {
      entries: rows.map((r) => ({
        id: r.id,
        event_id: r.event_id,
        user_id: r.user_id,
        actor_email: r.actor_email,
        action: r.action,
        resource_type: r.resource_type,
        resource_id: r.resource_id,
        ip: r.ip,
        user_agent: r.user_agent,
        details: r.details,
        occurred_at: new Date(r.occurred_at).toISOString(),
        recorded_at: new Date(r.recorded_at).toISOString(),
      })),
      ...pageMeta(total, page, perPage),
    };
  });
};
