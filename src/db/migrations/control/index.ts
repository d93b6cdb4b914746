import type { Migration } from 'kysely';
import * as m0001 from './0001_identity.js';
import * as m0002 from './0002_tenancy.js';
import * as m0003 from './0003_audit.js';
import * as m0004 from './0004_webhooks.js';
import * as m0005 from './0005_deployment.js';

/** Control-plane migrations, in order. Add new ones here (names sort lexically). */
export const controlMigrations: Record<string, Migration> = {
  '0001_identity': m0001,
  '0002_tenancy': m0002,
  '0003_audit': m0003,
  '0004_webhooks': m0004,
  '0005_deployment': m0005,
};
