/** The job handlers by name. */
import { validateDocument } from './handlers/validate-document.js';
import type { JobHandler } from './types.js';

export type JobRegistry = ReadonlyMap<string, JobHandler>;

export function createJobRegistry(extra: JobHandler[] = []): JobRegistry {
  const map = new Map<string, JobHandler>();
  for (const h of [validateDocument, ...extra]) map.set(h.name, h);
  return map;
}
