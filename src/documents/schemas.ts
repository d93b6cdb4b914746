/** TypeBox schemas of the documents, files and current-organization APIs (API.md "Documents", "Files", "/api/files"). */
import { Type, type Static } from '@sinclair/typebox';
import { Nullable, PaginationQuery } from '../http/schemas.js';

const DateTime = Type.String({ format: 'date-time' });
export const DocumentStatusSchema = Type.Union([Type.Literal('pending'), Type.Literal('ready'), Type.Literal('failed')]);

export const DocumentSchema = Type.Object({
  id: Type.String(),
  filename: Type.String(),
  mime_type: Type.String(),
  size: Type.Integer(),
  status: DocumentStatusSchema,
  file_id: Type.String(),
  sha256: Type.String(),
  user_id: Type.String(),
  uploaded_by_email: Type.String(),
  error_message: Nullable(Type.String()),
  created_at: DateTime,
  updated_at: DateTime,
  processed_at: Nullable(DateTime),
});
export type DocumentT = Static<typeof DocumentSchema>;

/** Ids are UUIDs; a malformed one is simply not found (404), so params are plain strings checked in the handler. */
export const DocIdParams = Type.Object({ tid: Type.String(), id: Type.String() });
export const FileIdParams = Type.Object({ tid: Type.String(), fid: Type.String() });

export const ListQuery = Type.Composite([
  PaginationQuery,
  Type.Object({
    filename: Type.Optional(Type.String({ maxLength: 255, description: 'Case-insensitive substring of the filename' })),
    status: Type.Optional(DocumentStatusSchema),
  }),
]);
export type ListQueryT = Static<typeof ListQuery>;

export const DocumentListSchema = Type.Object({
  documents: Type.Array(DocumentSchema),
  total: Type.Integer(),
  page: Type.Integer(),
  per_page: Type.Integer(),
  pages: Type.Integer(),
});

export const UpdateDocumentBody = Type.Object(
  {
    filename: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    mime_type: Type.Optional(Type.String({ minLength: 3, maxLength: 255, pattern: '^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$' })),
  },
  { additionalProperties: false },
);

export const DownloadUrlQuery = Type.Object({
  expires_in: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400, default: 3600, description: 'Seconds, at most 86400' })),
});
export const DownloadUrlSchema = Type.Object({ url: Type.String(), expires_at: DateTime });

export const DownloadHeaders = Type.Object({
  range: Type.Optional(Type.String()),
  'if-range': Type.Optional(Type.String()),
  'if-none-match': Type.Optional(Type.String()),
});

export const FileSchema = Type.Object({
  id: Type.String(),
  sha256: Type.String(),
  md5: Type.String(),
  size: Type.Integer(),
  document_count: Type.Integer(),
  created_at: DateTime,
});

export const FileListSchema = Type.Object({
  files: Type.Array(FileSchema),
  total: Type.Integer(),
  page: Type.Integer(),
  per_page: Type.Integer(),
  pages: Type.Integer(),
  stats: Type.Object({ file_count: Type.Integer(), total_bytes: Type.Integer() }),
});

export const FileDetailSchema = Type.Composite([
  FileSchema,
  Type.Object({
    documents: Type.Array(Type.Object({ id: Type.String(), filename: Type.String(), user_id: Type.String() }), {
      description: 'The referencing documents, newest first (at most 1000; document_count has the total)',
    }),
  }),
]);

/** The seed-001 shapes of /api/files. */
export const OrgFileSummary = Type.Object({
  id: Type.String(),
  filename: Type.String(),
  size: Type.Integer(),
  status: DocumentStatusSchema,
  uploaded_at: DateTime,
  uploaded_by_email: Type.String(),
});
export const OrgFileListSchema = Type.Object({
  files: Type.Array(OrgFileSummary),
  total: Type.Integer(),
  page: Type.Integer(),
  per_page: Type.Integer(),
  pages: Type.Integer(),
});
export const OrgFileDetail = Type.Object({
  id: Type.String(),
  filename: Type.String(),
  size: Type.Integer(),
  mime_type: Type.String(),
  status: DocumentStatusSchema,
  error_message: Nullable(Type.String()),
  uploaded_at: DateTime,
  processed_at: Nullable(DateTime),
  uploaded_by_email: Type.String(),
});
export const OrgUploadResult = Type.Object({ file_id: Type.String({ description: 'The document id' }), filename: Type.String(), status: DocumentStatusSchema });

/** Multipart bodies are parsed by the handler (streamed), so the schema only documents them. */
export const UploadConsumes = ['multipart/form-data'];
