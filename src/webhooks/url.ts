/**
 * Which endpoint URLs can be registered: HTTPS to a public host. Loopback,
 * private, link-local and unspecified addresses (and `localhost`) are refused,
 * so a tenant cannot make the server call into its own network. With
 * WEBHOOK_ALLOW_INSECURE=true (tests, local development) plain HTTP and those
 * hosts are allowed. Names are checked as written; a public name that resolves
 * to a private address is not detected here (DNS can change after
 * registration): run the delivery worker where it has no route to internal
 * services, or behind an egress proxy.
 */
import net from 'node:net';

export function allowInsecureWebhooks(env: Record<string, string | undefined> = process.env): boolean {
  return ['1', 'true', 'yes', 'on'].includes((env.WEBHOOK_ALLOW_INSECURE ?? '').trim().toLowerCase());
}

function privateIPv4(ip: string): boolean {
  const [a, b] = ip.split('.').map(Number);
  return (
    a === 0 || a === 10 || a === 127 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || a >= 224
  );
}

function privateIPv6(ip: string): boolean {
  const s = ip.toLowerCase();
  if (s === '::' || s === '::1') return true;
  if (s.startsWith('fe8') || s.startsWith('fe9') || s.startsWith('fea') || s.startsWith('feb')) return true; // link-local
  if (s.startsWith('fc') || s.startsWith('fd')) return true; // unique local
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  return mapped ? privateIPv4(mapped[1]) : false;
}

/** Null when the URL can be registered, else the reason. */
export function webhookUrlProblem(raw: string, allowInsecure: boolean): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (url.username || url.password) return 'must not contain credentials';
  if (url.protocol !== 'https:' && !(allowInsecure && url.protocol === 'http:')) return 'must use https';
  if (allowInsecure) return null;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.internal') || host.endsWith('.local')) {
    return 'must point to a public host';
  }
  const kind = net.isIP(host);
  if ((kind === 4 && privateIPv4(host)) || (kind === 6 && privateIPv6(host))) return 'must point to a public address';
  return null;
}
