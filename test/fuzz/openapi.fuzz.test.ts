/**
 * Property-based fuzzing of every operation in the served OpenAPI document
 * (/api/docs/openapi.json), with fast-check, on both databases.
 *
 * Two tenants are seeded with processed uploads, a webhook and an invitation,
 * so there are real ids and filenames to leak. For each operation requests
 * are generated from its schema, valid and invalid: wrong types, missing and
 * unknown fields, huge strings, NUL and unpaired surrogates, odd numbers in
 * page/per_page/limit/expires_in, malformed and the other tenant's ids, odd
 * Range and Authorization headers, cookie requests without their CSRF token,
 * multipart uploads with odd parts; sent as the admin, user and viewer of
 * tenant A, as the admin of tenant B, and anonymously.
 *
 * Every answer must hold: no 5xx; every error is problem+json with `code` and
 * `error`; no 2xx body carries an id or filename of a tenant the caller is
 * not in (unless the caller's tenant sent it itself, e.g. in a URL that the
 * audit log records); a cookie-authenticated unsafe request without its CSRF
 * token never succeeds; the server answers /health after each operation.
 *
 * Bounded by time: FUZZ_SECONDS per database (default 20), at most FUZZ_RUNS
 * requests per operation (default 1000); FUZZ_SEED replays a run. Findings
 * are collected (not shrunk) and reported together with the seed.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../../src/db/schema.js';
import { processPendingJobs } from '../../src/jobs/index.js';
import { buildTestApp, dbModes, logIn, signUp, uniqueEmail, type Session, type TestApp } from '../helpers/app.js';
import { member, multipart, upload, type Part } from '../documents/helpers.js';

const SECONDS = Number(process.env.FUZZ_SECONDS ?? 20);
const MAX_RUNS = Number(process.env.FUZZ_RUNS ?? 1000);
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;
/** Print the answers' status codes per operation (how much of each operation the run reached). */
const VERBOSE = Boolean(process.env.FUZZ_VERBOSE);

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
type Schema = Record<string, any>;

interface Operation {
  method: Method;
  path: string;
  params: Array<{ in: string; name: string; schema: Schema; required?: boolean }>;
  body?: Schema;
  multipart: boolean;
  public: boolean;
}

interface TenantSeed {
  key: 'A' | 'B';
  id: string;
  docIds: string[];
  fileIds: string[];
  filenames: string[];
  webhookId: string;
  userIds: string[];
}

interface Actor {
  name: string;
  tenant: TenantSeed;
  role: Role;
  session: Session;
}

interface Credentials {
  auth: string;
  headers: (s: Session) => Record<string, string>;
}

interface Req {
  op: Operation;
  actor: Actor | null;
  auth: string;
  authHeaders: Credentials['headers'];
  method: Method;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
}

interface Finding {
  op: string;
  rule: string;
  request: string;
  response: string;
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const NUL = '\u0000';
const LONE_HIGH = '\ud800';
const LONE_LOW = '\udc00';

/** Percent-encoding that also covers unpaired surrogates (sent as the invalid UTF-8 a broken client would send). */
function enc(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    out += ch.length === 1 && c >= 0xd800 && c <= 0xdfff ? `%ED%${(0xa0 + ((c >> 6) & 0x1f)).toString(16).toUpperCase()}%${(0x80 + (c & 0x3f)).toString(16).toUpperCase()}` : encodeURIComponent(ch);
  }
  return out;
}

const oddStrings = fc.constantFrom(
  '', ' ', NUL, `a${NUL}b`, LONE_HIGH, `x${LONE_LOW}y`, '\u{1F600}', 'a'.repeat(300), 'é'.repeat(2000), '..', '../../etc/passwd',
  "' OR 1=1 --", '<script>', '%', '%ff', '\r\n', '\t', '\u202e', 'null', 'true', '0', '-1', '1e309', 'NaN',
);
const hugeString = fc.constantFrom('x'.repeat(70_000), `${'y'.repeat(10_000)}${NUL}`);
/** Text within the given lengths, now and then carrying a NUL or an unpaired surrogate, or arbitrary code points. */
const textArb = (minLength: number, maxLength: number) => {
  const plain = fc.string({ minLength, maxLength });
  return fc.oneof(
    { weight: 6, arbitrary: plain },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength, maxLength }) },
    { weight: 2, arbitrary: fc.tuple(plain, fc.constantFrom(NUL, LONE_HIGH, LONE_LOW), plain).map(([a, c, b]) => `${a}${c}${b}`) },
  );
};
const anyString = (maxLength = 40) =>
  fc.oneof(
    { weight: 4, arbitrary: fc.string({ maxLength }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength }) },
    { weight: 2, arbitrary: oddStrings },
    { weight: 1, arbitrary: hugeString },
  );
