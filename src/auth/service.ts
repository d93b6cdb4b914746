/**
 * Identity rules: registration, login (cookie session + access/refresh tokens),
 * refresh rotation with reuse detection, logout, and resolving who a request is.
 */
import crypto from 'node:crypto';
import type pg from 'pg';
import { sql, type CompiledQuery, type InferResult, type Kysely } from 'kysely';
import type { ControlSchema, User } from '../db/schema.js';
import type { TenantContext } from '../tenants/context.js';
import type { Config } from '../config.js';
import { connectionFailure, errors } from '../http/errors.js';
import { hashPassword, verifyPassword } from './passwords.js';
import { randomToken, sha256, signAccessToken, verifyAccessToken, safeEqual, type TokenKey } from './tokens.js';
import type { Denylist } from './revocation.js';
import type { RateLimiter } from './rate-limit.js';
import { acceptInvitation, insertTenantWithAdmin, isUniqueViolation, listUserTenants, type UserTenant } from '../tenants/queries.js';

export interface AuthDeps {
  db: Kysely<ControlSchema>;
  config: Config;
  denylist: Denylist;
  limiter: RateLimiter;
  key: TokenKey;
  /** The pg pool behind `db` (PostgreSQL only): the per-request session lookup runs there as a named prepared statement. */
  pool?: Pick<pg.Pool, 'query'>;
}

export interface AuthUser {
  id: string;
  email: string;
  sessionId: string;
  method: 'bearer' | 'cookie';
  /** Bearer only: the access token's id and expiry, to deny it on logout. */
  jti?: string;
  tokenExp?: number;
  csrfToken: string;
}

export const publicUser = (u: User) => ({
  id: u.id,
  email: u.email,
  first_name: u.first_name,
  last_name: u.last_name,
  is_active: u.is_active,
  created_at: u.created_at.toISOString(),
  updated_at: u.updated_at.toISOString(),
});

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** The user's default tenant: the recorded one if still a membership, else the first membership. */
export function defaultTenantId(user: Pick<User, 'default_tenant_id'>, tenants: UserTenant[]): string | null {
  const active = tenants.filter((t) => t.is_active);
  if (user.default_tenant_id && active.some((t) => t.id === user.default_tenant_id)) return user.default_tenant_id;
  return active[0]?.id ?? null;
}

/** The user's current organization (default tenant), as login and /me report it. */
export async function currentOrganizationId(db: Kysely<ControlSchema>, userId: string): Promise<string | null> {
  const [user, tenants] = await Promise.all([
    db.selectFrom('users').select('default_tenant_id').where('id', '=', userId).executeTakeFirstOrThrow(),
    listUserTenants(db, userId),
  ]);
  return defaultTenantId(user, tenants);
}

