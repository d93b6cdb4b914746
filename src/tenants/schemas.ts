/** TypeBox schemas of the tenant routes (API.md "Tenants"). */
import { Type } from '@sinclair/typebox';

export const RoleSchema = Type.Union([Type.Literal('admin'), Type.Literal('user'), Type.Literal('viewer')], {
  description: 'admin > user > viewer',
});
export const IsolationSchema = Type.Union([Type.Literal('shared'), Type.Literal('dedicated')], {
  description: '`shared`: tables of the main database with row-level security; `dedicated`: a PostgreSQL database of its own',
});

/** 1-255 characters, not blank, no control characters (trimmed before use). */
export const TenantName = Type.String({ minLength: 1, maxLength: 255, pattern: '^(?=[\\s\\S]*\\S)[^\\x00-\\x1f\\x7f]+$' });
export const QuotaMb = Type.Integer({ minimum: 1, maximum: 100_000_000, description: 'Storage quota in MiB' });
const Email = Type.String({ format: 'email', maxLength: 254 });

export const MemberSchema = Type.Object({
  user_id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  role: RoleSchema,
  joined_at: Type.String({ format: 'date-time' }),
});

export const TenantSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  isolation: IsolationSchema,
  is_active: Type.Boolean(),
  storage_quota_mb: Type.Integer(),
  storage_used_bytes: Type.Integer(),
  created_at: Type.String({ format: 'date-time' }),
  updated_at: Type.String({ format: 'date-time' }),
  members: Type.Array(MemberSchema),
});

export const TenantListItem = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  isolation: IsolationSchema,
  is_active: Type.Boolean(),
  role: RoleSchema,
  storage_quota_mb: Type.Integer(),
  storage_used_bytes: Type.Integer(),
  created_at: Type.String({ format: 'date-time' }),
  joined_at: Type.String({ format: 'date-time' }),
});

export const TenantListResponse = Type.Object({
  tenants: Type.Array(TenantListItem),
  total: Type.Integer(),
  page: Type.Integer(),
  per_page: Type.Integer(),
  pages: Type.Integer(),
});

export const CreateTenantBody = Type.Object({
  name: TenantName,
  isolation: Type.Optional(IsolationSchema),
  storage_quota_mb: Type.Optional(QuotaMb),
}, { additionalProperties: false });

export const UpdateTenantBody = Type.Object({
  name: Type.Optional(TenantName),
  is_active: Type.Optional(Type.Boolean({ description: 'false soft-deletes; true reactivates' })),
  storage_quota_mb: Type.Optional(QuotaMb),
}, { additionalProperties: false });

export const AddMemberBody = Type.Object({
  user_id: Type.Optional(Type.String({ format: 'uuid' })),
  email: Type.Optional(Email),
  role: RoleSchema,
}, { additionalProperties: false, description: 'Exactly one of user_id or email' });

export const MembershipSchema = Type.Object({
  tenant_id: Type.String({ format: 'uuid' }),
  user_id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  role: RoleSchema,
  joined_at: Type.String({ format: 'date-time' }),
});

export const RoleBody = Type.Object({ role: RoleSchema }, { additionalProperties: false });

export const InvitationBody = Type.Object({ email: Email, role: RoleSchema }, { additionalProperties: false });

export const InvitationResponse = Type.Object({
  id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  role: RoleSchema,
  invitation_token: Type.String({ description: 'Shown once; register with it as invitation_token' }),
  expires_at: Type.String({ format: 'date-time' }),
});

export const TenantParams = Type.Object({ tid: Type.String({ description: 'Tenant id (UUID)' }) });
export const MemberParams = Type.Object({
  tid: Type.String({ description: 'Tenant id (UUID)' }),
  uid: Type.String({ description: 'User id (UUID)' }),
});
