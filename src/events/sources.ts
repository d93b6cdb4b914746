/**
 * The databases that hold outbox rows: the main database (control-plane events
 * and every shared tenant) and the database of each dedicated tenant (listed
 * from `tenants`, reached through `tenantDbs.dbFor`). The list is refreshed
 * periodically and on demand (e.g. after `tenant.created`).
 */
import type { Kysely } from 'kysely';
import type { ControlSchema, TenantSchema } from '../db/schema.js';
import type { TenantDatabases, TenantRef } from '../db/tenant-db.js';

export interface OutboxSource {
  /** 'main', or 'tenant-<uuid>' for a dedicated tenant's database (used in BullMQ job ids). */
  key: string;
  db: Kysely<TenantSchema>;
  tenant?: TenantRef;
}

export interface OutboxSources {
  list(): Promise<OutboxSource[]>;
  /** The database holding `key`'s rows (the key a job was enqueued with). */
  get(key: string): Promise<OutboxSource | null>;
  /** Re-read the dedicated tenants on the next list(). */
  invalidate(): void;
}

export interface SourceLogger {
  warn(obj: object, msg?: string): void;
}

export function sourceKeyFor(tenant: TenantRef | null): string {
  return tenant && tenant.isolation === 'dedicated' ? `tenant-${tenant.id}` : 'main';
}

export function createOutboxSources(
  deps: { db: Kysely<ControlSchema>; tenantDbs: TenantDatabases; log?: SourceLogger },
  opts: { refreshMs?: number } = {},
): OutboxSources {
  const refreshMs = opts.refreshMs ?? 10_000;
  const main: OutboxSource = { key: 'main', db: deps.db as unknown as Kysely<TenantSchema> };
  let cached: OutboxSource[] | null = null;
  let cachedAt = 0;
  let loading: Promise<OutboxSource[]> | null = null;
  const unreachable = new Set<string>();

  async function load(): Promise<OutboxSource[]> {
    const tenants = await deps.db
      .selectFrom('tenants')
      .select(['id', 'isolation', 'db_server', 'db_name'])
      .where('isolation', '=', 'dedicated')
      .orderBy('id')
      .execute();
    const out: OutboxSource[] = [main];
    for (const t of tenants) {
      const key = sourceKeyFor(t);
      try {
        out.push({ key, db: deps.tenantDbs.dbFor(t), tenant: t });
        unreachable.delete(key);
      } catch (err) {
        if (!unreachable.has(key)) {
          unreachable.add(key);
          deps.log?.warn({ err, tenant_id: t.id }, 'outbox: dedicated tenant database not reachable; skipped');
        }
      }
    }
    return out;
  }

  async function list(): Promise<OutboxSource[]> {
    if (cached && Date.now() - cachedAt < refreshMs) return cached;
    loading ??= load()
      .then((l) => {
        cached = l;
        cachedAt = Date.now();
        return l;
      })
      .finally(() => {
        loading = null;
      });
    return loading;
  }

  return {
    list,
    async get(key) {
      if (key === 'main') return main;
      const found = (await list()).find((s) => s.key === key);
      if (found) return found;
      cached = null;
      return (await list()).find((s) => s.key === key) ?? null;
    },
    invalidate() {
      cached = null;
    },
  };
}
