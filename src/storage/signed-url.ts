import { createHmac, timingSafeEqual } from 'node:crypto';

export type DownloadTokenStatus = 'ok' | 'expired' | 'invalid';

const TOKEN_RE = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/;

function mac(secret: string, tenantId: string, documentId: string, expiresAt: number): Buffer {
  // Purpose prefix keeps these MACs distinct from anything else signed with the same secret;
  // encodeURIComponent makes the `:`-joined message unambiguous whatever the ids contain.
  const message = `download:${encodeURIComponent(tenantId)}:${encodeURIComponent(documentId)}:${expiresAt}`;
  return createHmac('sha256', secret).update(message).digest();
}

function assertSecret(secret: string): void {
  if (typeof secret !== 'string' || secret.length === 0) throw new TypeError('signing secret must be a non-empty string');
}

/**
 * A URL-safe token `${expiresAt}.${base64url(hmac)}` granting download of one
 * document of one tenant until `expiresAt` (unix seconds).
 */
export function signDownload(
  secret: string,
  params: { tenantId: string; documentId: string; expiresAt: number },
): string {
  assertSecret(secret);
  const { tenantId, documentId, expiresAt } = params;
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0 || expiresAt > 999_999_999_999) {
    throw new TypeError('expiresAt must be a non-negative integer (unix seconds)');
  }
  return `${expiresAt}.${mac(secret, tenantId, documentId, expiresAt).toString('base64url')}`;
}

/**
 * Check a token from signDownload. A token whose signature does not match
 * (tampered, other tenant/document, other secret, malformed) is 'invalid'; a
 * genuine one is 'expired' from `expiresAt` on, else 'ok'.
 */
export function verifyDownload(
  secret: string,
  params: { tenantId: string; documentId: string; token: string; now?: number },
): DownloadTokenStatus {
  assertSecret(secret);
  const { tenantId, documentId, token } = params;
  const match = typeof token === 'string' ? TOKEN_RE.exec(token) : null;
  if (!match) return 'invalid';
  const expiresAt = Number(match[1]);
  if (String(expiresAt) !== match[1]) return 'invalid'; // no leading zeros: one spelling per token
  const given = Buffer.from(match[2], 'base64url');
  const expected = mac(secret, tenantId, documentId, expiresAt);
  // Round-trip check rejects non-canonical base64url spellings of the same bytes.
  if (given.length !== expected.length || given.toString('base64url') !== match[2]) return 'invalid';
  if (!timingSafeEqual(given, expected)) return 'invalid';
  const now = params.now ?? Math.floor(Date.now() / 1000);
  return now >= expiresAt ? 'expired' : 'ok';
}