export async function register(
  deps: AuthDeps,
  input: {
    email: string; password: string; first_name?: string; last_name?: string;
    organization_name?: string; invitation_token?: string;
  },
) {
  const email = normalizeEmail(input.email);
  if (input.organization_name && input.invitation_token) {
    throw errors.badRequest('Give either organization_name or invitation_token, not both', 'validation_error');
  }
  const passwordHash = await hashPassword(input.password);
  try {
    return await deps.db.transaction().execute(async (trx) => {
      const user = await trx
        .insertInto('users')
        .values({
          email,
          password_hash: passwordHash,
          first_name: input.first_name?.trim() ?? '',
          last_name: input.last_name?.trim() ?? '',
          default_tenant_id: null,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      let organizationId: string | null = null;
      if (input.organization_name) {
        const tenant = await insertTenantWithAdmin(trx, {
          name: input.organization_name.trim(),
          userId: user.id,
          quotaMb: deps.config.storageQuotaMb,
        });
        organizationId = tenant.id;
      } else if (input.invitation_token) {
        organizationId = await acceptInvitation(trx, { token: input.invitation_token, userId: user.id, email });
      }
      const final = organizationId
        ? await trx.updateTable('users').set({ default_tenant_id: organizationId }).where('id', '=', user.id)
          .returningAll().executeTakeFirstOrThrow()
        : user;
      return { user: final, organizationId };
    });
  } catch (err) {
    if (isUniqueViolation(err, 'users_email_key')) {
      throw errors.conflict('An account with this email already exists', 'email_taken');
    }
    throw err;
  }
}

/**
 * Login limits count failed attempts only, in fixed windows of LOGIN_RATE_WINDOW:
 *  - per email and client address (LOGIN_RATE_LIMIT): one address guessing one
 *    account's password is stopped; a successful login clears this count;
 *  - per client address (LOGIN_IP_RATE_LIMIT): one address trying many accounts
 *    is stopped.
 * There is no count per email alone, on purpose: failures from anywhere would
 * then lock the account's owner out, and a flood of failed logins must never
 * block the right password from another address. Each attempt is counted
 * before the password is checked (parallel guesses cannot overrun a limit) and
 * given back when the password is right, so successful logins use no budget.
 */
export function loginLimitKeys(email: string, ip: string) {
  return { ip: `login:fail:ip:${ip}`, emailIp: `login:fail:email-ip:${ip}:${email}` };
}

export async function login(deps: AuthDeps, input: { email: string; password: string; ip: string; userAgent?: string }) {
  const email = normalizeEmail(input.email);
  const { loginRateLimit, loginIpRateLimit, loginRateWindowSec: window } = deps.config;
  const keys = loginLimitKeys(email, input.ip);
  const [byIp, byEmail] = await Promise.all([
    deps.limiter.hit(keys.ip, loginIpRateLimit, window),
    deps.limiter.hit(keys.emailIp, loginRateLimit, window),
  ]);
  if (!byIp.allowed || !byEmail.allowed) {
    throw errors.tooManyRequests(Math.max(byIp.allowed ? 0 : byIp.retryAfterSec, byEmail.allowed ? 0 : byEmail.retryAfterSec),
      'Too many login attempts, try again later');
  }
  const user = await deps.db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirst();
  const ok = await verifyPassword(user?.password_hash ?? null, input.password);
  if (!user || !ok) throw errors.unauthorized('Invalid email or password', 'invalid_credentials');
  await Promise.all([deps.limiter.refund(keys.ip), deps.limiter.reset(keys.emailIp)]);
  if (!user.is_active) throw errors.forbidden('This account is deactivated', 'account_disabled');

  const issued = await startSession(deps, user.id, input.ip, input.userAgent);
  const tenants = await listUserTenants(deps.db, user.id);
  return { user, tenants, organizationId: defaultTenantId(user, tenants), ...issued };
}

/** A new session (never reusing an old id: no fixation), its cookie token, CSRF token and first refresh token. */
async function startSession(deps: AuthDeps, userId: string, ip: string | null, userAgent?: string) {
  const cookieToken = randomToken();
  const csrfToken = randomToken();
  const refreshToken = randomToken();
  const now = Date.now();
  const sessionId = crypto.randomUUID();
  await deps.db.transaction().execute(async (trx) => {
    await trx.insertInto('sessions').values({
      id: sessionId,
      user_id: userId,
      token_hash: sha256(cookieToken),
      csrf_token: csrfToken,
      ip,
      user_agent: userAgent?.slice(0, 512) ?? null,
      expires_at: new Date(now + Math.max(deps.config.sessionTtl, deps.config.refreshTokenTtl) * 1000),
    }).execute();
    await trx.insertInto('refresh_tokens').values({
      session_id: sessionId,
      token_hash: sha256(refreshToken),
      expires_at: new Date(now + deps.config.refreshTokenTtl * 1000),
    }).execute();
  });
  const access = await signAccessToken(deps.key, { userId, sessionId, ttlSec: deps.config.accessTokenTtl });
  return { sessionId, cookieToken, csrfToken, refreshToken, accessToken: access.token, expiresIn: deps.config.accessTokenTtl };
}

/** Rotate a refresh token. A token presented twice revokes its whole family (the session). */
export async function refresh(deps: AuthDeps, token: string) {
  const now = new Date();
  const result = await deps.db.transaction().execute(async (trx) => {
    const row = await trx
      .selectFrom('refresh_tokens as r')
      .innerJoin('sessions as s', 's.id', 'r.session_id')
      .innerJoin('users as u', 'u.id', 's.user_id')
      .select(['r.id', 'r.session_id', 'r.expires_at', 'r.used_at', 's.revoked_at', 's.user_id', 'u.is_active'])
      .where('r.token_hash', '=', sha256(token))
      .forUpdate('r')
      .executeTakeFirst();
    if (!row) return { error: 'invalid' as const };
    if (row.used_at) {
      await trx.updateTable('sessions').set({ revoked_at: now }).where('id', '=', row.session_id)
        .where('revoked_at', 'is', null).execute();
      return { error: 'reused' as const };
    }
    if (row.revoked_at || row.expires_at <= now || !row.is_active) return { error: 'invalid' as const };
    await trx.updateTable('refresh_tokens').set({ used_at: now }).where('id', '=', row.id).execute();
    const next = randomToken();
    await trx.insertInto('refresh_tokens').values({
      session_id: row.session_id,
      token_hash: sha256(next),
      expires_at: new Date(now.getTime() + deps.config.refreshTokenTtl * 1000),
    }).execute();
    return { sessionId: row.session_id, userId: row.user_id, refreshToken: next };
  });
  if ('error' in result) {
    throw result.error === 'reused'
      ? errors.unauthorized('This refresh token was already used; the session has been revoked', 'token_reused')
      : errors.unauthorized('The refresh token is invalid or expired', 'invalid_token');
  }
  const access = await signAccessToken(deps.key, { userId: result.userId, sessionId: result.sessionId, ttlSec: deps.config.accessTokenTtl });
  return { accessToken: access.token, refreshToken: result.refreshToken, expiresIn: deps.config.accessTokenTtl };
}

/**
 * Revoke the session (cookie + refresh family) and deny the access token used, at once.
 * The session row is what every process checks (resolveBearer), so once it is revoked the
 * logout has taken effect: a denylist that cannot be written (Redis away) is logged, not fatal.
 */
export async function logout(deps: AuthDeps, user: AuthUser, log?: { warn(obj: object, msg: string): void }): Promise<void> {
  await deps.db.updateTable('sessions').set({ revoked_at: new Date() }).where('id', '=', user.sessionId)
    .where('revoked_at', 'is', null).execute();
  if (user.jti && user.tokenExp) {
    await deps.denylist.revoke(user.jti, user.tokenExp).catch((err: unknown) => {
      if (!connectionFailure(err)) throw err;
      log?.warn({ err }, 'logout: the session is revoked, but the access token could not be added to the denylist');
    });
  }
}

/**
 * The caller's membership in the tenant named by the route (`:tid`), read in
 * the same query as the session when the route has one (src/tenants/context.ts
 * uses it instead of a query of its own). `tenant` is null when the user is
 * not a member (or the tenant does not exist).
 */
export interface TenantLookup {
  tenantId: string;
  tenant: TenantContext | null;
}

type Resolved = { user: AuthUser; tenantLookup?: TenantLookup } | { error: 'invalid' | 'expired' | 'revoked' | 'disabled' };

const sessionUserQuery = (db: Kysely<ControlSchema>) =>
  db.selectFrom('sessions as s')
    .innerJoin('users as u', 'u.id', 's.user_id')
    .select(['s.id as session_id', 's.csrf_token', 's.revoked_at', 's.expires_at', 'u.id', 'u.email', 'u.is_active']);

const TENANT_PLACEHOLDER = '00000000-0000-0000-0000-000000000000';

/** The same, with the user's membership in tenant `$1` and that tenant (null columns when not a member). */
const sessionUserTenantQuery = (db: Kysely<ControlSchema>) =>
  sessionUserQuery(db)
    .leftJoin('memberships as m', (j) => j.onRef('m.user_id', '=', 'u.id').on('m.tenant_id', '=', TENANT_PLACEHOLDER))
    .leftJoin('tenants as t', 't.id', 'm.tenant_id')
    .select([
      't.id as t_id', 't.name as t_name', 't.isolation as t_isolation', 't.db_server as t_db_server', 't.db_name as t_db_name',
      't.storage_quota_mb as t_storage_quota_mb', 't.is_active as t_is_active', 'm.role as t_role',
    ]);

type SessionUserRow = InferResult<ReturnType<typeof sessionUserQuery>>[number];
type SessionUserTenantRow = InferResult<ReturnType<typeof sessionUserTenantQuery>>[number];
type SessionLookup = 'id' | 'token_hash';
type LookupName = SessionLookup | `${SessionLookup}+tenant`;

/**
 * The per-request session+user lookups (every authenticated request runs one),
 * built and compiled by Kysely once per database handle, then run with the
 * request's values as parameters. On PostgreSQL they run on the pg pool as
 * named prepared statements: each connection parses and plans them once.
 * Measured in bench/http.ts (scenario `auth`): Kysely building+compiling cost
 * ~19 µs of Node CPU per request, parsing+planning ~80 µs of PostgreSQL CPU.
 * Routes under /api/tenants/:tid use the `+tenant` variants, which also read
 * the membership: one round trip where the session and the membership took two.
 * (Behind PgBouncer in transaction mode this needs PgBouncer >= 1.21 with
 * max_prepared_statements set, like any named prepared statement.)
 */
const compiledLookups = new WeakMap<Kysely<ControlSchema>, Record<LookupName, CompiledQuery<unknown>>>();

function compiledLookup(db: Kysely<ControlSchema>, name: LookupName): CompiledQuery<unknown> {
  let queries = compiledLookups.get(db);
  if (!queries) {
    const session = '00000000-0000-0000-0000-000000000001';
    queries = {
      id: sessionUserQuery(db).where('s.id', '=', session).compile(),
      token_hash: sessionUserQuery(db).where('s.token_hash', '=', session).compile(),
      'id+tenant': sessionUserTenantQuery(db).where('s.id', '=', session).compile(),
      'token_hash+tenant': sessionUserTenantQuery(db).where('s.token_hash', '=', session).compile(),
    };
    // runLookup passes [session] or [tenant, session]: check the compiled order is exactly that.
    for (const [n, q] of Object.entries(queries)) {
      const expected = n.endsWith('+tenant') ? [TENANT_PLACEHOLDER, session] : [session];
      if (JSON.stringify(q.parameters) !== JSON.stringify(expected)) throw new Error(`the session lookup ${n} compiled its parameters in another order`);
    }
    compiledLookups.set(db, queries);
  }
  return queries[name];
}

async function runLookup<R>(deps: AuthDeps, name: LookupName, values: string[]): Promise<R | undefined> {
  const q = compiledLookup(deps.db, name);
  if (deps.pool) {
    const { rows } = await deps.pool.query({ name: `tb_auth_session_by_${name.replace('+', '_with_')}`, text: q.sql, values });
    return rows[0] as R | undefined;
  }
  const { rows } = await deps.db.executeQuery({ ...q, parameters: values });
  return rows[0] as R | undefined;
}

/** The session (by id or by cookie-token hash) with its user, and the membership in `tenantId` when given. */
async function findSessionUser(deps: AuthDeps, by: SessionLookup, value: string, tenantId?: string) {
  if (tenantId === undefined) return { row: await runLookup<SessionUserRow>(deps, by, [value]) };
  const row = await runLookup<SessionUserTenantRow>(deps, `${by}+tenant`, [tenantId, value]);
  let tenant: TenantContext | null = null;
  if (row?.t_id && row.t_role && row.t_name !== null && row.t_isolation !== null && row.t_storage_quota_mb !== null && row.t_is_active !== null) {
    tenant = {
      id: row.t_id, name: row.t_name, isolation: row.t_isolation, db_server: row.t_db_server, db_name: row.t_db_name,
      storage_quota_mb: row.t_storage_quota_mb, is_active: row.t_is_active, role: row.t_role,
    };
  }
  return { row, tenantLookup: { tenantId, tenant } satisfies TenantLookup };
}

function checkSession(row: { revoked_at: Date | null; expires_at: Date; is_active: boolean } | undefined) {
  if (!row || row.revoked_at || row.expires_at.getTime() <= Date.now()) return 'revoked' as const;
  if (!row.is_active) return 'disabled' as const;
  return null;
}

/**
 * Who a bearer token is: its signature and expiry, then its session and user
 * in one query (with the membership in `tenantId`, when the route names a
 * tenant). The session row is what revocation turns on: logout and a
 * reused refresh token revoke the session in the shared database before
 * anything else, and a deactivated user fails `is_active`, so every process
 * refuses the token at once. The denylist entry logout also writes (the
 * token's jti, in Redis) is therefore not looked up here: it could only
 * deny a token whose session is already revoked, and it cost a Redis round
 * trip on every request (bench/http.ts, scenario `auth`).
 */
export async function resolveBearer(deps: AuthDeps, token: string, tenantId?: string): Promise<Resolved> {
  const claims = await verifyAccessToken(deps.key, token);
  if (typeof claims === 'string') return { error: claims };
  const { row, tenantLookup } = await findSessionUser(deps, 'id', claims.sid, tenantId);
  const bad = checkSession(row);
  if (bad || !row || row.id !== claims.sub) return { error: bad ?? 'invalid' };
  return {
    user: { id: row.id, email: row.email, sessionId: row.session_id, method: 'bearer', jti: claims.jti, tokenExp: claims.exp, csrfToken: row.csrf_token },
    tenantLookup,
  };
}

export async function resolveCookie(deps: AuthDeps, cookieToken: string, tenantId?: string): Promise<Resolved> {
  const { row, tenantLookup } = await findSessionUser(deps, 'token_hash', sha256(cookieToken), tenantId);
  const bad = checkSession(row);
  if (bad || !row) return { error: bad ?? 'invalid' };
  return { user: { id: row.id, email: row.email, sessionId: row.session_id, method: 'cookie', csrfToken: row.csrf_token }, tenantLookup };
}

export function csrfMatches(user: AuthUser, header: string | undefined): boolean {
  return typeof header === 'string' && safeEqual(header, user.csrfToken);
}

/** Remove sessions long expired (housekeeping; called by the CLI/worker). */
export async function purgeExpiredSessions(db: Kysely<ControlSchema>): Promise<number> {
  const r = await db.deleteFrom('sessions').where('expires_at', '<', sql<Date>`now() - interval '1 day'`).executeTakeFirst();
  return Number(r.numDeletedRows);
}
