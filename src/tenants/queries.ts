/**
 * Control-plane queries on tenants, memberships and invitations, shared by
 * auth (register), users (/me/tenants) and the tenant routes. Functions that
 * change something take the caller's transaction and write their outbox
 * events in it (the main database's outbox: control-plane changes).
 */
import crypto from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { ControlSchema, Isolation, Role, TenantSchema } from '../db/schema.js';
import { sha256 } from '../auth/tokens.js';
import { errors } from '../http/errors.js';
import { recordEvent } from '../events/outbox.js';
import type { EventType } from '../events/envelope.js';

type Db = Kysely<ControlSchema>;

export const ROLES: readonly Role[] = ['admin', 'user', 'viewer'];

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
    .slice(0, 40)
    .replace(/_+$/, '');
  return slug || 'tenant';
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: string; constraint?: string; message?: string };
  if (e?.code !== '23505') return false;
  return constraint === undefined || e.constraint === constraint || (e.message ?? '').includes(constraint);
}

const organizationExists = () => errors.conflict('An organization with this name already exists', 'organization_exists');

/**
 * An outbox event of a control-plane change, in the caller's transaction. The
 * tenant is set for the transaction so the outbox's row-level security policy
 * accepts the row even when the database user is not a superuser.
 */
export async function recordControlEvent(
  trx: Db,
  type: EventType,
  p: { tenantId: string; userId: string | null; data?: Record<string, unknown> },
): Promise<void> {
  await sql`SELECT set_config('app.tenant_id', ${p.tenantId}, true)`.execute(trx);
  await recordEvent(trx as unknown as Kysely<TenantSchema>, type, p);
}

/** Is the name taken (case-insensitive, as the unique index on lower(name))? */
export async function tenantNameTaken(db: Db, name: string, exceptId?: string): Promise<boolean> {
  let q = db.selectFrom('tenants').select('id').where(sql<string>`lower(name)`, '=', name.toLowerCase());
  if (exceptId) q = q.where('id', '!=', exceptId);
  return (await q.executeTakeFirst()) !== undefined;
}

/**
 * Insert a tenant with `userId` as its admin (the caller's transaction), with
 * tenant.created and member.added events. 409 `organization_exists` when the
 * name is taken. Dedicated tenants pass where their database lives.
 */
export async function insertTenantWithAdmin(
  trx: Db,
  p: {
    name: string; userId: string; quotaMb: number; id?: string;
    isolation?: Isolation; dbServer?: string | null; dbName?: string | null;
  },
): Promise<{ id: string; name: string }> {
  let tenant;
  try {
    tenant = await trx
      .insertInto('tenants')
      .values({
        id: p.id ?? crypto.randomUUID(),
        name: p.name,
        slug: slugify(p.name),
        isolation: p.isolation ?? 'shared',
        storage_quota_mb: p.quotaMb,
        db_server: p.dbServer ?? null,
        db_name: p.dbName ?? null,
        created_by: p.userId,
      })
      .returning(['id', 'name', 'isolation'])
      .executeTakeFirstOrThrow();
  } catch (err) {
    if (isUniqueViolation(err, 'tenants_name_key')) throw organizationExists();
    throw err;
  }
  await trx.insertInto('memberships').values({ user_id: p.userId, tenant_id: tenant.id, role: 'admin' }).execute();
  await recordControlEvent(trx, 'tenant.created', {
    tenantId: tenant.id,
    userId: p.userId,
    data: { name: tenant.name, isolation: tenant.isolation, storage_quota_mb: p.quotaMb },
  });
  await recordControlEvent(trx, 'member.added', {
    tenantId: tenant.id,
    userId: p.userId,
    data: { user_id: p.userId, role: 'admin', via: 'tenant_created' },
  });
  return { id: tenant.id, name: tenant.name };
}

/**
 * Use an invitation: valid (not used, not expired), for this email, of an active
 * tenant. Marks it used and adds the membership (member.added). Returns the tenant id.
 * Unknown token or deactivated tenant: 400 invalid_invitation; used: 409
 * invitation_used; expired: 400 invitation_expired; another email: 403
 * invitation_email_mismatch.
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
    .forUpdate('i')
    .executeTakeFirst();
  if (!inv || !inv.is_active) throw errors.badRequest('The invitation is not valid', 'invalid_invitation');
  if (inv.used_at) throw errors.conflict('The invitation has already been used', 'invitation_used');
  if (inv.expires_at.getTime() <= Date.now()) throw errors.badRequest('The invitation has expired', 'invitation_expired');
  if (inv.email.toLowerCase() !== p.email.toLowerCase()) {
    throw errors.forbidden('The invitation was sent to another email address', 'invitation_email_mismatch');
  }
  await trx.updateTable('invitations').set({ used_at: new Date() }).where('id', '=', inv.id).execute();
  const added = await trx
    .insertInto('memberships')
    .values({ user_id: p.userId, tenant_id: inv.tenant_id, role: inv.role })
    .onConflict((oc) => oc.columns(['user_id', 'tenant_id']).doNothing())
    .returning('role')
    .executeTakeFirst();
  if (added) {
    await recordControlEvent(trx, 'member.added', {
      tenantId: inv.tenant_id,
      userId: p.userId,
      data: { user_id: p.userId, role: inv.role, via: 'invitation', invitation_id: inv.id },
    });
  }
  return inv.tenant_id;
}

// ---- reads for the tenant routes ----

export interface MemberRow {
  user_id: string;
  email: string;
  role: Role;
  joined_at: Date;
}

export async function listMembers(db: Db, tenantId: string): Promise<MemberRow[]> {
  return db
    .selectFrom('memberships as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .select(['m.user_id', 'u.email', 'm.role', 'm.joined_at'])
    .where('m.tenant_id', '=', tenantId)
    .orderBy('m.joined_at')
    .orderBy('u.email')
    .execute();
}

export async function getMember(db: Db, tenantId: string, userId: string): Promise<MemberRow | undefined> {
  return db
    .selectFrom('memberships as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .select(['m.user_id', 'u.email', 'm.role', 'm.joined_at'])
    .where('m.tenant_id', '=', tenantId)
    .where('m.user_id', '=', userId)
    .executeTakeFirst();
}

export async function getTenantRow(db: Db, tenantId: string) {
  return db.selectFrom('tenants').selectAll().where('id', '=', tenantId).executeTakeFirst();
}

/** The caller's tenants with their role, paginated, oldest membership first. */
export async function pageUserTenants(db: Db, userId: string, limit: number, offset: number) {
  const base = db.selectFrom('memberships as m').innerJoin('tenants as t', 't.id', 'm.tenant_id').where('m.user_id', '=', userId);
  const [rows, count] = await Promise.all([
    base
      .select([
        't.id', 't.name', 't.isolation', 't.is_active', 'm.role', 't.storage_quota_mb', 't.storage_used_bytes',
        't.created_at', 'm.joined_at',
      ])
      .orderBy('m.joined_at')
      .orderBy('t.id')
      .limit(limit)
      .offset(offset)
      .execute(),
    base.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(count.n) };
}

/** Lock the tenant row for the rest of the transaction: membership changes of one tenant run one at a time. */
export async function lockTenant(trx: Db, tenantId: string): Promise<void> {
  await trx.selectFrom('tenants').select('id').where('id', '=', tenantId).forUpdate().executeTakeFirst();
}

export async function countAdmins(trx: Db, tenantId: string): Promise<number> {
  const r = await trx
    .selectFrom('memberships')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('tenant_id', '=', tenantId)
    .where('role', '=', 'admin')
    .executeTakeFirstOrThrow();
  return Number(r.n);
}
