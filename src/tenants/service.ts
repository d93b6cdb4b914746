/**
 * Tenancy rules: creating tenants (shared, or dedicated with a database of
 * their own), updating and soft-deleting them, members and their roles (the
 * last admin stays), invitations. Each change writes its outbox event in the
 * same control-plane transaction.
 */
import crypto from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { ControlSchema, Isolation, Role, Tenant } from '../db/schema.js';
import type { Config } from '../config.js';
import { errors } from '../http/errors.js';
import { randomToken, sha256 } from '../auth/tokens.js';
import { normalizeEmail } from '../auth/service.js';
import type { DedicatedTenantDatabases } from './dedicated.js';
import { dedicatedDatabaseName } from './dedicated.js';
import {
  countAdmins, getMember, getTenantRow, insertTenantWithAdmin, isUniqueViolation, listMembers, lockTenant,
  recordControlEvent, slugify, tenantNameTaken, type MemberRow,
} from './queries.js';
import { UUID_RE } from '../http/ids.js';

export const INVITATION_TTL_MS = 7 * 24 * 3600 * 1000;

export interface TenancyDeps {
  db: Kysely<ControlSchema>;
  config: Config;
  /** null on the embedded database (PGlite): dedicated isolation is unsupported there. */
  dedicated: DedicatedTenantDatabases | null;
}

export interface TenantDetail {
  id: string;
  name: string;
  isolation: Isolation;
  is_active: boolean;
  storage_quota_mb: number;
  storage_used_bytes: number;
  created_at: string;
  updated_at: string;
  members: Array<{ user_id: string; email: string; role: Role; joined_at: string }>;
}

export const publicMember = (m: MemberRow) => ({
  user_id: m.user_id,
  email: m.email,
  role: m.role,
  joined_at: m.joined_at.toISOString(),
});

export function publicTenant(t: Tenant, members: MemberRow[]): TenantDetail {
  return {
    id: t.id,
    name: t.name,
    isolation: t.isolation,
    is_active: t.is_active,
    storage_quota_mb: t.storage_quota_mb,
    storage_used_bytes: Number(t.storage_used_bytes),
    created_at: t.created_at.toISOString(),
    updated_at: t.updated_at.toISOString(),
    members: members.map(publicMember),
  };
}

export async function getTenantDetail(db: Kysely<ControlSchema>, tenantId: string): Promise<TenantDetail> {
  const [tenant, members] = await Promise.all([getTenantRow(db, tenantId), listMembers(db, tenantId)]);
  if (!tenant) throw errors.notFound('Organization not found', 'tenant_not_found');
  return publicTenant(tenant, members);
}

const unsupported = () =>
  errors.badRequest(
    'Dedicated databases need PostgreSQL (DATABASE_URL); the embedded database supports "shared" isolation only',
    'unsupported',
  );

/**
 * A new tenant with `userId` as its admin. `dedicated`: its database is created
 * and migrated first, then the tenant is recorded with where it lives; if the
 * record cannot be written the database is dropped again.
 */
export async function createTenant(
  deps: TenancyDeps,
  p: { name: string; isolation?: Isolation; quotaMb?: number; userId: string },
): Promise<{ id: string; name: string }> {
  const name = p.name.trim();
  const quotaMb = p.quotaMb ?? deps.config.storageQuotaMb;
  if ((p.isolation ?? 'shared') === 'shared') {
    return deps.db.transaction().execute((trx) => insertTenantWithAdmin(trx, { name, userId: p.userId, quotaMb }));
  }
  const dedicated = deps.dedicated;
  if (!dedicated) throw unsupported();
  // Fail fast on a taken name before creating a database for nothing (the insert still decides).
  if (await tenantNameTaken(deps.db, name)) {
    throw errors.conflict('An organization with this name already exists', 'organization_exists');
  }
  const id = crypto.randomUUID();
  const dbName = dedicatedDatabaseName(slugify(name), id);
  const server = await dedicated.pickServer(deps.db);
  await dedicated.createDatabase(server, dbName);
  try {
    return await deps.db.transaction().execute((trx) =>
      insertTenantWithAdmin(trx, { id, name, userId: p.userId, quotaMb, isolation: 'dedicated', dbServer: server.key, dbName }),
    );
  } catch (err) {
    await dedicated.dropDatabase(server, dbName).catch(() => {});
    throw err;
  }
}

