import { describe, expect, it } from 'vitest';
import { signDownload, verifyDownload } from '../../src/storage/signed-url.js';

const secret = 'test-secret-with-enough-entropy-0123456789';
const tenantId = '6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f';
const documentId = '11111111-2222-4333-8444-555555555555';
const now = 1_750_000_000;
const expiresAt = now + 3600;

function tokenFor(overrides: Partial<{ tenantId: string; documentId: string; expiresAt: number }> = {}): string {
  return signDownload(secret, { tenantId, documentId, expiresAt, ...overrides });
}

describe('signed download URLs', () => {
  it('produces a URL-safe token that verifies until it expires', () => {
    const token = tokenFor();
    expect(token).toMatch(/^\d+\.[A-Za-z0-9_-]+$/);
    expect(encodeURIComponent(token)).toBe(token);
    expect(token.startsWith(`${expiresAt}.`)).toBe(true);
    expect(verifyDownload(secret, { tenantId, documentId, token, now })).toBe('ok');
    expect(verifyDownload(secret, { tenantId, documentId, token, now: expiresAt - 1 })).toBe('ok');
    expect(verifyDownload(secret, { tenantId, documentId, token, now: expiresAt })).toBe('expired');
    expect(verifyDownload(secret, { tenantId, documentId, token, now: expiresAt + 86_400 })).toBe('expired');
  });

  it('uses the current time when now is omitted', () => {
    const current = Math.floor(Date.now() / 1000);
    expect(verifyDownload(secret, { tenantId, documentId, token: tokenFor({ expiresAt: current + 60 }) })).toBe('ok');
    expect(verifyDownload(secret, { tenantId, documentId, token: tokenFor({ expiresAt: current - 1 }) })).toBe('expired');
  });

  it('is bound to tenant, document and secret', () => {
    const token = tokenFor();
    const otherTenant = '0e0e0e0e-1111-4222-8333-444455556666';
    expect(verifyDownload(secret, { tenantId: otherTenant, documentId, token, now })).toBe('invalid');
    expect(verifyDownload(secret, { tenantId, documentId: otherTenant, token, now })).toBe('invalid');
    expect(verifyDownload(`${secret}x`, { tenantId, documentId, token, now })).toBe('invalid');
    // Swapping ids across the separator does not collide.
    const a = signDownload(secret, { tenantId: 'a:b', documentId: 'c', expiresAt });
    expect(verifyDownload(secret, { tenantId: 'a', documentId: 'b:c', token: a, now })).toBe('invalid');
  });

  it('rejects tampered tokens, including a pushed-back expiry', () => {
    const token = tokenFor();
    const [exp, sig] = token.split('.');
    const flipped = sig.slice(0, 10) + (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11);
    const cases = [
      `${Number(exp) + 86_400}.${sig}`, // extended expiry
      `0${exp}.${sig}`, // same number, other spelling
      `${exp}.${flipped}`,
      `${exp}.${sig.slice(0, -1)}`,
      `${exp}.${sig}=`,
      `${exp}.${sig}.${sig}`,
      `${exp}${sig}`,
      `.${sig}`,
      `-1.${sig}`,
      `${exp}.`,
      '',
      'garbage',
      '💥'.repeat(10),
      `${exp}.${'A'.repeat(10_000)}`,
    ];
    for (const bad of cases) {
      expect(verifyDownload(secret, { tenantId, documentId, token: bad, now }), bad).toBe('invalid');
    }
    // An expired token with a tampered signature is invalid, not merely expired.
    expect(verifyDownload(secret, { tenantId, documentId, token: `${exp}.${flipped}`, now: expiresAt + 1 })).toBe(
      'invalid',
    );
  });

  it('tolerates non-string tokens from untyped callers', () => {
    expect(verifyDownload(secret, { tenantId, documentId, token: undefined as unknown as string, now })).toBe('invalid');
    expect(verifyDownload(secret, { tenantId, documentId, token: 42 as unknown as string, now })).toBe('invalid');
  });

  it('refuses to sign with an empty secret or a bad expiry', () => {
    expect(() => signDownload('', { tenantId, documentId, expiresAt })).toThrow(TypeError);
    expect(() => signDownload(secret, { tenantId, documentId, expiresAt: 1.5 })).toThrow(TypeError);
    expect(() => signDownload(secret, { tenantId, documentId, expiresAt: -1 })).toThrow(TypeError);
    expect(() => signDownload(secret, { tenantId, documentId, expiresAt: Number.NaN })).toThrow(TypeError);
  });
});
