/**
 * Queries on a tenant's documents and files. Each takes the tenant transaction
 * (`withTenant`): row-level security scopes it, and the tenant id is filtered
 * in code too (the `...Query` builders take any Kysely: a transaction or the
 * `read` of TenantDatabases). Lists are one query for the page plus one for the
 * total (the tenant's document counter when unfiltered, an exact count when
 * filtered).
 */
import { sql, type Compilable, type Kysely } from 'kysely';
import type { DocumentStatus, TenantSchema } from '../db/schema.js';
import type { ReadResult, TenantTx } from '../db/tenant-db.js';
import { queryTemplate } from '../db/template.js';
import { UUID_RE } from '../http/ids.js';
import { documentCountQuery, readDocumentCount } from './counts.js';

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

/** The documents table's columns of DocumentWithFile (all but the file's). */
export const DOCUMENT_COLUMNS = [
  'id', 'tenant_id', 'file_id', 'filename', 'mime_type', 'size', 'status', 'error_message',
  'user_id', 'uploaded_by_email', 'created_at', 'updated_at', 'processed_at',
] as const;

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

/** documentQuery compiled once: the document GET runs it on every request. */
export const documentById = queryTemplate((db: Kysely<TenantSchema>, tenantId: string, id: string) => documentQuery(db, tenantId, id));

export async function getDocument(trx: TenantTx, tenantId: string, id: string): Promise<DocumentWithFile | undefined> {
  if (!UUID_RE.test(id)) return undefined;
  return documentQuery(trx, tenantId, id).executeTakeFirst();
}

export interface ListFilter {
  filename?: string;
  status?: DocumentStatus;
}

type Page = { limit: number; offset: number };

function filtered(db: Kysely<TenantSchema>, tenantId: string, filter: ListFilter) {
  let base = db.selectFrom('documents as d').where('d.tenant_id', '=', tenantId);
  if (filter.status) base = base.where('d.status', '=', filter.status);
  if (filter.filename) base = base.where(sql<boolean>`d.filename ILIKE ${containsPattern(filter.filename)} ESCAPE '\\'`);
  return base;
}

/** A page of the tenant's documents, newest first, with their files' hash and key. */
export function listPageQuery(db: Kysely<TenantSchema>, tenantId: string, filter: ListFilter, page: Page) {
  // Page on documents alone (its index gives the order), then join the page's files:
  // a deep offset skips index entries, not joined rows.
  const pageOfDocs = filtered(db, tenantId, filter)
    .selectAll('d')
    .orderBy('d.created_at', 'desc')
    .orderBy('d.id', 'desc')
    .limit(page.limit)
    .offset(page.offset)
    .as('d');
  return db
    .selectFrom(pageOfDocs)
    .innerJoin('files as f', 'f.id', 'd.file_id')
    .select(DOC_COLUMNS)
    .orderBy('d.created_at', 'desc')
    .orderBy('d.id', 'desc');
}

/** The exact number of the tenant's documents that match `filter` (reads them all). */
export function listCountQuery(db: Kysely<TenantSchema>, tenantId: string, filter: ListFilter) {
  return filtered(db, tenantId, filter).select((eb) => eb.fn.countAll<number>().as('n'));
}

const unfiltered = (filter: ListFilter) => !filter.status && !filter.filename;

/** A short page ends the list: its total is known without counting (null when it is not). */
function totalFromPage(rows: number, page: Page): number | null {
  return rows < page.limit && (rows > 0 || page.offset === 0) ? page.offset + rows : null;
}

/**
 * A page and the list's total. The unfiltered total is the tenant's document
 * counter (src/documents/counts.ts: a few rows, never a count of the tenant's
 * documents); a filtered total is counted exactly, when the page does not give it.
 */
export async function listDocuments(
  trx: TenantTx,
  tenantId: string,
  filter: ListFilter,
  page: Page,
): Promise<{ rows: DocumentWithFile[]; total: number }> {
  const rows = await listPageQuery(trx, tenantId, filter, page).execute();
  let total = totalFromPage(rows.length, page);
  if (total === null && unfiltered(filter)) total = await readDocumentCount(trx, tenantId);
  if (total === null) total = Number((await listCountQuery(trx, tenantId, filter).executeTakeFirstOrThrow()).n);
  return { rows, total };
}

/** The unfiltered page and the counter, compiled once (src/db/template.ts): every list request runs them. */
const unfilteredPage = queryTemplate((db: Kysely<TenantSchema>, tenantId: string, limit: string, offset: string) =>
  // Sent as parameters; PostgreSQL reads them as the bigints LIMIT and OFFSET take.
  listPageQuery(db, tenantId, {}, { limit: limit as unknown as number, offset: offset as unknown as number }));
const documentCountOf = queryTemplate((db: Kysely<TenantSchema>, tenantId: string) => documentCountQuery(db, tenantId));

/**
 * `listDocuments` through one-round-trip reads (TenantDatabases.read): the page
 * and, unfiltered, the counter in one round trip; a filtered list whose page
 * does not give the total counts in a second.
 */
export async function readDocumentsPage(
  read: TenantReader,
  tenantId: string,
  filter: ListFilter,
  page: Page,
): Promise<{ rows: DocumentWithFile[]; total: number }> {
  if (unfiltered(filter)) {
    const limit = String(page.limit);
    const offset = String(page.offset);
    const [rows, counter] = await read((db) => [unfilteredPage(db, tenantId, limit, offset), documentCountOf(db, tenantId)] as const);
    return { rows, total: totalFromPage(rows.length, page) ?? Number(counter[0]?.n ?? 0) };
  }
  const [rows] = await read((db) => [listPageQuery(db, tenantId, filter, page)] as const);
  let total = totalFromPage(rows.length, page);
  if (total === null) {
    const [count] = await read((db) => [listCountQuery(db, tenantId, filter)] as const);
    total = Number(count[0]?.n ?? 0);
  }
  return { rows, total };
}

/** `request.readTenantDb` / `tenantDbs.read` bound to a tenant. */
export type TenantReader = <const Q extends readonly Compilable<any>[]>(build: (db: Kysely<TenantSchema>) => Q) => ReadResult<Q>;

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
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${contentLockKey(tenantId, sha256)}, 0))`.execute(trx);
}

function contentLockKey(tenantId: string, sha256: string): string {
  return `file:${tenantId}:${sha256}`;
}

/**
 * `lockContent`, then the tenant's file with this SHA-256 (read once the lock is
 * held), in one round trip: tenant migration 0005's `lock_content_file`.
 */
export async function lockContentFile(
  trx: TenantTx,
  tenantId: string,
  sha256: string,
): Promise<{ id: string; size: number; storage_key: string } | undefined> {
  const r = await sql<{ id: string; size: number; storage_key: string }>`
    SELECT id, size, storage_key FROM lock_content_file(${contentLockKey(tenantId, sha256)}, ${tenantId}, ${sha256})`.execute(trx);
  const row = r.rows[0];
  return row ? { ...row, size: Number(row.size) } : undefined;
}