export async function updateTenant(
  deps: TenancyDeps,
  p: { tenantId: string; userId: string; name?: string; is_active?: boolean; storage_quota_mb?: number },
): Promise<void> {
  await deps.db.transaction().execute(async (trx) => {
    const before = await trx.selectFrom('tenants').selectAll().where('id', '=', p.tenantId).forUpdate().executeTakeFirst();
    if (!before) throw errors.notFound('Organization not found', 'tenant_not_found');
    const changes: Record<string, unknown> = {};
    const name = p.name?.trim();
    if (name !== undefined && name !== before.name) changes.name = name;
    if (p.is_active !== undefined && p.is_active !== before.is_active) changes.is_active = p.is_active;
    if (p.storage_quota_mb !== undefined && p.storage_quota_mb !== before.storage_quota_mb) {
      changes.storage_quota_mb = p.storage_quota_mb;
    }
    if (Object.keys(changes).length === 0) return;
    try {
      await trx
        .updateTable('tenants')
        .set({ ...changes, updated_at: sql<Date>`now()` })
        .where('id', '=', p.tenantId)
        .execute();
    } catch (err) {
      if (isUniqueViolation(err, 'tenants_name_key')) {
        throw errors.conflict('An organization with this name already exists', 'organization_exists');
      }
      throw err;
    }
    await recordControlEvent(trx, 'tenant.updated', {
      tenantId: p.tenantId,
      userId: p.userId,
      data: {
        changes,
        previous: Object.fromEntries(Object.keys(changes).map((k) => [k, before[k as keyof typeof before]])),
      },
    });
    if (changes.is_active === false) {
      await recordControlEvent(trx, 'tenant.deleted', { tenantId: p.tenantId, userId: p.userId, data: { name: before.name, soft: true } });
    }
  });
}

/** Soft delete: is_active=false; the tenant's data is no longer served. */
export async function deactivateTenant(deps: TenancyDeps, p: { tenantId: string; userId: string }): Promise<void> {
  await deps.db.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable('tenants')
      .set({ is_active: false, updated_at: sql<Date>`now()` })
      .where('id', '=', p.tenantId)
      .where('is_active', '=', true)
      .returning(['name'])
      .executeTakeFirst();
    if (!row) throw errors.notFound('This organization has been deactivated', 'tenant_inactive');
    await recordControlEvent(trx, 'tenant.deleted', { tenantId: p.tenantId, userId: p.userId, data: { name: row.name, soft: true } });
  });
}

const memberNotFound = () => errors.notFound('This user is not a member of the organization', 'member_not_found');
const lastAdmin = () =>
  errors.conflict('The organization must keep at least one admin: promote another member first', 'last_admin');

/** Add an existing user (by id or email) with a role. 404 user_not_found, 409 already_member. */
export async function addMember(
  deps: TenancyDeps,
  p: { tenantId: string; actorId: string; userId?: string; email?: string; role: Role },
): Promise<MemberRow> {
  return deps.db.transaction().execute(async (trx) => {
    let q = trx.selectFrom('users').select(['id', 'email']);
    q = p.userId !== undefined ? q.where('id', '=', p.userId) : q.where('email', '=', normalizeEmail(p.email ?? ''));
    const user = await q.executeTakeFirst();
    if (!user) throw errors.notFound('No user with this id or email', 'user_not_found');
    const inserted = await trx
      .insertInto('memberships')
      .values({ user_id: user.id, tenant_id: p.tenantId, role: p.role })
      .onConflict((oc) => oc.columns(['user_id', 'tenant_id']).doNothing())
      .returning(['user_id', 'role', 'joined_at'])
      .executeTakeFirst();
    if (!inserted) throw errors.conflict('This user is already a member of the organization', 'already_member');
    await recordControlEvent(trx, 'member.added', {
      tenantId: p.tenantId,
      userId: p.actorId,
      data: { user_id: user.id, role: p.role, via: 'added' },
    });
    return { user_id: user.id, email: user.email, role: inserted.role, joined_at: inserted.joined_at };
  });
}

