/** /api/auth: register, login, refresh, logout, me, csrf. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { Nullable, problems } from '../http/schemas.js';
import { currentOrganizationId, login, logout, publicUser, refresh, register } from './service.js';
import { SESSION_COOKIE } from './plugin.js';
import { PASSWORD_MAX, PASSWORD_MIN } from './passwords.js';
import { UserSchema } from '../users/schemas.js';

const Email = Type.String({ format: 'email', maxLength: 254, description: 'Stored lower-case' });
const Password = Type.String({ minLength: PASSWORD_MIN, maxLength: PASSWORD_MAX });
const TenantSummary = Type.Object({ id: Type.String(), name: Type.String(), role: Type.String() });

export const authRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const deps = app.auth;
  const cookieOptions = {
    httpOnly: true,
    sameSite: 'lax' as const,
    secure: app.config.isProduction,
    path: '/',
    maxAge: app.config.sessionTtl,
  };

  app.post('/register', {
    schema: {
      tags: ['auth'],
      security: [],
      summary: 'Create an account (optionally a new organization, or join one by invitation)',
      body: Type.Object({
        email: Email,
        password: Password,
        first_name: Type.Optional(Type.String({ maxLength: 100 })),
        last_name: Type.Optional(Type.String({ maxLength: 100 })),
        organization_name: Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: '\\S' })),
        invitation_token: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
      }, { additionalProperties: false }),
      response: {
        201: Type.Object({ user_id: Type.String(), email: Type.String(), organization_id: Nullable(Type.String()), user: UserSchema }),
        ...problems(400, 403, 409),
      },
    },
  }, async (request, reply) => {
    const { user, organizationId } = await register(deps, request.body);
    return reply.status(201).send({ user_id: user.id, email: user.email, organization_id: organizationId, user: publicUser(user) });
  });

  app.post('/login', {
    schema: {
      tags: ['auth'],
      security: [],
      summary: 'Log in: returns tokens and sets the httpOnly session cookie',
      body: Type.Object({ email: Type.String({ maxLength: 254 }), password: Type.String({ maxLength: PASSWORD_MAX }) }),
      response: {
        200: Type.Object({
          user_id: Type.String(), email: Type.String(), organization_id: Nullable(Type.String()),
          access_token: Type.String(), refresh_token: Type.String(), token_type: Type.Literal('Bearer'),
          expires_in: Type.Integer(), csrf_token: Type.String(), user: UserSchema, tenants: Type.Array(TenantSummary),
        }),
        ...problems(400, 401, 403, 429),
      },
    },
  }, async (request, reply) => {
    const r = await login(deps, {
      email: request.body.email,
      password: request.body.password,
      ip: request.ip,
      userAgent: request.headers['user-agent'],
    });
    reply.setCookie(SESSION_COOKIE, r.cookieToken, cookieOptions);
    return {
      user_id: r.user.id,
      email: r.user.email,
      organization_id: r.organizationId,
      access_token: r.accessToken,
      refresh_token: r.refreshToken,
      token_type: 'Bearer' as const,
      expires_in: r.expiresIn,
      csrf_token: r.csrfToken,
      user: publicUser(r.user),
      tenants: r.tenants.filter((t) => t.is_active).map(({ id, name, role }) => ({ id, name, role })),
    };
  });

  app.post('/refresh', {
    schema: {
      tags: ['auth'],
      security: [],
      summary: 'Rotate a refresh token; a reused one revokes its whole family',
      body: Type.Object({ refresh_token: Type.String({ minLength: 1, maxLength: 200 }) }),
      response: {
        200: Type.Object({ access_token: Type.String(), refresh_token: Type.String(), token_type: Type.Literal('Bearer'), expires_in: Type.Integer() }),
        ...problems(400, 401),
      },
    },
  }, async (request) => {
    const r = await refresh(deps, request.body.refresh_token);
    return { access_token: r.accessToken, refresh_token: r.refreshToken, token_type: 'Bearer' as const, expires_in: r.expiresIn };
  });

  // Everything below needs a signed-in user.
  await app.register(async (authed) => {
    authed.addHook('onRequest', app.authenticate);

    authed.post('/logout', {
      schema: {
        tags: ['auth'],
        summary: 'End the session: access token, refresh family and cookie stop working at once',
        response: { 200: Type.Object({ success: Type.Boolean() }), ...problems(401, 403) },
      },
    }, async (request, reply) => {
      await logout(deps, request.user, request.log);
      reply.clearCookie(SESSION_COOKIE, { path: '/' });
      return { success: true };
    });

    authed.get('/me', {
      schema: {
        tags: ['auth'],
        response: { 200: Type.Object({ user_id: Type.String(), email: Type.String(), organization_id: Nullable(Type.String()) }), ...problems(401, 403) },
      },
    }, async (request) => {
      const organizationId = await currentOrganizationId(app.db, request.user.id);
      return { user_id: request.user.id, email: request.user.email, organization_id: organizationId };
    });

    authed.get('/csrf', {
      schema: {
        tags: ['auth'],
        summary: 'The CSRF token that cookie-authenticated unsafe requests send as X-CSRF-Token',
        response: { 200: Type.Object({ csrf_token: Type.String() }), ...problems(401, 403) },
      },
    }, async (request) => ({ csrf_token: request.user.csrfToken }));
  });
};
