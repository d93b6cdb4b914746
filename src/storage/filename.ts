const MAX_FILENAME_BYTES = 255;
const MAX_EXTENSION_BYTES = 32;
const FALLBACK_STEM = 'file';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
// Control characters (incl. NUL, DEL, C1) and invisible bidi overrides used to disguise extensions.
const INVISIBLE = /[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/gu;
// Characters that are unsafe or invalid in filenames on common platforms.
const RESERVED = /[<>:"|?*]/g;
const WINDOWS_DEVICE = /^(con|prn|aux|nul|com\d|lpt\d)(\.|$)/i;
const EXTENSION = /^\.[\p{L}\p{N}][\p{L}\p{N}_+-]*$/u;
// A stem made only of punctuation and spaces (`___`, `-`, `...`) says nothing.
const MEANINGLESS = /^[\p{P}\p{Z}\s]*$/u;

const utf8Length = (s: string): number => Buffer.byteLength(s, 'utf8');

function truncateUtf8(s: string, maxBytes: number): string {
  if (utf8Length(s) <= maxBytes) return s;
  let out = '';
  let bytes = 0;
  // Cut at grapheme boundaries so accents and emoji are never split.
  for (const { segment } of new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(s)) {
    const n = utf8Length(segment);
    if (bytes + n > maxBytes) break;
    out += segment;
    bytes += n;
  }
  return out;
}

/**
 * A safe, readable base name for a user-supplied filename: no directory parts,
 * control characters, hidden/`..` names or reserved characters; NFC-normalised,
 * whitespace collapsed, at most 255 UTF-8 bytes (keeping the extension), and
 * `file` / `file.ext` when nothing meaningful is left. Idempotent.
 */
export function sanitizeFilename(name: string | undefined | null): string {
  let s = typeof name === 'string' ? name : '';
  s = s
    .replace(LONE_SURROGATE, '')
    .normalize('NFC')
    .replace(/[\t\n\v\f\r]/g, ' ') // whitespace controls separate words; other controls just go
    .replace(INVISIBLE, '');
  // Keep only the last path component, whichever separator the client used.
  const parts = s.split(/[/\\]/).filter((p) => p.trim() !== '');
  s = parts.length > 0 ? parts[parts.length - 1] : '';
  s = s
    .replace(RESERVED, '_')
    .replace(/\s+/gu, ' ')
    .replace(/^[\s.]+/u, '') // no hidden files, no `.` / `..`
    .replace(/[\s.]+$/u, ''); // trailing dots and spaces are dropped by Windows anyway
  if (WINDOWS_DEVICE.test(s)) s = `_${s}`;

  const dot = s.lastIndexOf('.');
  let stem = s;
  let ext = '';
  if (dot > 0) {
    const candidate = s.slice(dot);
    if (EXTENSION.test(candidate) && utf8Length(candidate) <= MAX_EXTENSION_BYTES) {
      ext = candidate;
      stem = s.slice(0, dot);
    }
  }
  stem = truncateUtf8(stem, MAX_FILENAME_BYTES - utf8Length(ext)).replace(/[\s.]+$/u, '');
  if (MEANINGLESS.test(stem)) stem = FALLBACK_STEM;
  return stem + ext;
}

function encodeRfc5987(value: string): string {
  return encodeURIComponent(value).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * A Content-Disposition header value (RFC 6266) with an ASCII `filename=`
 * fallback and the exact UTF-8 name in `filename*=` (RFC 5987/8187).
 */
export function contentDisposition(filename: string, type: 'attachment' | 'inline' = 'attachment'): string {
  if (type !== 'attachment' && type !== 'inline') throw new TypeError('invalid disposition type');
  const name = sanitizeFilename(filename);
  const ascii = sanitizeFilename(
    name
      .normalize('NFD')
      .replace(/\p{M}/gu, '') // "Café" -> "Cafe"
      .replace(/[^\x20-\x7e]/g, '_')
      .replace(/["\\%]/g, '_'),
  );
  return `${type}; filename="${ascii}"; filename*=UTF-8''${encodeRfc5987(name)}`;
}
