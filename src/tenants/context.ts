/**
 * The tenant a request works in. `tenantContext` is the onRequest hook of the
 * route groups under /api/tenants/:tid: it needs `request.user` (so it comes
 * after `app.authenticate`) and sets `request.tenant` with the caller's role.
 * Not a member, unknown id, malformed id: 404 (existence is never revealed).
 * A soft-deleted tenant: 404 `tenant_inactive` for all of its data.
 * `requireRole('admin')` is the preHandler for routes that need more than membership.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Compilable, Kysely } from 'kysely';
import type { Isolation, Role, TenantSchema } from '../db/schema.js';
import type { ReadResult, TenantTx } from '../db/tenant-db.js';
import { errors } from '../http/errors.js';
import { bindLog } from '../http/log.js';
import { UUID_RE } from '../http/ids.js';

export interface TenantContext {
  id: string;
  name: string;
  isolation: Isolation;
  db_server: string | null;
  db_name: string | null;
  storage_quota_mb: number;
  is_active: boolean;
  /** The caller's role in this tenant. */
  role: Role;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the tenant hooks; only read it in route groups that add them. */
    tenant: TenantContext;
    /** Run `fn` in a transaction on this tenant's data, scoped by row-level security. */
    withTenantDb<T>(fn: (trx: TenantTx) => Promise<T>): Promise<T>;
    /** Read-only queries on this tenant's data, scoped like withTenantDb, in one round trip (TenantDatabases.read). */
    readTenantDb<const Q extends readonly Compilable<any>[]>(build: (db: Kysely<TenantSchema>) => Q): ReadResult<Q>;
  }
  interface FastifyInstance {
    resolveTenant(userId: string, tenantId: string, opts?: { allowInactive?: boolean }): Promise<TenantContext>;
    tenantContext(request: FastifyRequest, reply: FastifyReply): Promise<void>;
    /** Like tenantContext but a soft-deleted tenant is still resolved (tenant management routes). */
    tenantContextAllowInactive(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  }
}

const RANK: Record<Role, number> = { viewer: 1, user: 2, admin: 3 };

export function roleAtLeast(role: Role, min: Role): boolean {
  return RANK[role] >= RANK[min];
}

export function requireRole(min: Role) {
  return async (request: FastifyRequest): Promise<void> => {
    if (!roleAtLeast(request.tenant.role, min)) {
      throw errors.forbidden(`This needs the ${min} role in this organization`, 'insufficient_role');
    }
  };
}

/** A membership row as the request's tenant: none is 404, a soft-deleted tenant 404 `tenant_inactive` unless allowed. */
function checkTenant(row: TenantContext | null, opts: { allowInactive?: boolean }): TenantContext {
  if (!row) throw errors.notFound('Organization not found', 'tenant_not_found');
  if (!row.is_active && !opts.allowInactive) {
    throw errors.notFound('This organization has been deactivated', 'tenant_inactive');
  }
  return row;
}

export const tenantContextPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorateRequest('tenant', null as unknown as TenantContext);
    app.decorateRequest('withTenantDb', function <T>(this: FastifyRequest, fn: (trx: TenantTx) => Promise<T>) {
      return app.tenantDbs.withTenant(this.tenant, fn);
    });
    app.decorateRequest('readTenantDb', function <const Q extends readonly Compilable<any>[]>(
      this: FastifyRequest, build: (db: Kysely<TenantSchema>) => Q,
    ) {
      return app.tenantDbs.read(this.tenant, build);
    });

    app.decorate('resolveTenant', async (userId: string, tenantId: string, opts: { allowInactive?: boolean } = {}) => {
      const notFound = () => errors.notFound('Organization not found', 'tenant_not_found');
      if (!UUID_RE.test(tenantId)) throw notFound();
      const row = await app.db
        .selectFrom('tenants as t')
        .innerJoin('memberships as m', (j) => j.onRef('m.tenant_id', '=', 't.id').on('m.user_id', '=', userId))
        .select(['t.id', 't.name', 't.isolation', 't.db_server', 't.db_name', 't.storage_quota_mb', 't.is_active', 'm.role'])
        .where('t.id', '=', tenantId)
        .executeTakeFirst();
      return checkTenant(row ?? null, opts);
    });

    const hook = (allowInactive: boolean) => async (request: FastifyRequest, _reply: FastifyReply) => {
      const params = request.params as { tid?: string };
      if (!Object.hasOwn(params, 'tid')) throw new Error('tenantContext used on a route without a :tid parameter');
      const tid = params.tid;
      // An empty segment (`/api/tenants//documents`) names no tenant.
      if (!tid) throw errors.notFound('Organization not found', 'tenant_not_found');
      // `authenticate` read the membership with the session when the route names a tenant.
      const looked = request.tenantLookup;
      request.tenant = looked && looked.tenantId === tid.toLowerCase()
        ? checkTenant(looked.tenant, { allowInactive })
        : await app.resolveTenant(request.user.id, tid, { allowInactive });
      bindLog(request, { tenant_id: request.tenant.id });
    };
    app.decorate('tenantContext', hook(false));
    app.decorate('tenantContextAllowInactive', hook(true));
  },
  { name: 'tenant-context', dependencies: ['core', 'auth'] },
);
