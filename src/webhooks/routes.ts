/**
 * /api/tenants/:tid/webhooks (admins): register HTTPS endpoints for event
 * types (`*` = all), see them, change or delete them, and list each one's
 * deliveries with their status. The signing secret is shown once, on creation.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { EVENT_TYPES } from '../events/envelope.js';
import { errors } from '../http/errors.js';
import { Nullable, PaginationQuery, Uuid, pageMeta, pageParams, problems } from '../http/schemas.js';
import { requireRole } from '../tenants/context.js';
import { newWebhookSecret } from './signature.js';
import { deleteEndpoint, getEndpoint, insertEndpoint, listDeliveries, listEndpoints, updateEndpoint, type WebhookEndpoint } from './store.js';
import { webhookUrlProblem } from './url.js';

const EventTypeList = Type.Array(Type.Union([Type.Literal('*'), ...EVENT_TYPES.map((t) => Type.Literal(t))]), {
  minItems: 1,
  maxItems: EVENT_TYPES.length + 1,
  uniqueItems: true,
});

const EndpointSchema = Type.Object(
  {
    id: Type.String(),
    url: Type.String(),
    event_types: Type.Array(Type.String()),
    description: Nullable(Type.String()),
    is_active: Type.Boolean(),
    created_at: Type.String({ format: 'date-time' }),
    updated_at: Type.String({ format: 'date-time' }),
  },
  { $id: 'WebhookEndpoint' },
);

const CreatedEndpointSchema = Type.Composite([
  Type.Omit(EndpointSchema, []),
  Type.Object({ secret: Type.String({ description: 'HMAC-SHA256 signing secret; shown only now' }) }),
]);

const DeliverySchema = Type.Object({
  id: Type.Integer(),
  event_id: Type.String(),
  event_type: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')]),
  attempts: Type.Integer(),
  last_status_code: Nullable(Type.Integer()),
  last_error: Nullable(Type.String()),
  next_attempt_at: Nullable(Type.String({ format: 'date-time' })),
  created_at: Type.String({ format: 'date-time' }),
  delivered_at: Nullable(Type.String({ format: 'date-time' })),
});

const Params = Type.Object({ tid: Type.String(), id: Uuid });

function publicEndpoint(e: WebhookEndpoint) {
  return {
    id: e.id,
    url: e.url,
    event_types: e.event_types,
    description: e.description,
    is_active: e.is_active,
    created_at: new Date(e.created_at).toISOString(),
    updated_at: new Date(e.updated_at).toISOString(),
  };
}

export const webhookRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const allowInsecure = app.config.webhookAllowInsecure;
  const notFound = () => errors.notFound('Webhook not found', 'webhook_not_found');
  const checkUrl = (url: string) => {
    const problem = webhookUrlProblem(url, allowInsecure);
    if (problem) throw errors.validation(`body.url ${problem}`, 'invalid_webhook_url');
  };

  app.addHook('onRequest', app.authenticate);
  app.addHook('onRequest', app.tenantContext);
  app.addHook('preHandler', requireRole('admin'));

  app.post('/', {
    schema: {
      tags: ['webhooks'],
      summary: 'Register an endpoint for event types (admins); answers the signing secret once',
      params: Type.Object({ tid: Type.String() }),
      body: Type.Object(
        { url: Type.String({ maxLength: 2048 }), event_types: EventTypeList, description: Type.Optional(Type.String({ maxLength: 500 })) },
        { additionalProperties: false },
      ),
      response: { 201: CreatedEndpointSchema, ...problems(400, 401, 403, 404) },
    },
  }, async (request, reply) => {
    checkUrl(request.body.url);
    const secret = newWebhookSecret();
    const e = await insertEndpoint(app.db, {
      tenantId: request.tenant.id,
      url: request.body.url,
      eventTypes: request.body.event_types,
      secret,
      description: request.body.description ?? null,
      createdBy: request.user.id,
    });
    reply.status(201);
    return { ...publicEndpoint(e), secret };
  });

  app.get('/', {
    schema: {
      tags: ['webhooks'],
      params: Type.Object({ tid: Type.String() }),
      response: { 200: Type.Object({ webhooks: Type.Array(EndpointSchema) }), ...problems(401, 403, 404) },
    },
  }, async (request) => ({ webhooks: (await listEndpoints(app.db, request.tenant.id)).map(publicEndpoint) }));

  app.get('/:id', {
    schema: { tags: ['webhooks'], params: Params, response: { 200: EndpointSchema, ...problems(400, 401, 403, 404) } },
  }, async (request) => {
    const e = await getEndpoint(app.db, request.tenant.id, request.params.id);
    if (!e) throw notFound();
    return publicEndpoint(e);
  });

  app.patch('/:id', {
    schema: {
      tags: ['webhooks'],
      params: Params,
      body: Type.Object(
        {
          url: Type.Optional(Type.String({ maxLength: 2048 })),
          event_types: Type.Optional(EventTypeList),
          is_active: Type.Optional(Type.Boolean()),
          description: Type.Optional(Nullable(Type.String({ maxLength: 500 }))),
        },
        { additionalProperties: false },
      ),
      response: { 200: EndpointSchema, ...problems(400, 401, 403, 404) },
    },
  }, async (request) => {
    if (request.body.url !== undefined) checkUrl(request.body.url);
    const e = await updateEndpoint(app.db, request.tenant.id, request.params.id, {
      url: request.body.url,
      eventTypes: request.body.event_types,
      isActive: request.body.is_active,
      description: request.body.description,
    });
    if (!e) throw notFound();
    return publicEndpoint(e);
  });

  app.delete('/:id', {
    schema: { tags: ['webhooks'], params: Params, response: { 204: Type.Null(), ...problems(400, 401, 403, 404) } },
  }, async (request, reply) => {
    if (!(await deleteEndpoint(app.db, request.tenant.id, request.params.id))) throw notFound();
    reply.status(204);
    return null;
  });

  app.get('/:id/deliveries', {
    schema: {
      tags: ['webhooks'],
      summary: "An endpoint's deliveries, newest first, with their status",
      params: Params,
      querystring: Type.Composite([
        PaginationQuery,
        Type.Object({ status: Type.Optional(Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')])) }),
      ]),
      response: {
        200: Type.Object({ deliveries: Type.Array(DeliverySchema), total: Type.Integer(), page: Type.Integer(), per_page: Type.Integer(), pages: Type.Integer() }),
        ...problems(400, 401, 403, 404),
      },
    },
  }, async (request) => {
    const e = await getEndpoint(app.db, request.tenant.id, request.params.id);
    if (!e) throw notFound();
    const { page, perPage, offset } = pageParams(request.query);
    const { rows, total } = await listDeliveries(app.db, {
      tenantId: request.tenant.id,
      endpointId: e.id,
      status: request.query.status,
      limit: perPage,
      offset,
    });
    const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
    return {
      deliveries: rows.map((d) => ({
        id: d.id,
        event_id: d.event_id,
        event_type: d.event_type,
        status: d.status,
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        next_attempt_at: d.status === 'pending' ? iso(d.next_attempt_at) : null,
        created_at: new Date(d.created_at).toISOString(),
        delivered_at: iso(d.delivered_at),
      })),
      ...pageMeta(total, page, perPage),
    };
  });
};
