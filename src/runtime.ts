/**
 * Start-up configuration for the entry points: `.env` (optional), then Vault
 * when USE_VAULT=true (its secrets override the environment), then validation.
 * A bad variable stops the process with a message that names it.
 */
import { config as loadDotenv } from 'dotenv';
import { loadConfig, ConfigError, type Config } from './config.js';
import { loadVaultSecrets } from './secrets/vault.js';

export async function loadRuntimeConfig(): Promise<{ config: Config; warnings: string[] }> {
  loadDotenv({ quiet: true });
  const warnings: string[] = [];
  let env: Record<string, string | undefined> = process.env;
  {
    // Vault (USE_VAULT=true): its secrets override the environment; returns {} when not enabled.
    const log = {
      warn: (obj: unknown, msg?: string) => warnings.push(msg ?? JSON.stringify(obj)),
      info: () => {},
    };
    try {
      env = { ...process.env, ...(await loadVaultSecrets(process.env, log)) };
    } catch (err) {
      console.error((err as Error).message);
      process.exit(1);
    }
  }
  try {
    return { config: loadConfig(env), warnings };
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
}

/**
 * Errors that refuse a start for a reason the operator must act on (the embedded
 * database is another process's, the storage root another deployment's): the
 * message says what to do, so it is printed alone, without a stack.
 */
const REFUSALS = new Set(['DataDirLockedError', 'StorageOwnerError']);

export function exitOnStartupFailure(err: unknown, what: string): never {
  if (err instanceof Error && REFUSALS.has(err.name)) console.error(`Refusing to start ${what}: ${err.message}`);
  else console.error(`${what} failed to start:`, err);
  process.exit(1);
}
