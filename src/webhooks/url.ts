/**
 * Which webhook endpoints the server calls: HTTPS to a public address.
 *
 * At registration (`webhookUrlProblem`) the host is normalised first: the URL
 * parser turns decimal, octal, hex and short IPv4 forms into dotted quads and
 * compresses IPv6; brackets and trailing dots are dropped here; an IPv4 address
 * inside IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
 * `64:ff9b::a.b.c.d`) is checked as that IPv4 address. Refused: loopback,
 * unspecified, private (10/8, 172.16/12, 192.168/16, fc00::/7), CGNAT
 * (100.64/10), link-local (169.254/16 with the cloud metadata address,
 * fe80::/10), multicast, reserved and documentation ranges, and names that are
 * local by definition (`localhost`, `*.local`, `*.internal`, single labels).
 *
 * At delivery (`guardedLookup`) every address the name resolves to is checked
 * the same way, inside the connection's own lookup: the socket connects to
 * the address that was checked, so a public name that resolves to a private
 * address, or changes its answer between check and connect (DNS rebinding),
 * is refused.
 *
 * With WEBHOOK_ALLOW_INSECURE=true (tests, local development) plain HTTP and
 * those addresses are allowed.
 */
import dns from 'node:dns';
import net from 'node:net';

const BLOCKED_IPV4: Array<[string, number]> = [
  ['0.0.0.0', 8], // "this network", unspecified
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // CGNAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata 169.254.169.254
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
];

const BLOCKED_IPV6: Array<[string, number]> = [
  ['::', 128], // unspecified
  ['::1', 128],
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local
  ['ff00::', 8], // multicast
];

const blocked = new net.BlockList();
for (const [a, p] of BLOCKED_IPV4) blocked.addSubnet(a, p, 'ipv4');
for (const [a, p] of BLOCKED_IPV6) blocked.addSubnet(a, p, 'ipv6');

/** The 8 16-bit groups of an IPv6 address (which net.isIP accepted). */
function ipv6Groups(ip: string): number[] {
  let s = ip.toLowerCase();
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const [a, b, c, d] = dotted[1].split('.').map(Number);
    s = s.slice(0, -dotted[1].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => parseInt(g, 16));
}

/** The IPv4 address carried in an IPv4-mapped, IPv4-compatible or NAT64 (64:ff9b::/96) IPv6 address. */
function embeddedIPv4(ip: string): string | null {
  const g = ipv6Groups(ip);
  const zeroes = (n: number) => g.slice(0, n).every((x) => x === 0);
  const mapped = zeroes(5) && g[5] === 0xffff;
  const compatible = zeroes(6) && (g[6] !== 0 || g[7] > 1);
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0);
  if (!mapped && !compatible && !nat64) return null;
  return [g[6] >> 8, g[6] & 0xff, g[7] >> 8, g[7] & 0xff].join('.');
}

/** Whether a webhook may be delivered to this IP address. */
export function isPublicAddress(ip: string): boolean {
  const kind = net.isIP(ip);
  if (kind === 4) return !blocked.check(ip, 'ipv4');
  if (kind !== 6) return false;
  const v4 = embeddedIPv4(ip);
  return v4 ? !blocked.check(v4, 'ipv4') : !blocked.check(ip, 'ipv6');
}

/** A URL's hostname as it is resolved: no IPv6 brackets, no trailing dots, lower case. */
export function normalizeHost(hostname: string): string {
  return hostname.replace(/^\[|\]$/g, '').replace(/\.+$/, '').toLowerCase();
}

const LOCAL_NAME = /(^|\.)(localhost|local|internal|localdomain|home\.arpa)$/;

/** Null when the URL can be registered (and delivered to), else the reason. */
export function webhookUrlProblem(raw: string, allowInsecure: boolean): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (url.username || url.password) return 'must not contain credentials';
  if (url.protocol === 'http:' && !allowInsecure) return 'must use https (plain http needs WEBHOOK_ALLOW_INSECURE=true)';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must use https';
  if (allowInsecure) return null;
  const host = normalizeHost(url.hostname);
  if (net.isIP(host)) return isPublicAddress(host) ? null : 'must point to a public address';
  if (!host.includes('.') || LOCAL_NAME.test(host)) return 'must point to a public host';
  return null;
}

type LookupAll = (hostname: string, options: dns.LookupAllOptions, callback: (err: NodeJS.ErrnoException | null, addresses: dns.LookupAddress[]) => void) => void;

/**
 * A `lookup` for http(s).request / net.connect that resolves the name once and
 * refuses it when any of its addresses is not public (unless allowInsecure);
 * the connection then uses exactly the addresses that were checked.
 */
export function guardedLookup(allowInsecure: boolean, resolve: LookupAll = dns.lookup as LookupAll): net.LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const refused = allowInsecure ? undefined : addresses.find((a) => !isPublicAddress(a.address));
      if (refused || addresses.length === 0) {
        const e: NodeJS.ErrnoException = new Error(
          refused ? `${hostname} resolves to a non-public address (${refused.address})` : `${hostname} has no address`,
        );
        e.code = refused ? 'ERR_WEBHOOK_ADDRESS' : 'ENOTFOUND';
        return callback(e, '', 0);
      }
      if (options.all) return (callback as (e: null, a: dns.LookupAddress[]) => void)(null, addresses);
      return callback(null, addresses[0].address, addresses[0].family);
    });
  };
}
