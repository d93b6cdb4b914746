import type { Migration } from 'kysely';
import * as m0001 from './0001_identity.js';
import * as m0002 from './0002_tenancy.js';

/** Control-plane migrations, in order. Add new ones here (names sort lexically). */
export const controlMigrations: Record<string, Migration> = {
  '0001_identity': m0001,
  '0002_tenancy': m0002,
};
