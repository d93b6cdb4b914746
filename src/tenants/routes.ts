/**
 * /api/tenants (API.md "Tenants"): the caller's tenants, creating one, and the
 * management of one tenant by its admins: settings, soft delete, members,
 * invitations. Non-members get 404 (tenantContext), too-low roles 403.
 * GET and PUT /{tid} still reach a soft-deleted tenant for its admins (to see
 * it and reactivate it); to anyone else it is 404 tenant_inactive.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { PaginationQuery, pageMeta, pageParams, problems } from '../http/schemas.js';
import { errors } from '../http/errors.js';
import { requireRole } from './context.js';
import { pageUserTenants } from './queries.js';
import {
  addMember, changeMemberRole, createInvitation, createTenant, deactivateTenant, getTenantDetail, publicMember,
  removeMember, updateTenant, type TenancyDeps,
} from './service.js';
import {
  AddMemberBody, CreateTenantBody, InvitationBody, InvitationResponse, MemberParams, MembershipSchema, RoleBody,
  TenantListResponse, TenantParams, TenantSchema, UpdateTenantBody,
} from './schemas.js';

/** A soft-deleted tenant is reachable by its admins only (routes using tenantContextAllowInactive). */
async function inactiveOnlyForAdmins(request: FastifyRequest): Promise<void> {
  if (!request.tenant.is_active && request.tenant.role !== 'admin') {
    throw errors.notFound('This organization has been deactivated', 'tenant_inactive');
  }
}

export const tenantRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const deps: TenancyDeps = { db: app.db, config: app.config, dedicated: app.dedicatedTenants };
  const adminOnly = requireRole('admin');
  app.addHook('onRequest', app.authenticate);

  app.get('/', {
    schema: {
      tags: ['tenants'],
      summary: "The caller's tenants with their role (soft-deleted ones listed with is_active=false)",
      querystring: PaginationQuery,
      response: { 200: TenantListResponse, ...problems(400, 401, 403) },
    },
  }, async (request) => {
    const { page, perPage, offset } = pageParams(request.query);
    const { rows, total } = await pageUserTenants(app.db, request.user.id, perPage, offset);
    return {
      tenants: rows.map((r) => ({
        ...r,
        storage_used_bytes: Number(r.storage_used_bytes),
        created_at: r.created_at.toISOString(),
        joined_at: r.joined_at.toISOString(),
      })),
      ...pageMeta(total, page, perPage),
    };
  });

  app.post('/', {
    schema: {
      tags: ['tenants'],
      summary: 'Create a tenant; the caller becomes its admin. `dedicated` provisions its database before answering',
      body: CreateTenantBody,
      response: { 201: TenantSchema, ...problems(400, 401, 403, 409) },
    },
  }, async (request, reply) => {
    const tenant = await createTenant(deps, {
      name: request.body.name,
      isolation: request.body.isolation,
      quotaMb: request.body.storage_quota_mb,
      userId: request.user.id,
    });
    return reply.status(201).send(await getTenantDetail(app.db, tenant.id));
  });

  // GET / PUT: an admin still reaches a soft-deleted tenant (to reactivate it).
  const settings: FastifyPluginAsyncTypebox = async (r) => {
    r.addHook('onRequest', app.tenantContextAllowInactive);
    r.addHook('preValidation', inactiveOnlyForAdmins);

    r.get('/:tid', {
      schema: {
        tags: ['tenants'],
        summary: 'The tenant with its members',
        params: TenantParams,
        response: { 200: TenantSchema, ...problems(401, 403, 404) },
      },
    }, async (request) => getTenantDetail(app.db, request.tenant.id));

    r.put('/:tid', {
      preValidation: adminOnly,
      schema: {
        tags: ['tenants'],
        summary: 'Rename, change the quota, deactivate or reactivate (admin)',
        params: TenantParams,
        body: UpdateTenantBody,
        response: { 200: TenantSchema, ...problems(400, 401, 403, 404, 409) },
      },
    }, async (request) => {
      await updateTenant(deps, { tenantId: request.tenant.id, userId: request.user.id, ...request.body });
      return getTenantDetail(app.db, request.tenant.id);
    });
  };

  const management: FastifyPluginAsyncTypebox = async (r) => {
    r.addHook('onRequest', app.tenantContext);
    r.addHook('preValidation', adminOnly);

    r.delete('/:tid', {
      schema: {
        tags: ['tenants'],
        summary: 'Soft-delete the tenant (admin): is_active=false, its data is no longer served',
        params: TenantParams,
        response: { 204: Type.Null(), ...problems(401, 403, 404) },
      },
    }, async (request, reply) => {
      await deactivateTenant(deps, { tenantId: request.tenant.id, userId: request.user.id });
      return reply.status(204).send(null);
    });

    r.post('/:tid/users', {
      schema: {
        tags: ['tenants'],
        summary: 'Add an existing user (by user_id or email) with a role (admin)',
        params: TenantParams,
        body: AddMemberBody,
        response: { 201: MembershipSchema, ...problems(400, 401, 403, 404, 409) },
      },
    }, async (request, reply) => {
      const { user_id, email, role } = request.body;
      if ((user_id === undefined) === (email === undefined)) {
        throw errors.validation('Give exactly one of user_id or email', 'validation_error');
      }
      const m = await addMember(deps, { tenantId: request.tenant.id, actorId: request.user.id, userId: user_id, email, role });
      return reply.status(201).send({ tenant_id: request.tenant.id, ...publicMember(m) });
    });

    r.put('/:tid/users/:uid', {
      schema: {
        tags: ['tenants'],
        summary: "Change a member's role (admin); the last admin cannot be demoted (409)",
        params: MemberParams,
        body: RoleBody,
        response: { 200: MembershipSchema, ...problems(400, 401, 403, 404, 409) },
      },
    }, async (request) => {
      const m = await changeMemberRole(deps, {
        tenantId: request.tenant.id, actorId: request.user.id, userId: request.params.uid, role: request.body.role,
      });
      return { tenant_id: request.tenant.id, ...publicMember(m) };
    });

    r.delete('/:tid/users/:uid', {
      schema: {
        tags: ['tenants'],
        summary: 'Remove a member (admin); the last admin cannot be removed (409)',
        params: MemberParams,
        response: { 204: Type.Null(), ...problems(401, 403, 404, 409) },
      },
    }, async (request, reply) => {
      await removeMember(deps, { tenantId: request.tenant.id, actorId: request.user.id, userId: request.params.uid });
      return reply.status(204).send(null);
    });

    r.post('/:tid/invitations', {
      schema: {
        tags: ['tenants'],
        summary: 'Invite an email with a role (admin): a single-use token valid 7 days',
        params: TenantParams,
        body: InvitationBody,
        response: { 201: InvitationResponse, ...problems(400, 401, 403, 404, 409) },
      },
    }, async (request, reply) => {
      const inv = await createInvitation(deps, {
        tenantId: request.tenant.id, actorId: request.user.id, email: request.body.email, role: request.body.role,
      });
      return reply.status(201).send({
        id: inv.id, email: inv.email, role: inv.role, invitation_token: inv.token, expires_at: inv.expiresAt.toISOString(),
      });
    });
  };

  await app.register(settings);
  await app.register(management);
};
