/** Shared TypeBox schemas: problem details, ids, pagination. */
import { Type, type Static, type TSchema } from '@sinclair/typebox';

export const ProblemSchema = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'Stable machine-readable error code' }),
    error: Type.String({ description: 'The human message again (for the seeds\' clients)' }),
  },
  { $id: 'Problem', additionalProperties: true },
);

export const Uuid = Type.String({ format: 'uuid' });

export const IdParams = Type.Object({ id: Uuid });

/** Pages are numbered up to this (an offset of at most 10^8 rows at 100 per page). */
export const MAX_PAGE = 1_000_000;

/** `page` from 1 to MAX_PAGE, `per_page` (alias `limit`) from 1 to 100: every list's paging, bounded. */
export const PaginationQuery = Type.Object({
  page: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 1 })),
  per_page: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'Alias of per_page' })),
});
export type PaginationQueryT = Static<typeof PaginationQuery>;

export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

/** Problem responses for the given statuses, referencing the shared schema. */
export function problems(...statuses: number[]): Record<number, unknown> {
  return Object.fromEntries(statuses.map((s) => [s, Type.Ref(ProblemSchema)]));
}

export function pageParams(q: PaginationQueryT, defaultPerPage = 20) {
  const page = q.page ?? 1;
  const perPage = q.per_page ?? q.limit ?? defaultPerPage;
  return { page, perPage, limit: perPage, offset: (page - 1) * perPage };
}

export function pageMeta(total: number, page: number, perPage: number) {
  return { total, page, per_page: perPage, pages: Math.ceil(total / perPage) };
}
