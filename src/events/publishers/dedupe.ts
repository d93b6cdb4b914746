/**
 * In-process fallback for consumer-side de-duplication: delivery is
 * at-least-once, so a consumer may see an event_id again. This bounded LRU only
 * covers redeliveries within one process's recent history; durable
 * de-duplication belongs in the consumer's database (e.g. a unique processed
 * event_id written in the same transaction as the handler's effect).
 */
export interface SeenSet {
  /** True if `id` was already recorded; otherwise records it and returns false. */
  seen(id: string): boolean;
  readonly size: number;
}

export function createSeenSet(max = 10_000): SeenSet {
  if (!Number.isInteger(max) || max < 1) throw new RangeError(`createSeenSet: max must be a positive integer, got ${max}`);
  // A Map iterates in insertion order: the first key is the least recently seen.
  const ids = new Map<string, true>();
  return {
    seen(id: string) {
      if (ids.has(id)) {
        ids.delete(id);
        ids.set(id, true);
        return true;
      }
      ids.set(id, true);
      if (ids.size > max) ids.delete(ids.keys().next().value as string);
      return false;
    },
    get size() {
      return ids.size;
    },
  };
}
