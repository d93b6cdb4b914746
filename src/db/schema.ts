/**
 * Table types for Kysely. Control-plane tables live in the main database;
 * tenant tables (files, documents, ...) live in the main database for `shared`
 * tenants (row-level security on tenant_id) or in a database of their own for
 * `dedicated` tenants. The same types and the same queries serve both.
 */
import type { ColumnType, Generated, Selectable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;

export type Role = 'admin' | 'user' | 'viewer';
export type Isolation = 'shared' | 'dedicated';
export type DocumentStatus = 'pending' | 'ready' | 'failed';

export interface UsersTable {
  id: Generated<string>;
  email: string;
  password_hash: string;
  first_name: Generated<string>;
  last_name: Generated<string>;
  is_active: Generated<boolean>;
  default_tenant_id: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** A login: the cookie session and the refresh-token family share its lifetime. */
export interface SessionsTable {
  id: Generated<string>;
  user_id: string;
  token_hash: string;
  csrf_token: string;
  ip: string | null;
  user_agent: string | null;
  created_at: Timestamp;
  expires_at: Timestamp;
  revoked_at: NullableTimestamp;
}

export interface RefreshTokensTable {
  id: Generated<string>;
  session_id: string;
  token_hash: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: NullableTimestamp;
}

export interface RevokedTokensTable {
  jti: string;
  expires_at: Timestamp;
}

export interface TenantsTable {
  id: Generated<string>;
  name: string;
  slug: string;
  isolation: Generated<Isolation>;
  is_active: Generated<boolean>;
  storage_quota_mb: number;
  storage_used_bytes: ColumnType<number, number | undefined, number>;
  db_server: string | null;
  db_name: string | null;
  created_by: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface MembershipsTable {
  user_id: string;
  tenant_id: string;
  role: Role;
  joined_at: Timestamp;
}

export interface InvitationsTable {
  id: Generated<string>;
  tenant_id: string;
  email: string;
  role: Role;
  token_hash: string;
  expires_at: Timestamp;
  used_at: NullableTimestamp;
  created_by: string | null;
  created_at: Timestamp;
}

/** Append-only audit trail (control/0003_audit), written by the event consumer. */
export interface AuditLogTable {
  id: Generated<number>;
  event_id: string;
  tenant_id: string | null;
  user_id: string | null;
  actor_email: string | null;
  action: string;
  resource_type: string | null;
  resource_id: string | null;
  ip: string | null;
  user_agent: string | null;
  details: ColumnType<unknown, string, string>;
  occurred_at: ColumnType<Date, Date | string, Date | string>;
  recorded_at: Timestamp;
}

/** Event ids a consumer has handled (durable de-duplication, control/0003_audit). */
export interface ConsumedEventsTable {
  consumer: string;
  event_id: string;
  consumed_at: Timestamp;
}

export interface FilesTable {
  id: Generated<string>;
  tenant_id: string;
  sha256: string;
  md5: string;
  size: ColumnType<number, number, number>;
  storage_key: string;
  created_at: Timestamp;
}

export interface DocumentsTable {
  id: Generated<string>;
  tenant_id: string;
  file_id: string;
  filename: string;
  mime_type: string;
  size: ColumnType<number, number, number>;
  status: Generated<DocumentStatus>;
  error_message: string | null;
  user_id: string;
  uploaded_by_email: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  processed_at: NullableTimestamp;
}

/** A tenant's document count, spread over a few slot rows (tenant/0005; kept by triggers on documents). */
export interface DocumentCountsTable {
  tenant_id: string;
  slot: number;
  n: ColumnType<number, number, number>;
}

export interface OutboxTable {
  id: Generated<number>;
  tenant_id: string | null;
  kind: 'event' | 'job';
  topic: string;
  payload: ColumnType<unknown, string, string>;
  created_at: Timestamp;
  available_at: Timestamp;
  published_at: NullableTimestamp;
  attempts: Generated<number>;
  last_error: string | null;
  /** A random id of the row (tenant/0006): BullMQ job ids are made from it. */
  uid: Generated<string>;
  /** Jobs: when the relay first handed the job to Redis; it is done (published_at) when it finished. */
  enqueued_at: NullableTimestamp;
}

/** Tables present in every tenant data database (and in the main one for shared tenants). */
export interface TenantSchema {
  files: FilesTable;
  documents: DocumentsTable;
  document_counts: DocumentCountsTable;
  outbox: OutboxTable;
}

/** This database's identity (control/0005): the storage root's marker names it. */
export interface DeploymentTable {
  id: Generated<string>;
  created_at: Timestamp;
  singleton: Generated<boolean>;
}

export interface ControlSchema extends TenantSchema {
  deployment: DeploymentTable;
  users: UsersTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
  revoked_tokens: RevokedTokensTable;
  tenants: TenantsTable;
  memberships: MembershipsTable;
  invitations: InvitationsTable;
  audit_log: AuditLogTable;
  consumed_events: ConsumedEventsTable;
}

export type User = Selectable<UsersTable>;
export type Tenant = Selectable<TenantsTable>;
export type Membership = Selectable<MembershipsTable>;
export type FileRow = Selectable<FilesTable>;
export type DocumentRow = Selectable<DocumentsTable>;
