/**
 * Denied access-token ids (logout revokes the token at once, until it expires):
 * in Redis when configured (shared by every API process), else in the database.
 */
import { sql, type Kysely } from 'kysely';
import type { Redis } from 'ioredis';
import type { ControlSchema } from '../db/schema.js';

export interface Denylist {
  revoke(jti: string, expiresAtSec: number): Promise<void>;
  isRevoked(jti: string): Promise<boolean>;
}

export function redisDenylist(redis: Redis, prefix: string): Denylist {
  const key = (jti: string) => `${prefix}revoked:${jti}`;
  return {
    async revoke(jti, expiresAtSec) {
      const ttlMs = expiresAtSec * 1000 - Date.now();
      if (ttlMs > 0) await redis.set(key(jti), '1', 'PX', ttlMs);
    },
    async isRevoked(jti) {
      return (await redis.exists(key(jti))) === 1;
    },
  };
}

export function dbDenylist(db: Kysely<ControlSchema>): Denylist {
  return {
    async revoke(jti, expiresAtSec) {
      await db
        .insertInto('revoked_tokens')
        .values({ jti, expires_at: new Date(expiresAtSec * 1000) })
        .onConflict((oc) => oc.column('jti').doNothing())
        .execute();
      // Keep the table small: entries are useless once the token has expired anyway.
      await db.deleteFrom('revoked_tokens').where('expires_at', '<', sql<Date>`now()`).execute();
    },
    async isRevoked(jti) {
      const row = await db.selectFrom('revoked_tokens').select('jti').where('jti', '=', jti).executeTakeFirst();
      return row !== undefined;
    },
  };
}
