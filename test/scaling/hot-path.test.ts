/**
 * Guards for the request hot-path changes made from the benchmark (issue #6):
 * the security headers computed once are exactly @fastify/helmet's, and the
 * access-token key imported once signs and verifies like the raw secret did.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import Fastify from 'fastify';
import helmet from '@fastify/helmet';
import { SignJWT } from 'jose';
import { computeSecurityHeaders, SECURITY_HEADERS, securityHeadersPlugin } from '../../src/http/security-headers.js';
import { hmacKey, secretKey, signAccessToken, verifyAccessToken } from '../../src/auth/tokens.js';

const HELMET_HEADERS = [
  'content-security-policy', 'cross-origin-opener-policy', 'cross-origin-resource-policy', 'origin-agent-cluster',
  'referrer-policy', 'strict-transport-security', 'x-content-type-options', 'x-dns-prefetch-control',
  'x-download-options', 'x-frame-options', 'x-permitted-cross-domain-policies', 'x-xss-protection',
];

async function headersFrom(register: (app: ReturnType<typeof Fastify>) => Promise<void>) {
  const app = Fastify({ logger: false });
  await register(app);
  app.get('/ok', async () => ({ ok: true }));
  app.get('/boom', async () => {
    throw Object.assign(new Error('nope'), { statusCode: 418 });
  });
  app.get('/own', async (_req, reply) => reply.header('x-frame-options', 'DENY').send({ ok: true }));
  await app.ready();
  const pick = async (url: string) => {
    const res = await app.inject({ method: 'GET', url });
    return Object.fromEntries(Object.entries(res.headers).filter(([k]) => HELMET_HEADERS.includes(k)));
  };
  const out = { ok: await pick('/ok'), error: await pick('/boom'), notFound: await pick('/nowhere'), own: await pick('/own') };
  await app.close();
  return out;
}

describe('security headers computed once', () => {
  it('sets exactly the headers @fastify/helmet sets, on success, error and 404 responses', async () => {
    const reference = await headersFrom(async (app) => { await app.register(helmet, SECURITY_HEADERS); });
    const ours = await headersFrom(async (app) => { await app.register(securityHeadersPlugin, SECURITY_HEADERS); });
    expect(Object.keys(reference.ok).sort()).toEqual([...HELMET_HEADERS].sort());
    expect(ours).toEqual(reference);
    expect(ours.ok['content-security-policy']).toContain("style-src 'self' 'unsafe-inline'");
    expect(ours.own['x-frame-options']).toBe('DENY');
  });

  it('computes the list without a request', () => {
    const names = computeSecurityHeaders().map(([n]) => n);
    expect(names.sort()).toEqual([...HELMET_HEADERS].sort());
  });
});

describe('access-token key imported once', () => {
  const SECRET = 'a-test-secret-that-is-long-enough-for-hs256!';

  it('verifies tokens signed with the raw secret and the other way round', async () => {
    const key = await hmacKey(SECRET);
    const raw = secretKey(SECRET);
    const a = await signAccessToken(key, { userId: 'u1', sessionId: 's1', ttlSec: 60 });
    const b = await signAccessToken(raw, { userId: 'u2', sessionId: 's2', ttlSec: 60 });
    expect(await verifyAccessToken(raw, a.token)).toEqual({ sub: 'u1', sid: 's1', jti: a.jti, exp: a.exp });
    expect(await verifyAccessToken(key, b.token)).toEqual({ sub: 'u2', sid: 's2', jti: b.jti, exp: b.exp });
  });

  it('still refuses another key, another algorithm, a tampered payload and an expired token', async () => {
    const key = await hmacKey(SECRET);
    const other = await signAccessToken(await hmacKey(`${SECRET}x`), { userId: 'u', sessionId: 's', ttlSec: 60 });
    expect(await verifyAccessToken(key, other.token)).toBe('invalid');

    const hs512 = await new SignJWT({ sid: 's', typ: 'access' }).setProtectedHeader({ alg: 'HS512' })
      .setSubject('u').setJti('j').setIssuer('tenantbase').setIssuedAt().setExpirationTime('1m').sign(new TextEncoder().encode(SECRET));
    expect(await verifyAccessToken(key, hs512)).toBe('invalid');
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${hs512.split('.')[1]}.`;
    expect(await verifyAccessToken(key, none)).toBe('invalid');

    const good = await signAccessToken(key, { userId: 'u', sessionId: 's', ttlSec: 60 });
    const [h, p, s] = good.token.split('.');
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...payload, sub: 'admin' })).toString('base64url')}.${s}`;
    expect(await verifyAccessToken(key, tampered)).toBe('invalid');

    const expired = await new SignJWT({ sid: 's', typ: 'access' }).setProtectedHeader({ alg: 'HS256' })
      .setSubject('u').setJti('j').setIssuer('tenantbase').setIssuedAt(1_000).setExpirationTime(1_060).sign(secretKey(SECRET));
    expect(await verifyAccessToken(key, expired)).toBe('expired');
  });

  it('accepts a token signed by a standard JWT library and refuses every malformed variant of it', async () => {
    const key = await hmacKey(SECRET);
    const raw = secretKey(SECRET);
    const build = (claims: Record<string, unknown>, header: Record<string, unknown> = { alg: 'HS256' }) =>
      new SignJWT({
        sid: 's', typ: 'access', sub: 'u', jti: 'j', iss: 'tenantbase',
        iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 60, ...claims,
      }).setProtectedHeader(header as { alg: string }).sign(raw);
    const ok = await build({});
    expect(await verifyAccessToken(key, ok)).toMatchObject({ sub: 'u', sid: 's', jti: 'j' });

    expect(await verifyAccessToken(key, await build({ typ: 'refresh' }))).toBe('invalid');
    expect(await verifyAccessToken(key, await build({ iss: 'someone-else' }))).toBe('invalid');
    expect(await verifyAccessToken(key, await build({ sid: 42 }))).toBe('invalid');
    expect(await verifyAccessToken(key, await build({ nbf: Math.floor(Date.now() / 1000) + 600 }))).toBe('invalid');
    const handMade = (header: object, claims: object) => {
      const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
      return `${input}.${crypto.createHmac('sha256', raw).update(input).digest('base64url')}`;
    };
    const claims = { sid: 's', typ: 'access', sub: 'u', jti: 'j', iss: 'tenantbase', exp: Math.floor(Date.now() / 1000) + 60 };
    expect(await verifyAccessToken(key, handMade({ alg: 'HS256' }, claims))).toMatchObject({ sub: 'u' });
    expect(await verifyAccessToken(key, handMade({ alg: 'HS256', crit: ['x'], x: 1 }, claims))).toBe('invalid');
    expect(await verifyAccessToken(key, handMade({ alg: 'none' }, claims))).toBe('invalid');
    expect(await verifyAccessToken(key, handMade({ alg: 'HS256' }, { ...claims, exp: 'tomorrow' }))).toBe('invalid');
    expect(await verifyAccessToken(key, await build({}, { alg: 'HS256', typ: 'at+jwt' }))).toBe('invalid');

    const [h, p, s] = ok.split('.');
    for (const bad of [
      '', 'a.b', `${h}.${p}`, `${h}.${p}.`, `${h}.${p}.${s}.x`, `${h}.${p}.${s}=`, ` ${ok}`, `${ok} `,
      `${h}.${p}.${s.slice(0, -1)}`, `${h}.${p}.${Buffer.from('x'.repeat(32)).toString('base64url')}`,
      `${h}.${p}.${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}`,
      // A valid MAC over a payload that is not a JSON object.
      (() => {
        const body = Buffer.from('[1,2]').toString('base64url');
        return `${h}.${body}.${crypto.createHmac('sha256', raw).update(`${h}.${body}`).digest('base64url')}`;
      })(),
    ]) {
      expect(await verifyAccessToken(key, bad), JSON.stringify(bad)).toBe('invalid');
    }
  });
});
