/**
 * Secrets from HashiCorp Vault (KV v2), loaded once at start-up before the
 * configuration is parsed; the returned map overrides the environment.
 *
 * USE_VAULT=true enables it. VAULT_ADDR, then VAULT_TOKEN or AppRole
 * (VAULT_ROLE_ID + VAULT_SECRET_ID), VAULT_MOUNT (default `secret`) and
 * VAULT_PATH (default `saas-platform/<NODE_ENV>`: one path per environment,
 * which the seeds' policy `secret/data/saas-platform/*` grants).
 *
 * Keys may be named like the environment variables (`JWT_SECRET_KEY`, or
 * lower-case `jwt_secret_key`); the seeds' own names are mapped too
 * (`jwt_secret`, `aws_access_key`, `aws_secret`, and `db_user`/`db_password`
 * which are put into DATABASE_URL).
 *
 * Vault unreachable or answering an error: production refuses to start (throws),
 * other environments log a warning and fall back to the environment.
 * Secret values are never logged, only key names.
 */

type Env = Record<string, string | undefined>;
type Log = { warn(obj: unknown, msg?: string): void; info(obj: unknown, msg?: string): void };

/** Key names used by the seeds -> the variables this project reads. */
const ALIASES: Record<string, string> = {
  jwt_secret: 'JWT_SECRET_KEY',
  aws_access_key: 'S3_ACCESS_KEY_ID',
  aws_secret: 'S3_SECRET_ACCESS_KEY',
};

class VaultError extends Error {}

function isTrue(v: string | undefined): boolean {
  return ['1', 'true', 'yes', 'on'].includes((v ?? '').trim().toLowerCase());
}

function trimSlashes(s: string): string {
  return s.replace(/^\/+|\/+$/g, '');
}

async function call(
  fetchImpl: typeof fetch,
  url: string,
  init: RequestInit,
  timeoutMs: number,
  what: string,
): Promise<any> {
  let res: Response;
  try {
    res = await fetchImpl(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const reason =
      e.name === 'TimeoutError' || e.name === 'AbortError'
        ? `timed out after ${timeoutMs} ms`
        : (e.cause?.code ?? e.cause?.message ?? e.message);
    throw new VaultError(`${what}: cannot reach Vault (${reason})`);
  }
  const body: any = await res.json().catch(() => null);
  if (!res.ok) {
    const errors = Array.isArray(body?.errors) && body.errors.length ? `: ${body.errors.join('; ')}` : '';
    throw new VaultError(`${what}: Vault answered ${res.status}${errors}`);
  }
  return body;
}

export async function loadVaultSecrets(
  env: Record<string, string | undefined>,
  log: { warn(obj: unknown, msg?: string): void; info(obj: unknown, msg?: string): void },
  fetchImpl = fetch,
): Promise<Record<string, string>> {
  if (!isTrue(env.USE_VAULT)) return {};

  const addr = trimSlashes(env.VAULT_ADDR?.trim() ?? '').replace(/\/v1$/, '');
  const mount = trimSlashes(env.VAULT_MOUNT?.trim() || 'secret');
  const path = trimSlashes(env.VAULT_PATH?.trim() || `saas-platform/${env.NODE_ENV?.trim() || 'development'}`);
  const where = `${mount}/${path}`;
  try {
    return await load(env, log, fetchImpl, addr, mount, path);
  } catch (err) {
    if (!(err instanceof VaultError)) throw err;
    if (env.NODE_ENV === 'production') {
      throw new Error(
        `USE_VAULT=true but secrets could not be loaded from Vault (${addr || 'VAULT_ADDR unset'}, ${where}): ` +
          `${err.message}. Refusing to start in production.`,
      );
    }
    log.warn(
      { vault: addr, path: where, reason: err.message },
      `Vault unavailable (${err.message}): falling back to environment variables`,
    );
    return {};
  }
}

async function load(env: Env, log: Log, fetchImpl: typeof fetch, addr: string, mount: string, path: string) {
  if (!addr) throw new VaultError('VAULT_ADDR is not set');
  const timeoutMs = Number(env.VAULT_TIMEOUT_MS) > 0 ? Number(env.VAULT_TIMEOUT_MS) : 3000;

  let token = env.VAULT_TOKEN?.trim();
  if (!token) {
    const roleId = env.VAULT_ROLE_ID?.trim();
    const secretId = env.VAULT_SECRET_ID?.trim();
    if (!roleId || !secretId) throw new VaultError('set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID');
    const login = await call(
      fetchImpl,
      `${addr}/v1/auth/approle/login`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ role_id: roleId, secret_id: secretId }) },
      timeoutMs,
      'AppRole login',
    );
    token = login?.auth?.client_token;
    if (typeof token !== 'string' || !token) throw new VaultError('AppRole login: no client_token in the answer');
  }

  const urlPath = path.split('/').map(encodeURIComponent).join('/');
  const body = await call(
    fetchImpl,
    `${addr}/v1/${encodeURIComponent(mount)}/data/${urlPath}`,
    { headers: { 'X-Vault-Token': token } },
    timeoutMs,
    `reading ${mount}/${path}`,
  );
  const data = body?.data?.data;
  if (!data || typeof data !== 'object') throw new VaultError(`reading ${mount}/${path}: no KV v2 data in the answer`);

  const out: Record<string, string> = {};
  const skipped: string[] = [];
  for (const [key, value] of Object.entries(data as Record<string, unknown>)) {
    if (key === 'db_user' || key === 'db_password') continue;
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      out[ALIASES[key] ?? key.toUpperCase()] = String(value);
    } else {
      skipped.push(key);
    }
  }

  const { db_user: dbUser, db_password: dbPassword } = data as Record<string, unknown>;
  const databaseUrl = out.DATABASE_URL ?? env.DATABASE_URL;
  if (dbUser != null || dbPassword != null) {
    try {
      const u = new URL(databaseUrl ?? '');
      if (dbUser != null) u.username = encodeURIComponent(String(dbUser));
      if (dbPassword != null) u.password = encodeURIComponent(String(dbPassword));
      out.DATABASE_URL = u.toString();
    } catch {
      skipped.push(...(dbUser != null ? ['db_user'] : []), ...(dbPassword != null ? ['db_password'] : []));
    }
  }

  if (skipped.length) {
    log.warn(
      { keys: skipped },
      `Vault: ignored ${skipped.join(', ')} (not a string/number/boolean, or db_* without a DATABASE_URL)`,
    );
  }
  log.info({ vault: addr, path: `${mount}/${path}`, keys: Object.keys(out).sort() }, 'loaded secrets from Vault');
  return out;
}
