/**
 * Queries on a tenant's documents and files. Each takes the tenant transaction
 * (`withTenant`): row-level security scopes it, and the tenant id is filtered
 * in code too. Lists are one query for the page plus one for the count.
 */
import { sql, type Kysely } from 'kysely';
import type { DocumentStatus, TenantSchema } from '../db/schema.js';
import type { TenantTx } from '../db/tenant-db.js';

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface DocumentWithFile {
  id: string;
  tenant_id: string;
  file_id: string;
  filename: string;
  mime_type: string;
  size: number;
  status: DocumentStatus;
  error_message: string | null;
  user_id: string;
  uploaded_by_email: string;
  created_at: Date;
  updated_at: Date;
  processed_at: Date | null;
  sha256: string;
  storage_key: string;
}

const DOC_COLUMNS = [
  'd.id', 'd.tenant_id', 'd.file_id', 'd.filename', 'd.mime_type', 'd.size', 'd.status', 'd.error_message',
  'd.user_id', 'd.uploaded_by_email', 'd.created_at', 'd.updated_at', 'd.processed_at', 'f.sha256', 'f.storage_key',
] as const;

/** LIKE pattern matching `s` anywhere, with the wildcards of `s` taken literally (ESCAPE '\'). */
export function containsPattern(s: string): string {
  return `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** One document with its file's hash and key (a valid UUID `id`; check with UUID_RE first). */
export function documentQuery(db: Kysely<TenantSchema>, tenantId: string, id: string) {
  return db
    .selectFrom('documents as d')
    .innerJoin('files as f', 'f.id', 'd.file_id')
    .select(DOC_COLUMNS)
    .where('d.tenant_id', '=', tenantId)
    .where('d.id', '=', id);
}

export async function getDocument(trx: TenantTx, tenantId: string, id: string): Promise<DocumentWithFile | undefined> {
  if (!UUID_RE.test(id)) return undefined;
  return documentQuery(trx, tenantId, id).executeTakeFirst();
}

export interface ListFilter {
  filename?: string;
  status?: DocumentStatus;
}

export async function listDocuments(
  trx: TenantTx,
  tenantId: string,
  filter: ListFilter,
  page: { limit: number; offset: number },
): Promise<{ rows: DocumentWithFile[]; total: number }> {
  let base = trx.selectFrom('documents as d').where('d.tenant_id', '=', tenantId);
  if (filter.status) base = base.where('d.status', '=', filter.status);
  if (filter.filename) base = base.where(sql<boolean>`d.filename ILIKE ${containsPattern(filter.filename)} ESCAPE '\\'`);

  // Page on documents alone (its index gives the order), then join the page's files:
  // a deep offset skips index entries, not joined rows.
  const pageOfDocs = base
    .selectAll('d')
    .orderBy('d.created_at', 'desc')
    .orderBy('d.id', 'desc')
    .limit(page.limit)
    .offset(page.offset)
    .as('d');
  const rows = await trx
    .selectFrom(pageOfDocs)
    .innerJoin('files as f', 'f.id', 'd.file_id')
    .select(DOC_COLUMNS)
    .orderBy('d.created_at', 'desc')
    .orderBy('d.id', 'desc')
    .execute();
  // A short page ends the list: its total is known without the count query.
  const total =
    rows.length < page.limit && (rows.length > 0 || page.offset === 0)
      ? page.offset + rows.length
      : Number((await base.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
  return { rows, total };
}

export interface FileWithCount {
  id: string;
  sha256: string;
  md5: string;
  size: number;
  storage_key: string;
  created_at: Date;
  document_count: number;
}

function documentCount() {
  return sql<number>`(SELECT count(*) FROM documents dc WHERE dc.file_id = f.id)`.as('document_count');
}

export async function listFiles(
  trx: TenantTx,
  tenantId: string,
  page: { limit: number; offset: number },
): Promise<{ rows: FileWithCount[]; stats: { file_count: number; total_bytes: number } }> {
  const rows = await trx
    .selectFrom('files as f')
    .select(['f.id', 'f.sha256', 'f.md5', 'f.size', 'f.storage_key', 'f.created_at', documentCount()])
    .where('f.tenant_id', '=', tenantId)
    .orderBy('f.created_at', 'desc')
    .orderBy('f.id', 'desc')
    .limit(page.limit)
    .offset(page.offset)
    .execute();
  const stats = await trx
    .selectFrom('files')
    .select((eb) => [eb.fn.countAll<number>().as('file_count'), sql<number>`coalesce(sum(size), 0)`.as('total_bytes')])
    .where('tenant_id', '=', tenantId)
    .executeTakeFirstOrThrow();
  return {
    rows: rows.map((r) => ({ ...r, document_count: Number(r.document_count) })),
    stats: { file_count: Number(stats.file_count), total_bytes: Number(stats.total_bytes) },
  };
}

export async function getFile(trx: TenantTx, tenantId: string, id: string): Promise<FileWithCount | undefined> {
  if (!UUID_RE.test(id)) return undefined;
  const row = await trx
    .selectFrom('files as f')
    .select(['f.id', 'f.sha256', 'f.md5', 'f.size', 'f.storage_key', 'f.created_at', documentCount()])
    .where('f.tenant_id', '=', tenantId)
    .where('f.id', '=', id)
    .executeTakeFirst();
  return row ? { ...row, document_count: Number(row.document_count) } : undefined;
}

/**
 * Serialise every change to one tenant's content (upload commit, last-reference
 * delete, gc) on a transaction-scoped advisory lock, so "is there a row?" and
 * "are there bytes?" are decided together: the bytes of a file are written and
 * removed only while holding it.
 */
export async function lockContent(trx: TenantTx, tenantId: string, sha256: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`file:${tenantId}:${sha256}`}, 0))`.execute(trx);
}