const oddNumbers = fc.constantFrom(
  'Infinity', '-Infinity', '1e309', '-1e309', '99999999999999999999', '9007199254740993', '-1', '0', '1.5', '1e3', '0x10',
  '0o7', '0b1', ' 5', '5 ', '+5', '', 'NaN', 'abc', '%00', '1,2', '１',
);
const oddDates = fc.constantFrom(
  '0000-01-01T00:00:00Z', '2024-02-30T00:00:00Z', '9999-12-31T23:59:60Z', '2024-01-01T00:00:00+25:00', '275760-09-13T00:00:00Z',
  '1969-12-31T23:59:59.9999999999Z', '2024-01-01t00:00:00z', '2024-01-01 00:00:00Z', '-0001-01-01T00:00:00Z', '2024-01-01', 'now',
);
const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  anyString(10), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constant([]), fc.constant({}), fc.constant([1, 'a']),
);

const PASSWORD = 'correct horse battery';

describe.each(dbModes())('fuzzing the OpenAPI operations on %s', (mode) => {
  let t: TestApp;
  let app: FastifyInstance;
  let A: TenantSeed;
  let B: TenantSeed;
  let actors: Actor[];
  let operations: Operation[];
  /** Users of no tenant (an admin may add them); signed download links of each tenant's documents. */
  let free: Session[];
  const links: string[] = [];
  /** Secret strings each tenant's callers have sent themselves (they may see them again, e.g. in the audit log). */
  const sentBy: Record<'A' | 'B', Set<string>> = { A: new Set(), B: new Set() };

  async function seedTenant(key: 'A' | 'B'): Promise<{ seed: TenantSeed; admin: Session }> {
    const admin = await signUp(t.app, { organization_name: `Fuzz ${key} ${randomBytes(4).toString('hex')}` });
    const id = admin.organizationId as string;
    const seed: TenantSeed = { key, id, docIds: [], fileIds: [], filenames: [], webhookId: '', userIds: [admin.userId] };
    for (let i = 0; i < 3; i += 1) {
      const filename = `${key === 'A' ? 'alpha' : 'bravo'}-${randomBytes(6).toString('hex')}.txt`;
      const res = await upload(app, admin, id, `contents ${randomBytes(8).toString('hex')}`, { filename });
      expect(res.statusCode, res.body).toBe(201);
      seed.docIds.push(res.json().id);
      seed.fileIds.push(res.json().file_id);
      seed.filenames.push(filename);
    }
    const hook = await app.inject({
      method: 'POST', url: `/api/tenants/${id}/webhooks`, headers: admin.auth,
      payload: { url: `https://hooks.example.com/${key}`, event_types: ['*'] },
    });
    expect(hook.statusCode, hook.body).toBe(201);
    seed.webhookId = hook.json().id;
    const inv = await app.inject({ method: 'POST', url: `/api/tenants/${id}/invitations`, headers: admin.auth, payload: { email: uniqueEmail('inv'), role: 'user' } });
    expect(inv.statusCode, inv.body).toBe(201);
    return { seed, admin };
  }

  beforeAll(async () => {
    t = await buildTestApp({ mode });
    app = t.app;
    const a = await seedTenant('A');
    const b = await seedTenant('B');
    A = a.seed;
    B = b.seed;
    const userA = await member(app, A.id, 'user');
    const viewerA = await member(app, A.id, 'viewer');
    A.userIds.push(userA.userId, viewerA.userId);
    actors = [
      { name: 'admin of A', tenant: A, role: 'admin', session: a.admin },
      { name: 'user of A', tenant: A, role: 'user', session: userA },
      { name: 'viewer of A', tenant: A, role: 'viewer', session: viewerA },
      { name: 'admin of B', tenant: B, role: 'admin', session: b.admin },
    ];
    free = [await signUp(app), await signUp(app)];
    await processPendingJobs(app);
    for (const [seed, admin] of [[A, a.admin], [B, b.admin]] as const) {
      for (const id of seed.docIds) {
        const res = await app.inject({ url: `/api/tenants/${seed.id}/documents/${id}/download-url`, headers: admin.auth });
        expect(res.statusCode, res.body).toBe(200);
        links.push(new URL(res.json().url).pathname + new URL(res.json().url).search);
      }
    }

    const doc = (await app.inject({ url: '/api/docs/openapi.json' })).json();
    operations = [];
    for (const [path, ops] of Object.entries<Record<string, any>>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(ops)) {
        operations.push({
          method: method.toUpperCase() as Method,
          path,
          params: op.parameters ?? [],
          body: op.requestBody?.content?.['application/json']?.schema,
          multipart: typeof op.description === 'string' && op.description.includes('multipart/form-data'),
          public: Array.isArray(op.security) && op.security.length === 0,
        });
      }
    }
    // Operations that remove what later ones need run last; everything is healed in between anyway.
    const late = (o: Operation) => (o.method === 'DELETE' ? 2 : o.path === '/api/auth/logout' ? 1 : 0);
    operations.sort((x, y) => late(x) - late(y));
  });
  afterAll(async () => t?.close());

  const other = (actor: Actor | null) => (actor ? (actor.tenant.key === 'A' ? B : A) : null);
  const secretsOf = (s: TenantSeed) => [s.id, ...s.docIds, ...s.fileIds, ...s.filenames, s.webhookId];

  /** Restore what an operation may have changed: both tenants active, the actors' memberships and sessions. */
  async function heal() {
    await app.db.updateTable('tenants').set({ is_active: true }).where('id', 'in', [A.id, B.id]).execute();
    await app.db.deleteFrom('memberships').where('user_id', 'in', free.map((f) => f.userId)).execute();
    for (const a of actors) {
      await app.db
        .insertInto('memberships')
        .values({ user_id: a.session.userId, tenant_id: a.tenant.id, role: a.role })
        .onConflict((oc) => oc.columns(['user_id', 'tenant_id']).doUpdateSet({ role: a.role }))
        .execute();
      const me = await app.inject({ url: '/api/auth/me', headers: a.session.auth });
      if (me.statusCode !== 200) a.session = await logIn(app, a.session.email, PASSWORD);
    }
  }

  // ---- generators -------------------------------------------------------------------------

  function pathValueArb(name: string, actor: Actor | null): fc.Arbitrary<string> {
    const own = actor?.tenant ?? A;
    const theirs = other(actor) ?? B;
    const malformed = fc.constantFrom(
      '', 'x', 'not-a-uuid', randomUUID().toUpperCase(), `${randomUUID()}0`, `%20${randomUUID()}`, '%00', '%ff', '%ED%A0%80',
      '..', '%2e%2e', '%2F', 'a'.repeat(99), 'a'.repeat(101), "'%20OR%201=1", '00000000-0000-0000-0000-000000000000', '%C3%28',
    );
    const random = fc.uuid().map(String);
    if (name === 'tid') {
      return fc.oneof({ weight: 6, arbitrary: fc.constant(own.id) }, { weight: 2, arbitrary: fc.constant(theirs.id) }, { weight: 1, arbitrary: random }, { weight: 3, arbitrary: malformed });
    }
    const ownIds = [...own.docIds, ...own.fileIds, own.webhookId, ...own.userIds];
    const theirIds = [...theirs.docIds, ...theirs.fileIds, theirs.webhookId];
    const preferred = name === 'fid' ? own.fileIds : name === 'uid' ? [...own.userIds, ...free.map((f) => f.userId)] : name === 'id' ? [...own.docIds, own.webhookId] : ownIds;
    return fc.oneof(
      { weight: 5, arbitrary: fc.constantFrom(...preferred) },
      { weight: 1, arbitrary: fc.constantFrom(...ownIds) },
      { weight: 2, arbitrary: fc.constantFrom(...theirIds) },
      { weight: 1, arbitrary: random },
      { weight: 3, arbitrary: malformed },
    );
  }

  /** A value that the schema accepts (mostly): objects with their required and some optional properties. */
  function validArb(schema: Schema | undefined, name: string, actor: Actor | null, depth = 0): fc.Arbitrary<unknown> {
    if (!schema || depth > 4) return anyJson;
    if (schema.anyOf || schema.oneOf) return fc.oneof(...(schema.anyOf ?? schema.oneOf).map((s: Schema) => validArb(s, name, actor, depth + 1)));
    if (schema.enum) {
      // A dedicated tenant would provision a database on the shared server for every hit: only `shared` here.
      const values = name === 'isolation' ? schema.enum.filter((v: unknown) => v !== 'dedicated') : schema.enum;
      return values.length ? fc.constantFrom(...values) : fc.constant('shared');
    }
    if (schema.const !== undefined) return fc.constant(schema.const);
    const own = actor?.tenant ?? A;
    switch (schema.type) {
      case 'object': {
        const props: Record<string, Schema> = schema.properties ?? {};
        const model = Object.fromEntries(Object.entries(props).map(([k, s]) => [k, validArb(s, k, actor, depth + 1)]));
        return fc.record(model, { requiredKeys: (schema.required ?? []).filter((k: string) => k in props) });
      }
      case 'array': {
        const items = validArb(schema.items, name, actor, depth + 1);
        const maxLength = Math.min(schema.maxItems ?? 4, 4);
        const minLength = Math.min(schema.minItems ?? 0, maxLength);
        return schema.uniqueItems
          ? fc.uniqueArray(items, { minLength, maxLength, selector: (v) => JSON.stringify(v) })
          : fc.array(items, { minLength, maxLength });
      }
      case 'integer': {
        const min = Number.isFinite(schema.minimum) ? schema.minimum : -1000;
        const max = Number.isFinite(schema.maximum) ? schema.maximum : 1000;
        return fc.oneof(fc.integer({ min, max: Math.min(max, min + 100) }), fc.constantFrom(min, max));
      }
      case 'number':
        return fc.double({ noNaN: true, noDefaultInfinity: true });
      case 'boolean':
        return fc.boolean();
      case 'null':
        return fc.constant(null);
      case 'string':
        break;
      default:
        return anyJson;
    }
    if (name === 'password') return fc.oneof(fc.constant(PASSWORD), textArb(schema.minLength ?? 0, 40));
    if (schema.format === 'email' || name === 'email') {
      // Signing in as someone is being them: only the emails of the caller's own tenant (none for anonymous callers).
      const mine = [...actors.filter((a) => a.tenant === actor?.tenant), ...(actor ? free : [])].map((a) => ('session' in a ? a.session : a).email);
      return fc.oneof(mine.length ? fc.constantFrom(...mine) : fc.emailAddress(), fc.emailAddress(), fc.constant(uniqueEmail('fz')));
    }
    if (schema.format === 'uuid' || name.endsWith('_id')) return fc.constantFrom(...own.userIds, ...free.map((f) => f.userId), ...own.docIds, randomUUID());
    if (schema.format === 'date-time') return fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(4e12) }).map((d) => d.toISOString());
    if (name === 'url') {
      return fc.oneof({ weight: 3, arbitrary: fc.webUrl({ validSchemes: ['https'] }) }, { weight: 3, arbitrary: fc.constant('https://hooks.example.com/fz') }, { weight: 2, arbitrary: fc.constantFrom(
        'https://hooks.example.com/fz', 'https://[::ffff:127.0.0.1]/h', 'https://localhost./h', 'http://hooks.example.com/',
        'https://2130706433/', 'https://[::ffff:169.254.169.254]/latest', 'javascript:alert(1)', 'https://user:pw@hooks.example.com/',
      ) });
    }
    if (name === 'refresh_token') return fc.constantFrom(...actors.filter((a) => a.tenant === actor?.tenant).map((a) => a.session.refreshToken), 'x');
    if (name === 'invitation_token') return fc.constantFrom('x', randomBytes(24).toString('base64url'));
    if (name === 'mime_type') return fc.constantFrom('text/plain', 'application/pdf', 'image/png', 'x/y');
    const maxLength = Math.min(schema.maxLength ?? 40, 40);
    const minLength = Math.min(schema.minLength ?? 0, maxLength);
    const plain = textArb(Math.max(minLength, 1), Math.max(maxLength, 1));
    if (schema.pattern) {
      const re = new RegExp(schema.pattern, 'u');
      return plain.filter((s) => re.test(s));
    }
    return plain;
  }

  /** The schema's value, broken in one way: a missing required field, an unknown one, a wrong type, odd text. */
  function invalidArb(schema: Schema | undefined, actor: Actor | null): fc.Arbitrary<unknown> {
    const base = validArb(schema, '', actor);
    const props = Object.keys(schema?.properties ?? {});
    const required: string[] = schema?.required ?? [];
    const pick = (keys: string[]) => (keys.length ? fc.constantFrom(...keys) : fc.constant('x'));
    return fc.oneof(
      fc.tuple(base, pick(required)).map(([v, k]) => {
        const copy = { ...(v as object) } as Record<string, unknown>;
        delete copy[k];
        return copy;
      }),
      fc.tuple(base, fc.oneof(fc.constantFrom('organisation_name', 'extra', '__proto__', 'constructor', 'isolation', 'id', 'tenant_id'), fc.string({ maxLength: 12 })), anyJson).map(
        ([v, k, x]) => ({ ...(v as object), [k]: x }),
      ),
      fc.tuple(base, pick(props), fc.oneof(anyJson, oddStrings, hugeString, fc.constant({ nested: { deep: [1] } }))).map(([v, k, x]) => ({ ...(v as object), [k]: x })),
      anyJson,
    );
  }

  function bodyArb(op: Operation, actor: Actor | null): fc.Arbitrary<{ payload?: string | Buffer; contentType?: string }> {
    if (op.multipart) return multipartArb();
    const json = (a: fc.Arbitrary<unknown>) => a.map((v) => ({ payload: JSON.stringify(v), contentType: 'application/json' }));
    const raw = fc.constantFrom(
      { payload: '', contentType: 'application/json' },
      { payload: '{', contentType: 'application/json' },
      { payload: '{"a":', contentType: 'application/json' },
      { payload: '{"__proto__":{"polluted":1}}', contentType: 'application/json' },
      { payload: '{"x":"\\ud800"}', contentType: 'application/json' },
      { payload: '{"x":"a\\u0000b"}', contentType: 'application/json' },
      { payload: 'email=a@b.c&password=x', contentType: 'application/x-www-form-urlencoded' },
      { payload: '{"a":1}', contentType: 'text/plain' },
      { payload: '{"a":1}', contentType: 'application/json; charset=utf-16' },
      { payload: '<a/>', contentType: 'application/xml' },
      { payload: '{"a":1}', contentType: 'multipart/form-data' },
      { payload: `{"a":"${'z'.repeat(1_100_000)}"}`, contentType: 'application/json' },
      { payload: `${'['.repeat(50_000)}${']'.repeat(50_000)}`, contentType: 'application/json' },
    );
    if (!op.body) {
      return fc.oneof({ weight: 6, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: json(anyJson) }, { weight: 1, arbitrary: raw });
    }
    return fc.oneof(
      { weight: 5, arbitrary: json(validArb(op.body, '', actor)) },
      { weight: 4, arbitrary: json(invalidArb(op.body, actor)) },
      { weight: 1, arbitrary: raw },
    );
  }

  function multipartArb(): fc.Arbitrary<{ payload?: string | Buffer; contentType?: string }> {
    const filename = fc.oneof(fc.constant('fuzz.txt'), textArb(0, 30), oddStrings, fc.constant('a'.repeat(400)), fc.constant(`x${NUL}.png`));
    const data = fc.oneof(fc.uint8Array({ maxLength: 2048 }).map((u) => Buffer.from(u)), fc.constant(Buffer.alloc(0)), fc.constant(Buffer.from('%PDF-1.4\n')));
    const part: fc.Arbitrary<Part> = fc.oneof(
      { weight: 5, arbitrary: fc.record({ name: fc.constant('file'), filename, contentType: fc.constantFrom('text/plain', 'image/png', 'application/octet-stream', ''), data }) },
      { weight: 2, arbitrary: fc.record({ name: fc.constant('filename'), data: fc.oneof(textArb(0, 30), oddStrings) }) },
      { weight: 1, arbitrary: fc.record({ name: fc.oneof(fc.constant('other'), oddStrings), filename, data }) },
    );
    return fc.oneof(
      { weight: 8, arbitrary: fc.array(part, { minLength: 0, maxLength: 3 }).map((parts) => {
        const m = multipart(parts);
        return { payload: m.payload, contentType: m.headers['content-type'] };
      }) },
      { weight: 1, arbitrary: fc.constantFrom(
        { payload: '--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nabc', contentType: 'multipart/form-data; boundary=x' },
        { payload: 'not multipart', contentType: 'multipart/form-data' },
        { payload: 'not multipart', contentType: 'multipart/form-data; boundary=' },
        { payload: '{"file":"x"}', contentType: 'application/json' },
        { payload: undefined, contentType: undefined },
      ) },
    );
  }

  function queryArb(op: Operation): fc.Arbitrary<string> {
    const params = op.params.filter((p) => p.in === 'query');
    const one = (p: Operation['params'][number]) => {
      const s = p.schema ?? {};
      const valid =
        s.type === 'integer'
          ? validArb(s, p.name, null).map(String)
          : s.anyOf || s.enum
            ? validArb(s, p.name, null).map(String)
            : s.format === 'uuid' || s.format === 'date-time'
              ? validArb(s, p.name, null).map(String)
              : anyString(30).map((x) => x);
      const value = fc.oneof(
        { weight: 4, arbitrary: valid.map(enc) },
        { weight: 3, arbitrary: (s.type === 'integer' ? oddNumbers : s.format === 'date-time' ? oddDates : anyString(30)).map(enc) },
        { weight: 1, arbitrary: fc.constantFrom('%00', '%ED%A0%80', '%ff', '%', '%%', '%2', 'a%00b') },
      );
      return fc.option(value.map((v) => `${p.name}=${v}`), { nil: undefined, freq: 2 });
    };
    const extra = fc.option(fc.constantFrom('per_page=10&limit=Infinity', 'page=1&page=2', 'zzz=1', 'page[]=1', 'page', '&&', 'limit=1e309', `filename=${'f'.repeat(5000)}`), { nil: undefined, freq: 3 });
    return fc.tuple(fc.tuple(...params.map(one)), extra).map(([vals, x]) => [...vals, x].filter((v) => v !== undefined).join('&'));
  }

  /**
   * Credentials of an actor, or broken ones: a bad header, cookies with and without CSRF, none. The headers are
   * made when the request is sent, from the actor's session at that time (logout and refresh replace it).
   */
  function authArb(actor: Actor | null): fc.Arbitrary<Credentials> {
    const kind = (auth: string, headers: (s: Session) => Record<string, string>): Credentials => ({ auth, headers });
    if (!actor) {
      return fc.constantFrom(
        kind('none', () => ({})),
        kind('garbage', () => ({ authorization: 'Bearer x.y.z' })),
        kind('garbage', () => ({ cookie: 'session=nonsense' })),
      );
    }
    return fc.oneof(
      { weight: 8, arbitrary: fc.constant(kind('bearer', (s) => ({ authorization: `Bearer ${s.accessToken}` }))) },
      { weight: 2, arbitrary: fc.constant(kind('cookie', (s) => ({ cookie: `session=${s.cookie}`, 'x-csrf-token': s.csrfToken }))) },
      { weight: 2, arbitrary: fc.constant(kind('cookie-no-csrf', (s) => ({ cookie: `session=${s.cookie}` }))) },
      { weight: 1, arbitrary: fc.constant(kind('cookie-no-csrf', (s) => ({ cookie: `session=${s.cookie}`, 'x-csrf-token': 'wrong' }))) },
      { weight: 2, arbitrary: fc.constantFrom(
        'Bearer', 'Bearer ', 'Bearer x.y.z', 'Basic YTpi', 'bearer', 'Token abc', `Bearer ${'a'.repeat(5000)}`, 'Bearer eyJhbGciOiJub25lIn0.e30.',
        'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.AAAA', 'Bearer \u00e9', 'Bearer a b', ',',
      ).map((h) => kind('garbage', () => ({ authorization: h }))) },
      { weight: 1, arbitrary: fc.constant(kind('garbage', (s) => ({ authorization: `Bearer ${s.refreshToken}` }))) },
      { weight: 1, arbitrary: fc.constant(kind('garbage', (s) => ({ authorization: `Bearer ${s.accessToken}x` }))) },
      { weight: 1, arbitrary: fc.constant(kind('none', () => ({}))) },
    );
  }

  function extraHeadersArb(op: Operation, actor: Actor | null): fc.Arbitrary<Record<string, string>> {
    const own = actor?.tenant ?? A;
    const theirs = other(actor) ?? B;
    const range = fc.option(fc.constantFrom(
      'bytes=0-0', 'bytes=0-', 'bytes=-1', 'bytes=-0', 'bytes=5-1', 'bytes=0-99999999999999999999', 'bytes=99999999999999999999-',
      'bytes=abc', 'items=0-1', 'bytes=0-1,2-3', 'bytes=', 'bytes=--1', 'bytes=1e3-', 'bytes=-9007199254740993', '',
    ), { nil: undefined, freq: 2 });
    const ifHeader = fc.option(fc.constantFrom('"x"', '*', 'W/"x"', '', 'Tue, 01 Jan 2030 00:00:00 GMT'), { nil: undefined, freq: 4 });
    const tenantHeader = op.path.startsWith('/api/files')
      ? fc.option(fc.constantFrom(own.id, own.id, theirs.id, 'garbage', '', randomUUID(), own.id.toUpperCase(), `${own.id},${theirs.id}`), { nil: undefined, freq: 2 })
      : fc.constant(undefined);
    return fc.record({ range, ifRange: ifHeader, ifNone: ifHeader, tenant: tenantHeader }).map(({ range: r, ifRange, ifNone, tenant }) => {
      const h: Record<string, string> = {};
      if (r !== undefined) h.range = r;
      if (ifRange !== undefined) h['if-range'] = ifRange;
      if (ifNone !== undefined) h['if-none-match'] = ifNone;
      if (tenant !== undefined) h['x-tenant-id'] = tenant;
      return h;
    });
  }

  /** A signed download link as issued, or altered: the other tenant's id, another document, a cut token. */
  function linkArb(): fc.Arbitrary<string | undefined> {
    const altered = fc.tuple(fc.constantFrom(...links), fc.constantFrom(...links), fc.nat(3)).map(([x, y, how]) => {
      const [, , , tid, id] = x.split(/[/?]/);
      const [, , , tid2, id2] = y.split(/[/?]/);
      if (how === 0) return x.replace(tid, tid2);
      if (how === 1) return x.replace(id, id2);
      if (how === 2) return x.slice(0, -3);
      return `${x}&token=x`;
    });
    return fc.oneof(fc.constant(undefined), fc.constantFrom(...links), altered);
  }

  function requestArb(op: Operation): fc.Arbitrary<Req> {
    const actorArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...actors) }, { weight: 1, arbitrary: fc.constant(null) });
    return actorArb.chain((actor) => {
      const names = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      return fc
        .record({
          path: fc.tuple(...names.map((n) => pathValueArb(n, actor))),
          query: queryArb(op),
          auth: authArb(actor),
          extra: extraHeadersArb(op, actor),
          body: bodyArb(op, actor),
          link: op.path === '/api/downloads/{tid}/{id}' ? linkArb() : fc.constant(undefined),
        })
        .map(({ path, query, auth, extra, body, link }) => {
          let i = 0;
          const url = link ?? op.path.replace(/\{\w+\}/g, () => path[i++]) + (query ? `?${query}` : '');
          const headers: Record<string, string> = { ...extra };
          if (body.contentType) headers['content-type'] = body.contentType;
          return { op, actor, auth: auth.auth, authHeaders: auth.headers, method: op.method, url, headers, payload: body.payload };
        });
    });
  }

  // ---- invariants -------------------------------------------------------------------------

  const describeReq = (r: Req) =>
    JSON.stringify({ actor: r.actor?.name ?? 'anonymous', auth: r.auth, method: r.method, url: r.url.slice(0, 300), headers: Object.keys(r.headers), body: r.payload?.toString().slice(0, 300) });

  function violations(r: Req, res: LightMyRequestResponse): string[] {
    const out: string[] = [];
    if (res.statusCode >= 500) out.push(`${res.statusCode} answered`);
    if (res.statusCode >= 400) {
      if (!/^application\/problem\+json/.test(String(res.headers['content-type']))) out.push(`error ${res.statusCode} is ${res.headers['content-type']}, not problem+json`);
      else {
        let body: any;
        try {
          body = res.json();
        } catch {
          body = null;
        }
        if (typeof body?.code !== 'string' || typeof body?.error !== 'string') out.push(`error ${res.statusCode} has no code/error`);
      }
    }
    if (res.statusCode >= 200 && res.statusCode < 300) {
      const theirs = other(r.actor);
      const forbidden = theirs ? secretsOf(theirs) : [...secretsOf(A), ...secretsOf(B)];
      const sent = r.actor ? sentBy[r.actor.tenant.key] : new Set<string>();
      for (const secret of forbidden) {
        if (!sent.has(secret) && res.body.includes(secret)) out.push(`2xx body carries another tenant's ${secret}`);
      }
      if (r.auth === 'cookie-no-csrf' && UNSAFE.has(r.method) && !r.op.public) out.push(`cookie ${r.method} without CSRF answered ${res.statusCode}`);
    }
    return out;
  }

  /** Sessions a request may have ended (logout, refresh rotation or reuse): signed in again before the actor's next request. */
  const stale = new Set<Actor>();

  async function send(r: Req): Promise<LightMyRequestResponse> {
    if (r.actor && stale.has(r.actor)) {
      r.actor.session = await logIn(app, r.actor.session.email, PASSWORD);
      stale.delete(r.actor);
    }
    const headers = { ...r.headers, ...r.authHeaders(r.actor?.session ?? actors[0].session) };
    if (r.actor) {
      const text = `${r.url} ${r.payload?.toString() ?? ''} ${JSON.stringify(headers)}`;
      for (const s of [...secretsOf(A), ...secretsOf(B)]) if (text.includes(s)) sentBy[r.actor.tenant.key].add(s);
    }
    const res = await app.inject({ method: r.method, url: r.url, headers, payload: r.payload });
    if (r.actor && r.op.path === '/api/auth/logout') stale.add(r.actor);
    for (const a of actors) if (r.op.path === '/api/auth/refresh' && r.payload?.toString().includes(a.session.refreshToken)) stale.add(a);
    return res;
  }

  it(
    'no 5xx, errors are problem+json with a code, no other tenant\'s data, no CSRF-less cookie writes, the server stays up',
    async () => {
      const findings: Finding[] = [];
      const seen = new Set<string>();
      const budgetMs = (SECONDS * 1000) / operations.length;
      let requests = 0;
      for (const op of operations) {
        await heal();
        const name = `${op.method} ${op.path}`;
        const statuses: Record<number, number> = {};
        await fc.check(
          fc.asyncProperty(requestArb(op), async (r) => {
            requests += 1;
            let res: LightMyRequestResponse;
            try {
              res = await send(r);
            } catch (err) {
              findings.push({ op: name, rule: `inject threw ${(err as Error).message}`, request: describeReq(r), response: '' });
              return true;
            }
            statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
            for (const rule of violations(r, res)) {
              const key = `${name} ${rule.replace(/[0-9a-f-]{36}|\b(alpha|bravo)-\w+\.txt/g, '<id>')} ${(() => { try { return res.json().code; } catch { return ''; } })()}`;
              if (seen.has(key)) continue;
              seen.add(key);
              findings.push({ op: name, rule, request: describeReq(r), response: `${res.statusCode} ${res.body.slice(0, 300)}` });
            }
            return true;
          }),
          { numRuns: MAX_RUNS, interruptAfterTimeLimit: budgetMs, markInterruptAsFailure: false, seed: SEED },
        );
        if (VERBOSE) console.info(`[fuzz ${mode}] ${name} ${JSON.stringify(statuses)}`);
        const health = await app.inject({ url: '/health' });
        if (health.statusCode !== 200) findings.push({ op: name, rule: 'the server stopped answering /health', request: '', response: `${health.statusCode}` });
      }
      await heal();
      const admin = actors[0].session;
      const alive = await app.inject({ url: `/api/tenants/${A.id}/documents`, headers: admin.auth });
      expect(alive.statusCode).toBe(200);
      console.info(`[fuzz ${mode}] ${operations.length} operations, ${requests} requests, seed ${SEED} (FUZZ_SEED to replay)`);
      expect(findings, `seed ${SEED}:\n${findings.map((f) => `${f.op}: ${f.rule}\n  ${f.request}\n  -> ${f.response}`).join('\n')}`).toEqual([]);
    },
    (SECONDS + 120) * 1000,
  );
});
