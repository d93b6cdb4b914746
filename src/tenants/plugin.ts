/**
 * The tenants capability: on PostgreSQL, the dedicated-database resolver is set
 * on `app.tenantDbs` (closed with it by the core plugin), then the /api/tenants
 * routes. On the embedded database `app.dedicatedTenants` is null and
 * `dedicated` isolation answers 400 `unsupported`.
 *
 * Other processes (worker, CLI) that reach dedicated tenants' data do the same:
 * `installDedicatedResolver(tenantDbs, config)`.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import type { TenantDatabases } from '../db/tenant-db.js';
import { DedicatedTenantDatabases } from './dedicated.js';
import { tenantRoutes } from './routes.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Dedicated tenant databases (provisioning, pools); null on the embedded database. */
    dedicatedTenants: DedicatedTenantDatabases | null;
  }
}

export function installDedicatedResolver(tenantDbs: TenantDatabases, config: Config): DedicatedTenantDatabases | null {
  const dedicated = DedicatedTenantDatabases.fromConfig(config);
  if (dedicated) tenantDbs.setDedicatedResolver(dedicated);
  return dedicated;
}

export const tenantsPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorate('dedicatedTenants', installDedicatedResolver(app.tenantDbs, app.config));
    await app.register(tenantRoutes, { prefix: '/api/tenants' });
  },
  { name: 'tenants', dependencies: ['core', 'auth', 'tenant-context'] },
);
