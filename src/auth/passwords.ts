/** argon2id password hashing, with a dummy verify for unknown users (same timing). */
import { hash, verify, Algorithm } from '@node-rs/argon2';

export const PASSWORD_MIN = 8;
/** Upper bound on password length: argon2 hashes any input, so cap what one request can make us hash. */
export const PASSWORD_MAX = 256;

const OPTIONS = { algorithm: Algorithm.Argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 };

export function hashPassword(password: string): Promise<string> {
  return hash(password, OPTIONS);
}

let dummyHash: Promise<string> | undefined;

/**
 * Verify `password` against `passwordHash`; with no hash (unknown email) verify
 * against a dummy so the answer takes as long as for a real account.
 */
export async function verifyPassword(passwordHash: string | null, password: string): Promise<boolean> {
  const target = passwordHash ?? (await (dummyHash ??= hashPassword('dummy-password-for-timing')));
  try {
    const ok = await verify(target, password);
    return passwordHash !== null && ok;
  } catch {
    return false;
  }
}
