import type { Migration } from 'kysely';
import * as m0001 from './0001_documents.js';
import * as m0002 from './0002_outbox.js';
import * as m0003 from './0003_outbox_delivery.js';
import * as m0004 from './0004_documents_search.js';
import * as m0005 from './0005_documents_throughput.js';
import * as m0006 from './0006_outbox_jobs.js';

/**
 * Tenant-data migrations, in order. They run on the main database (tables of
 * `shared` tenants) and on every dedicated tenant database.
 */
export const tenantMigrations: Record<string, Migration> = {
  '0001_documents': m0001,
  '0002_outbox': m0002,
  '0003_outbox_delivery': m0003,
  '0004_documents_search': m0004,
  '0005_documents_throughput': m0005,
  '0006_outbox_jobs': m0006,
};
