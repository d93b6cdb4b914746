/** /api/users: the signed-in user's profile and tenants. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { problems } from '../http/schemas.js';
import { publicUser } from '../auth/service.js';
import { listUserTenants } from '../tenants/queries.js';
import { UserSchema } from './schemas.js';

export const userRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.authenticate);

  app.get('/me', {
    schema: { tags: ['users'], response: { 200: UserSchema, ...problems(401, 403) } },
  }, async (request) => {
    const user = await app.db.selectFrom('users').selectAll().where('id', '=', request.user.id).executeTakeFirstOrThrow();
    return publicUser(user);
  });

  app.put('/me', {
    schema: {
      tags: ['users'],
      summary: 'Update your names (the email cannot change)',
      body: Type.Object({
        first_name: Type.Optional(Type.String({ maxLength: 100 })),
        last_name: Type.Optional(Type.String({ maxLength: 100 })),
      }, { additionalProperties: false }),
      response: { 200: UserSchema, ...problems(400, 401, 403) },
    },
  }, async (request) => {
    const { first_name, last_name } = request.body;
    const user = await app.db
      .updateTable('users')
      .set({
        ...(first_name !== undefined ? { first_name: first_name.trim() } : {}),
        ...(last_name !== undefined ? { last_name: last_name.trim() } : {}),
        updated_at: sql<Date>`now()`,
      })
      .where('id', '=', request.user.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    return publicUser(user);
  });

  app.get('/me/tenants', {
    schema: {
      tags: ['users'],
      response: {
        200: Type.Object({
          tenants: Type.Array(Type.Object({ id: Type.String(), name: Type.String(), role: Type.String(), is_active: Type.Boolean() })),
        }),
        ...problems(401, 403),
      },
    },
  }, async (request) => ({ tenants: await listUserTenants(app.db, request.user.id) }));
};
