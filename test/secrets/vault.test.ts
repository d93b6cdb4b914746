import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadVaultSecrets } from '../../src/secrets/vault.js';

const TOKEN = 'good-token';
const ROLE_ID = 'role-123';
const SECRET_ID = 'secret-456';
const APPROLE_TOKEN = 'approle-token';

const SECRETS: Record<string, Record<string, unknown>> = {
  'saas-platform/production': { JWT_SECRET_KEY: 'jwt-value-prod', SECRET_KEY: 's3cr3t-prod', PORT: 4999, TRUST_PROXY: true },
  'saas-platform/development': { JWT_SECRET_KEY: 'jwt-value-dev', nested: { a: 1 } },
  'custom/app': { jwt_secret: 'seed-jwt', aws_access_key: 'AKIA-X', aws_secret: 'aws-value', db_user: 'app', db_password: 'p@ss:word', redis_url: 'redis://r:6379/0' },
};

interface Seen { method: string; url: string; token?: string }
const seen: Seen[] = [];
let server: http.Server;
let addr = '';

function send(res: http.ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const token = req.headers['x-vault-token'] as string | undefined;
      seen.push({ method: req.method ?? '', url: req.url ?? '', token });
      if (req.method === 'POST' && req.url === '/v1/auth/approle/login') {
        const { role_id, secret_id } = JSON.parse(raw || '{}');
        if (role_id === ROLE_ID && secret_id === SECRET_ID) {
          return send(res, 200, { auth: { client_token: APPROLE_TOKEN, lease_duration: 3600, renewable: true } });
        }
        return send(res, 400, { errors: ['invalid role or secret ID'] });
      }
      const m = /^\/v1\/secret\/data\/(.+)$/.exec(req.url ?? '');
      if (req.method === 'GET' && m) {
        if (token !== TOKEN && token !== APPROLE_TOKEN) return send(res, 403, { errors: ['permission denied'] });
        if (m[1] === 'slow/path') return; // never answers: exercises the timeout
        const data = SECRETS[decodeURIComponent(m[1])];
        if (!data) return send(res, 404, { errors: [] });
        return send(res, 200, { data: { data, metadata: { version: 1 } } });
      }
      send(res, 404, { errors: [] });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  addr = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

function logger() {
  return { warn: vi.fn(), info: vi.fn() };
}

/** Everything logged, as one string: must never contain a secret value. */
function logged(log: ReturnType<typeof logger>) {
  return JSON.stringify([log.warn.mock.calls, log.info.mock.calls]);
}

describe('loadVaultSecrets', () => {
  it('returns {} and makes no request when USE_VAULT is not true', async () => {
    const fetchImpl = vi.fn<typeof fetch>();
    for (const USE_VAULT of [undefined, '', 'false', '0']) {
      const log = logger();
      expect(await loadVaultSecrets({ USE_VAULT, VAULT_ADDR: addr, VAULT_TOKEN: TOKEN }, log, fetchImpl)).toEqual({});
      expect(log.warn).not.toHaveBeenCalled();
    }
    expect(fetchImpl).not.toHaveBeenCalled();
  });

  it('reads the per-environment KV v2 path with a token and stringifies scalars', async () => {
    seen.length = 0;
    const log = logger();
    const env = { USE_VAULT: 'true', NODE_ENV: 'production', VAULT_ADDR: addr, VAULT_TOKEN: TOKEN };
    const secrets = await loadVaultSecrets(env, log);
    expect(secrets).toEqual({ JWT_SECRET_KEY: 'jwt-value-prod', SECRET_KEY: 's3cr3t-prod', PORT: '4999', TRUST_PROXY: 'true' });
    expect(seen).toEqual([{ method: 'GET', url: '/v1/secret/data/saas-platform/production', token: TOKEN }]);
    expect(log.info).toHaveBeenCalled();
    expect(logged(log)).not.toMatch(/jwt-value-prod|s3cr3t-prod|good-token/);
  });

  it('defaults the path to saas-platform/development and skips non-scalar values', async () => {
    const log = logger();
    const secrets = await loadVaultSecrets({ USE_VAULT: 'true', VAULT_ADDR: `${addr}/`, VAULT_TOKEN: TOKEN }, log);
    expect(secrets).toEqual({ JWT_SECRET_KEY: 'jwt-value-dev' });
    expect(log.warn).toHaveBeenCalledWith({ keys: ['nested'] }, expect.any(String));
  });

  it('logs in with AppRole, then reads with the client token', async () => {
    seen.length = 0;
    const log = logger();
    const env = {
      USE_VAULT: 'true', NODE_ENV: 'production', VAULT_ADDR: addr,
      VAULT_ROLE_ID: ROLE_ID, VAULT_SECRET_ID: SECRET_ID,
    };
    expect(await loadVaultSecrets(env, log)).toMatchObject({ JWT_SECRET_KEY: 'jwt-value-prod' });
    expect(seen).toEqual([
      { method: 'POST', url: '/v1/auth/approle/login', token: undefined },
      { method: 'GET', url: '/v1/secret/data/saas-platform/production', token: APPROLE_TOKEN },
    ]);
    expect(logged(log)).not.toMatch(/approle-token|secret-456/);
  });

  it('maps the seeds\' key names, puts db_user/db_password into DATABASE_URL, honours VAULT_MOUNT/VAULT_PATH', async () => {
    const log = logger();
    const env = {
      USE_VAULT: 'true', VAULT_ADDR: addr, VAULT_TOKEN: TOKEN, VAULT_MOUNT: 'secret', VAULT_PATH: '/custom/app/',
      DATABASE_URL: 'postgres://postgres:postgres@postgres:5432/saas_platform',
    };
    expect(await loadVaultSecrets(env, log)).toEqual({
      JWT_SECRET_KEY: 'seed-jwt',
      S3_ACCESS_KEY_ID: 'AKIA-X',
      S3_SECRET_ACCESS_KEY: 'aws-value',
      REDIS_URL: 'redis://r:6379/0',
      DATABASE_URL: 'postgres://app:p%40ss%3Aword@postgres:5432/saas_platform',
    });
    expect(logged(log)).not.toMatch(/seed-jwt|aws-value|p@ss|p%40ss/);
  });

  it('wrong token (403): warns and falls back to the environment outside production', async () => {
    const log = logger();
    const env = { USE_VAULT: 'true', NODE_ENV: 'development', VAULT_ADDR: addr, VAULT_TOKEN: 'wrong-token' };
    expect(await loadVaultSecrets(env, log)).toEqual({});
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(logged(log)).toMatch(/403/);
    expect(logged(log)).toMatch(/permission denied/);
    expect(logged(log)).not.toMatch(/wrong-token/);
  });

  it('wrong token (403): throws in production', async () => {
    const env = { USE_VAULT: 'true', NODE_ENV: 'production', VAULT_ADDR: addr, VAULT_TOKEN: 'wrong-token' };
    await expect(loadVaultSecrets(env, logger())).rejects.toThrow(/Vault.*403.*permission denied.*production/s);
  });

  it('bad AppRole credentials: falls back in development, throws in production', async () => {
    const env = { USE_VAULT: 'true', VAULT_ADDR: addr, VAULT_ROLE_ID: ROLE_ID, VAULT_SECRET_ID: 'nope' };
    const log = logger();
    expect(await loadVaultSecrets(env, log)).toEqual({});
    expect(log.warn).toHaveBeenCalledTimes(1);
    await expect(loadVaultSecrets({ ...env, NODE_ENV: 'production' }, logger())).rejects.toThrow(/AppRole login.*400/);
  });

  describe('unreachable Vault', () => {
    let deadAddr = '';
    beforeAll(async () => {
      const dead = http.createServer();
      await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
      deadAddr = `http://127.0.0.1:${(dead.address() as AddressInfo).port}`;
      await new Promise((resolve) => dead.close(resolve));
    });

    it('warns and returns {} outside production', async () => {
      const log = logger();
      const env = { USE_VAULT: 'true', NODE_ENV: 'test', VAULT_ADDR: deadAddr, VAULT_TOKEN: TOKEN };
      expect(await loadVaultSecrets(env, log)).toEqual({});
      expect(log.warn).toHaveBeenCalledTimes(1);
      expect(logged(log)).toMatch(/cannot reach Vault/);
      expect(logged(log)).not.toMatch(/good-token/);
    });

    it('throws in production', async () => {
      const env = { USE_VAULT: 'true', NODE_ENV: 'production', VAULT_ADDR: deadAddr, VAULT_TOKEN: TOKEN };
      await expect(loadVaultSecrets(env, logger())).rejects.toThrow(/cannot reach Vault.*Refusing to start/s);
    });
  });

  it('gives up after VAULT_TIMEOUT_MS', async () => {
    const log = logger();
    const env = { USE_VAULT: 'true', VAULT_ADDR: addr, VAULT_TOKEN: TOKEN, VAULT_PATH: 'slow/path', VAULT_TIMEOUT_MS: '200' };
    const started = Date.now();
    expect(await loadVaultSecrets(env, log)).toEqual({});
    expect(Date.now() - started).toBeLessThan(2000);
    expect(logged(log)).toMatch(/timed out after 200 ms/);
    await expect(loadVaultSecrets({ ...env, NODE_ENV: 'production' }, logger())).rejects.toThrow(/timed out/);
  });

  it('missing VAULT_ADDR or credentials is an error (fatal in production)', async () => {
    await expect(loadVaultSecrets({ USE_VAULT: 'true', NODE_ENV: 'production', VAULT_TOKEN: TOKEN }, logger()))
      .rejects.toThrow(/VAULT_ADDR/);
    await expect(loadVaultSecrets({ USE_VAULT: 'true', NODE_ENV: 'production', VAULT_ADDR: addr }, logger()))
      .rejects.toThrow(/VAULT_TOKEN/);
    const log = logger();
    expect(await loadVaultSecrets({ USE_VAULT: 'true', VAULT_ADDR: addr }, log)).toEqual({});
    expect(log.warn).toHaveBeenCalledTimes(1);
  });
});
