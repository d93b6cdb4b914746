/** Control-plane queries on tenants and memberships shared by auth, users and tenants. */
import crypto from 'node:crypto';
import type { Kysely } from 'kysely';
import type { ControlSchema, Role } from '../db/schema.js';
import { sha256 } from '../auth/tokens.js';
import { errors } from '../http/errors.js';

type Db = Kysely<ControlSchema>;

export interface UserTenant {
  id: string;
  name: string;
  role: Role;
  is_active: boolean;
}

/** The user's tenants with their role, oldest membership first. */
export async function listUserTenants(db: Db, userId: string): Promise<UserTenant[]> {
  return db
    .selectFrom('memberships as m')
    .innerJoin('tenants as t', 't.id', 'm.tenant_id')
    .select(['t.id', 't.name', 'm.role', 't.is_active'])
    .where('m.user_id', '=', userId)
    .orderBy('m.joined_at')
    .orderBy('t.id')
    .execute();
}

/** A tenant's name as a PostgreSQL-identifier-safe slug (database names, keys). */
export function slugify(name: string): string {
  const slug = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 40);
  return slug || 'tenant';
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: string; constraint?: string; message?: string };
  if (e?.code !== '23505') return false;
  return constraint === undefined || e.constraint === constraint || (e.message ?? '').includes(constraint);
}

/** Insert a shared tenant with `userId` as its admin (the caller's transaction). 409 when the name is taken. */
export async function insertTenantWithAdmin(
  trx: Db,
  p: { name: string; userId: string; quotaMb: number; id?: string },
): Promise<{ id: string; name: string }> {
  let tenant;
  try {
    tenant = await trx
      .insertInto('tenants')
      .values({
        id: p.id ?? crypto.randomUUID(),
        name: p.name,
        slug: slugify(p.name),
        isolation: 'shared',
        storage_quota_mb: p.quotaMb,
        created_by: p.userId,
      })
      .returning(['id', 'name'])
      .executeTakeFirstOrThrow();
  } catch (err) {
    if (isUniqueViolation(err, 'tenants_name_key')) {
      throw errors.conflict('An organization with this name already exists', 'organization_exists');
    }
    throw err;
  }
  await trx.insertInto('memberships').values({ user_id: p.userId, tenant_id: tenant.id, role: 'admin' }).execute();
  return tenant;
}

/**
 * Use an invitation: valid (not used, not expired), for this email, of an active
 * tenant. Marks it used and adds the membership. Returns the tenant id.
 */
export async function acceptInvitation(
  trx: Db,
  p: { token: string; userId: string; email: string },
): Promise<string> {
  const inv = await trx
    .selectFrom('invitations as i')
    .innerJoin('tenants as t', 't.id', 'i.tenant_id')
    .select(['i.id', 'i.tenant_id', 'i.email', 'i.role', 'i.expires_at', 'i.used_at', 't.is_active'])
    .where('i.token_hash', '=', sha256(p.token))
    .forUpdate()
    .executeTakeFirst();
  if (!inv || !inv.is_active) throw errors.badRequest('The invitation is not valid', 'invalid_invitation');
  if (inv.used_at) throw errors.conflict('The invitation has already been used', 'invitation_used');
  if (inv.expires_at.getTime() <= Date.now()) throw errors.badRequest('The invitation has expired', 'invitation_expired');
  if (inv.email.toLowerCase() !== p.email.toLowerCase()) {
    throw errors.forbidden('The invitation was sent to another email address', 'invitation_email_mismatch');
  }
  await trx.updateTable('invitations').set({ used_at: new Date() }).where('id', '=', inv.id).execute();
  await trx
    .insertInto('memberships')
    .values({ user_id: p.userId, tenant_id: inv.tenant_id, role: inv.role })
    .onConflict((oc) => oc.columns(['user_id', 'tenant_id']).doNothing())
    .execute();
  return inv.tenant_id;
}
