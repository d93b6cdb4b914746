/**
 * First-run setup used by the CLI (`create-admin`, `init`): an active user and
 * a tenant with that user as admin. Both are idempotent: running them again
 * finds what exists and changes nothing that is already right.
 */
import type { Kysely } from 'kysely';
import type { ControlSchema, Isolation } from '../db/schema.js';
import { hashPassword, PASSWORD_MAX, PASSWORD_MIN } from '../auth/passwords.js';
import { normalizeEmail } from '../auth/service.js';
import { ensureAdminMembership, createTenant, type TenancyDeps } from './service.js';
import { sql } from 'kysely';

const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export class BootstrapError extends Error {}

export async function ensureUser(
  db: Kysely<ControlSchema>,
  p: { email: string; password: string; firstName?: string; lastName?: string },
): Promise<{ id: string; email: string; created: boolean; isActive: boolean }> {
  const email = normalizeEmail(p.email);
  if (!EMAIL_RE.test(email) || email.length > 254) throw new BootstrapError(`"${p.email}" is not a valid email address`);
  const existing = await db.selectFrom('users').select(['id', 'email', 'is_active']).where('email', '=', email).executeTakeFirst();
  if (existing) return { id: existing.id, email, created: false, isActive: existing.is_active };
  if (p.password.length < PASSWORD_MIN || p.password.length > PASSWORD_MAX) {
    throw new BootstrapError(`The password must be ${PASSWORD_MIN} to ${PASSWORD_MAX} characters long`);
  }
  const passwordHash = await hashPassword(p.password);
  const user = await db
    .insertInto('users')
    .values({
      email,
      password_hash: passwordHash,
      first_name: p.firstName?.trim() ?? '',
      last_name: p.lastName?.trim() ?? '',
      is_active: true,
      default_tenant_id: null,
    })
    .onConflict((oc) => oc.column('email').doNothing())
    .returning(['id'])
    .executeTakeFirst();
  if (!user) {
    // Created meanwhile by someone else.
    const again = await db.selectFrom('users').select(['id', 'is_active']).where('email', '=', email).executeTakeFirstOrThrow();
    return { id: again.id, email, created: false, isActive: again.is_active };
  }
  return { id: user.id, email, created: true, isActive: true };
}

/** The tenant named `name` (case-insensitive) with the user as admin: created, or joined/promoted. */
export async function ensureTenantWithAdmin(
  deps: TenancyDeps,
  p: { name: string; userId: string; isolation?: Isolation },
): Promise<{ id: string; name: string; isolation: Isolation; created: boolean; membership: 'added' | 'promoted' | 'unchanged' }> {
  const name = p.name.trim();
  if (!name || name.length > 255) throw new BootstrapError('The organization name must be 1 to 255 characters long');
  const find = () =>
    deps.db.selectFrom('tenants').select(['id', 'name', 'isolation']).where(sql<string>`lower(name)`, '=', name.toLowerCase()).executeTakeFirst();
  let tenant = await find();
  let created = false;
  if (!tenant) {
    await createTenant(deps, { name, isolation: p.isolation ?? 'shared', userId: p.userId });
    tenant = await find();
    created = true;
  }
  if (!tenant) throw new BootstrapError(`The organization "${name}" could not be created`);
  const membership = created ? 'added' : await ensureAdminMembership(deps.db, { tenantId: tenant.id, userId: p.userId });
  // The user's current organization, when they had none.
  await deps.db.updateTable('users').set({ default_tenant_id: tenant.id }).where('id', '=', p.userId)
    .where('default_tenant_id', 'is', null).execute();
  return { ...tenant, created, membership };
}
