/** queryTemplate: a query compiled once must compile to exactly what a fresh build gives, for any values. */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Kysely, PostgresDialect, sql } from 'kysely';
import type { TenantSchema } from '../../src/db/schema.js';
import { queryTemplate } from '../../src/db/template.js';

// Compiling needs no connection.
const db = new Kysely<TenantSchema>({ dialect: new PostgresDialect({ pool: {} as never }) });

const build = (k: Kysely<TenantSchema>, tenantId: string, name: string) =>
  k.selectFrom('documents').select(['id', 'filename']).where('tenant_id', '=', tenantId)
    .where('filename', '=', name).where('status', '=', 'ready').limit(5);

describe('queryTemplate', () => {
  it('gives the same SQL and parameters as building the query afresh, constants included', () => {
    const t = queryTemplate(build);
    for (const name of ['a.txt', "it's", '\u0000tb-template-arg-0\u0000', '']) {
      const tenant = crypto.randomUUID();
      const fresh = build(db, tenant, name).compile();
      const templ = t(db, tenant, name).compile();
      expect(templ.sql).toBe(fresh.sql);
      expect(templ.parameters).toEqual(fresh.parameters);
      expect(templ.parameters).toEqual([tenant, name, 'ready', 5]);
    }
  });

  it('refuses a builder that puts an argument in the SQL text or ignores one', () => {
    const inText = queryTemplate((k: Kysely<TenantSchema>, col: string) => k.selectFrom('documents').select(sql.ref(col).as('x')));
    expect(() => inText(db, 'filename')).toThrow(/SQL text/);
    const unused = queryTemplate((k: Kysely<TenantSchema>, _id: string) => k.selectFrom('documents').select('id'));
    expect(() => unused(db, 'x')).toThrow(/not used/);
  });
});
