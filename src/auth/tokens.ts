/**
 * Access JWTs (HS256 pinned, jti, session id) and opaque random tokens stored
 * as hashes. The JWTs are signed and verified with node:crypto's HMAC: a
 * compact HS256 token is three base64url parts and one MAC, and doing it here
 * keeps the per-request verify synchronous and cheap (Web Crypto through jose
 * cost ~37 µs and an async hop per request; bench/http.ts, scenario `auth`).
 */
import crypto from 'node:crypto';

const ISSUER = 'tenantbase';
const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
const B64URL = /^[A-Za-z0-9_-]+$/;

export interface AccessClaims {
  sub: string;
  sid: string;
  jti: string;
  exp: number;
}

/** The HS256 key: a node:crypto secret key made once, or the raw secret bytes. */
export type TokenKey = crypto.KeyObject | Uint8Array;

export function secretKey(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

/** The HS256 key, made once at start-up. */
export async function hmacKey(secret: string): Promise<crypto.KeyObject> {
  return crypto.createSecretKey(secretKey(secret));
}

function mac(key: TokenKey, signingInput: string): string {
  return crypto.createHmac('sha256', key).update(signingInput).digest('base64url');
}

export async function signAccessToken(
  key: TokenKey,
  p: { userId: string; sessionId: string; ttlSec: number },
): Promise<{ token: string; jti: string; exp: number }> {
  const jti = crypto.randomUUID();
  const now = Math.floor(Date.now() / 1000);
  const exp = now + p.ttlSec;
  const payload = { sid: p.sessionId, typ: 'access', sub: p.userId, jti, iss: ISSUER, iat: now, exp };
  const input = `${HEADER}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  return { token: `${input}.${mac(key, input)}`, jti, exp };
}

export type VerifyFailure = 'expired' | 'invalid';

function decodePart(part: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * The claims of a valid access token: the MAC first (constant time, over the
 * exact bytes received), then a header of exactly HS256 with no `crit`, then
 * issuer, type and claim types; `exp` passed is 'expired', `nbf` ahead is
 * 'invalid'. Anything else is 'invalid'.
 */
export async function verifyAccessToken(key: TokenKey, token: string): Promise<AccessClaims | VerifyFailure> {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((x) => B64URL.test(x))) return 'invalid';
  const [h, p, s] = parts;
  if (!safeEqual(s, mac(key, `${h}.${p}`))) return 'invalid';
  const header = decodePart(h);
  if (!header || header.alg !== 'HS256' || 'crit' in header || (header.typ !== undefined && header.typ !== 'JWT')) return 'invalid';
  const c = decodePart(p);
  if (!c || c.iss !== ISSUER || c.typ !== 'access' || typeof c.sub !== 'string' || typeof c.sid !== 'string'
    || typeof c.jti !== 'string' || typeof c.exp !== 'number' || !Number.isFinite(c.exp)) {
    return 'invalid';
  }
  const now = Math.floor(Date.now() / 1000);
  if (c.nbf !== undefined && (typeof c.nbf !== 'number' || c.nbf > now)) return 'invalid';
  if (c.exp <= now) return 'expired';
  return { sub: c.sub, sid: c.sid, jti: c.jti, exp: c.exp };
}

export function randomToken(bytes = 32): string {
  return crypto.randomBytes(bytes).toString('base64url');
}

export function sha256(value: string): string {
  return crypto.createHash('sha256').update(value).digest('hex');
}

export function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && crypto.timingSafeEqual(ab, bb);
}
