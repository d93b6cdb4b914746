/**
 * Who the request is. Decorates `request.user` and `app.authenticate`, the
 * onRequest hook that protected route groups add: a bearer access token or the
 * `session` cookie (with X-CSRF-Token on unsafe methods). Anonymous requests
 * get no session and no cookie; failures are 401/403 problem+json.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { errors } from '../http/errors.js';
import { bindLog } from '../http/log.js';
import { csrfMatches, resolveBearer, resolveCookie, type AuthDeps, type AuthUser, type TenantLookup } from './service.js';
import { dbDenylist, redisDenylist } from './revocation.js';
import { memoryRateLimiter, redisRateLimiter, withFallback } from './rate-limit.js';
import { hmacKey } from './tokens.js';
import { UUID_RE } from '../http/ids.js';

declare module 'fastify' {
  interface FastifyInstance {
    auth: AuthDeps;
    authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  }
  interface FastifyRequest {
    /** Set by `authenticate`; only read it in route groups that add that hook. */
    user: AuthUser;
    /** Set by `authenticate` on routes with a `:tid` parameter: the membership read with the session (for tenantContext). */
    tenantLookup: TenantLookup | null;
  }
}

export const SESSION_COOKIE = 'session';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

const failures = {
  invalid: () => errors.unauthorized('The access token is invalid', 'invalid_token'),
  expired: () => errors.unauthorized('The access token has expired', 'token_expired'),
  revoked: () => errors.unauthorized('The session has ended; log in again', 'token_revoked'),
  disabled: () => errors.forbidden('This account is deactivated', 'account_disabled'),
};

export const authPlugin = fp(
  async (app: FastifyInstance) => {
    const { config, db, redis } = app;
    const deps: AuthDeps = {
      db,
      config,
      key: await hmacKey(config.jwtSecretKey),
      pool: app.database.pool,
      denylist: redis ? redisDenylist(redis, config.redisPrefix) : dbDenylist(db),
      limiter: redis ? withFallback(redisRateLimiter(redis, config.redisPrefix), memoryRateLimiter(), app.log) : memoryRateLimiter(),
    };
    app.decorate('auth', deps);
    app.decorateRequest('user', null as unknown as AuthUser);
    app.decorateRequest('tenantLookup', null);

    app.decorate('authenticate', async (request: FastifyRequest, _reply: FastifyReply) => {
      // Routes under /api/tenants/:tid: read the membership in the same query as the session.
      const tid = (request.params as { tid?: unknown } | undefined)?.tid;
      const tenantId = typeof tid === 'string' && UUID_RE.test(tid) ? tid.toLowerCase() : undefined;
      const header = request.headers.authorization;
      if (header !== undefined) {
        const m = /^Bearer\s+([A-Za-z0-9._~+/=-]+)$/i.exec(header);
        if (!m) throw errors.unauthorized('The Authorization header must be "Bearer <token>"', 'invalid_token');
        const res = await resolveBearer(deps, m[1], tenantId);
        if ('error' in res) throw failures[res.error]();
        request.user = res.user;
        request.tenantLookup = res.tenantLookup ?? null;
        bindLog(request, { user_id: res.user.id });
        return;
      }
      const cookie = request.cookies?.[SESSION_COOKIE];
      if (!cookie) throw errors.unauthorized();
      const res = await resolveCookie(deps, cookie, tenantId);
      if ('error' in res) throw failures[res.error]();
      if (UNSAFE.has(request.method) && !csrfMatches(res.user, request.headers['x-csrf-token'] as string | undefined)) {
        throw errors.forbidden('A valid X-CSRF-Token header is required for cookie-authenticated requests', 'csrf_failed');
      }
      request.user = res.user;
      request.tenantLookup = res.tenantLookup ?? null;
      bindLog(request, { user_id: res.user.id });
    });
  },
  { name: 'auth', dependencies: ['core'] },
);