/** Change a member's role; demoting the last admin is 409 last_admin. */
export async function changeMemberRole(
  deps: TenancyDeps,
  p: { tenantId: string; actorId: string; userId: string; role: Role },
): Promise<MemberRow> {
  if (!UUID_RE.test(p.userId)) throw memberNotFound();
  return deps.db.transaction().execute(async (trx) => {
    await lockTenant(trx, p.tenantId);
    const member = await getMember(trx, p.tenantId, p.userId);
    if (!member) throw memberNotFound();
    if (member.role === p.role) return member;
    if (member.role === 'admin' && (await countAdmins(trx, p.tenantId)) <= 1) throw lastAdmin();
    await trx
      .updateTable('memberships')
      .set({ role: p.role })
      .where('tenant_id', '=', p.tenantId)
      .where('user_id', '=', p.userId)
      .execute();
    await recordControlEvent(trx, 'member.updated', {
      tenantId: p.tenantId,
      userId: p.actorId,
      data: { user_id: p.userId, role: p.role, previous_role: member.role },
    });
    return { ...member, role: p.role };
  });
}

/** Remove a member; removing the last admin is 409 last_admin. */
export async function removeMember(deps: TenancyDeps, p: { tenantId: string; actorId: string; userId: string }): Promise<void> {
  if (!UUID_RE.test(p.userId)) throw memberNotFound();
  await deps.db.transaction().execute(async (trx) => {
    await lockTenant(trx, p.tenantId);
    const member = await getMember(trx, p.tenantId, p.userId);
    if (!member) throw memberNotFound();
    if (member.role === 'admin' && (await countAdmins(trx, p.tenantId)) <= 1) throw lastAdmin();
    await trx.deleteFrom('memberships').where('tenant_id', '=', p.tenantId).where('user_id', '=', p.userId).execute();
    await recordControlEvent(trx, 'member.removed', {
      tenantId: p.tenantId,
      userId: p.actorId,
      data: { user_id: p.userId, role: member.role },
    });
  });
}

/** A single-use invitation valid 7 days; only its sha256 is stored. 409 already_member for a member's email. */
export async function createInvitation(
  deps: TenancyDeps,
  p: { tenantId: string; actorId: string; email: string; role: Role; now?: Date },
): Promise<{ id: string; token: string; email: string; role: Role; expiresAt: Date }> {
  const email = normalizeEmail(p.email);
  const token = randomToken();
  const expiresAt = new Date((p.now ?? new Date()).getTime() + INVITATION_TTL_MS);
  return deps.db.transaction().execute(async (trx) => {
    const member = await trx
      .selectFrom('memberships as m')
      .innerJoin('users as u', 'u.id', 'm.user_id')
      .select('m.user_id')
      .where('m.tenant_id', '=', p.tenantId)
      .where('u.email', '=', email)
      .executeTakeFirst();
    if (member) throw errors.conflict('This email belongs to a member of the organization already', 'already_member');
    const inv = await trx
      .insertInto('invitations')
      .values({ tenant_id: p.tenantId, email, role: p.role, token_hash: sha256(token), expires_at: expiresAt, created_by: p.actorId })
      .returning('id')
      .executeTakeFirstOrThrow();
    await recordControlEvent(trx, 'invitation.created', {
      tenantId: p.tenantId,
      userId: p.actorId,
      data: { invitation_id: inv.id, email, role: p.role, expires_at: expiresAt.toISOString() },
    });
    return { id: inv.id, token, email, role: p.role, expiresAt };
  });
}

/** Make the user an admin of the tenant (CLI: create-admin --tenant, init). Returns what changed. */
export async function ensureAdminMembership(
  db: Kysely<ControlSchema>,
  p: { tenantId: string; userId: string },
): Promise<'added' | 'promoted' | 'unchanged'> {
  return db.transaction().execute(async (trx) => {
    const member = await trx
      .selectFrom('memberships')
      .select('role')
      .where('tenant_id', '=', p.tenantId)
      .where('user_id', '=', p.userId)
      .executeTakeFirst();
    if (member?.role === 'admin') return 'unchanged';
    if (member) {
      await trx.updateTable('memberships').set({ role: 'admin' }).where('tenant_id', '=', p.tenantId).where('user_id', '=', p.userId).execute();
      await recordControlEvent(trx, 'member.updated', {
        tenantId: p.tenantId, userId: null, data: { user_id: p.userId, role: 'admin', previous_role: member.role },
      });
      return 'promoted';
    }
    await trx.insertInto('memberships').values({ tenant_id: p.tenantId, user_id: p.userId, role: 'admin' }).execute();
    await recordControlEvent(trx, 'member.added', {
      tenantId: p.tenantId, userId: null, data: { user_id: p.userId, role: 'admin', via: 'cli' },
    });
    return 'added';
  });
}
