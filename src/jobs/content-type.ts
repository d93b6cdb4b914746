/**
 * Does the content sniffed from the bytes agree with the declared content type
 * and with the file name's extension? Pure functions, used by the
 * validate_document job (src/jobs/handlers/validate-document.ts).
 *
 * Rules:
 * - `application/octet-stream` (or nothing) declared: no claim to check.
 * - A text-like type declared (text/*, JSON, XML, CSV, YAML, ...): the bytes must
 *   be valid UTF-8 without NUL bytes, and not a recognised binary format.
 * - A binary type declared: the sniffed type must be the same type (aliases and
 *   container families - ZIP-based office formats, OLE2, MP4/QuickTime, Ogg,
 *   Matroska/WebM - count as the same). When nothing is recognised, a type the
 *   sniffer knows how to recognise fails (`image/png` without a PNG signature);
 *   a type it does not know cannot be checked and passes.
 * - The extension, when it names a known type, is checked by the same rules.
 */
import { supportedMimeTypes } from 'file-type';

export interface Sniffed {
  ext: string;
  mime: string;
}

const ALIASES: Record<string, string> = {
  'image/jpg': 'image/jpeg',
  'image/pjpeg': 'image/jpeg',
  'image/x-png': 'image/png',
  'image/x-ms-bmp': 'image/bmp',
  'image/x-bmp': 'image/bmp',
  'image/x-icon': 'image/x-icon',
  'image/vnd.microsoft.icon': 'image/x-icon',
  'application/x-zip-compressed': 'application/zip',
  'application/x-zip': 'application/zip',
  'application/x-gzip': 'application/gzip',
  'application/x-pdf': 'application/pdf',
  'application/x-rar-compressed': 'application/x-rar-compressed',
  'application/vnd.rar': 'application/x-rar-compressed',
  'audio/mp3': 'audio/mpeg',
  'audio/x-mp3': 'audio/mpeg',
  'audio/x-mpeg': 'audio/mpeg',
  'audio/x-wav': 'audio/wav',
  'audio/wave': 'audio/wav',
  'audio/vnd.wave': 'audio/wav',
  'audio/x-flac': 'audio/flac',
  'application/x-msdos-program': 'application/x-msdownload',
  'application/vnd.microsoft.portable-executable': 'application/x-msdownload',
  'application/x-dosexec': 'application/x-msdownload',
  'application/x-executable': 'application/x-elf',
  'application/x-sharedlib': 'application/x-elf',
  'text/xml': 'application/xml',
  'application/x-tar': 'application/x-tar',
  'application/x-7z-compressed': 'application/x-7z-compressed',
};

/** Types whose files are ZIP archives (the sniffer may only see "zip"). */
const ZIP_FAMILY = new Set([
  'application/zip',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.template',
  'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  'application/vnd.openxmlformats-officedocument.spreadsheetml.template',
  'application/vnd.openxmlformats-officedocument.presentationml.presentation',
  'application/vnd.openxmlformats-officedocument.presentationml.slideshow',
  'application/vnd.openxmlformats-officedocument.presentationml.template',
  'application/vnd.oasis.opendocument.text',
  'application/vnd.oasis.opendocument.text-template',
  'application/vnd.oasis.opendocument.spreadsheet',
  'application/vnd.oasis.opendocument.presentation',
  'application/vnd.oasis.opendocument.graphics',
  'application/epub+zip',
  'application/java-archive',
  'application/vnd.android.package-archive',
  'application/x-xpinstall',
  'application/vnd.google-earth.kmz',
  'model/3mf',
  'application/vnd.ms-visio.drawing.main+xml',
]);

/** OLE2 compound files (legacy Office, MSI, Outlook). */
const CFB_FAMILY = new Set([
  'application/x-cfb',
  'application/msword',
  'application/vnd.ms-excel',
  'application/vnd.ms-powerpoint',
  'application/vnd.ms-outlook',
  'application/x-msi',
  'application/x-ole-storage',
]);

const MEDIA_FAMILIES: ReadonlyArray<ReadonlySet<string>> = [
  new Set(['video/mp4', 'audio/mp4', 'audio/x-m4a', 'audio/m4a', 'video/x-m4v', 'video/quicktime', 'video/3gpp', 'video/3gpp2', 'audio/aac', 'audio/x-aac']),
  new Set(['audio/ogg', 'video/ogg', 'application/ogg', 'audio/opus', 'audio/x-opus+ogg']),
  new Set(['video/x-matroska', 'video/matroska', 'video/webm', 'audio/webm', 'audio/x-matroska']),
  new Set(['video/x-msvideo', 'video/avi', 'video/msvideo', 'video/vnd.avi']),
  new Set(['image/heif', 'image/heic', 'image/heif-sequence', 'image/heic-sequence']),
];

/** Text formats the sniffer can recognise (their content is text too). */
const TEXTUAL_SNIFFED = new Set(['application/xml', 'application/rtf', 'text/calendar', 'text/vcard', 'text/vtt', 'application/x-ms-regedit']);

const TEXT_APPLICATION = new Set([
  'application/json',
  'application/ld+json',
  'application/x-ndjson',
  'application/xml',
  'application/javascript',
  'application/x-javascript',
  'application/ecmascript',
  'application/csv',
  'application/x-csv',
  'application/x-yaml',
  'application/yaml',
  'application/toml',
  'application/sql',
  'application/x-sh',
  'application/x-httpd-php',
  'application/graphql',
  'application/rtf',
]);

const GENERIC = new Set(['', 'application/octet-stream', 'binary/octet-stream', 'application/unknown', 'application/binary']);

/** Well-known extensions -> content type (only what the checks need). */
const EXTENSIONS: Record<string, string> = {
  png: 'image/png', apng: 'image/apng', jpg: 'image/jpeg', jpeg: 'image/jpeg', jpe: 'image/jpeg', gif: 'image/gif',
  webp: 'image/webp', bmp: 'image/bmp', tif: 'image/tiff', tiff: 'image/tiff', ico: 'image/x-icon', heic: 'image/heic',
  heif: 'image/heif', avif: 'image/avif', psd: 'image/vnd.adobe.photoshop', jxl: 'image/jxl',
  svg: 'image/svg+xml', pdf: 'application/pdf', zip: 'application/zip', gz: 'application/gzip', tgz: 'application/gzip',
  bz2: 'application/x-bzip2', xz: 'application/x-xz', '7z': 'application/x-7z-compressed', rar: 'application/x-rar-compressed',
  tar: 'application/x-tar', zst: 'application/zstd',
  docx: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  xlsx: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  pptx: 'application/vnd.openxmlformats-officedocument.presentationml.presentation',
  odt: 'application/vnd.oasis.opendocument.text', ods: 'application/vnd.oasis.opendocument.spreadsheet',
  odp: 'application/vnd.oasis.opendocument.presentation', epub: 'application/epub+zip', jar: 'application/java-archive',
  apk: 'application/vnd.android.package-archive',
  doc: 'application/msword', xls: 'application/vnd.ms-excel', ppt: 'application/vnd.ms-powerpoint', msg: 'application/vnd.ms-outlook',
  msi: 'application/x-msi',
  mp3: 'audio/mpeg', wav: 'audio/wav', flac: 'audio/flac', ogg: 'audio/ogg', oga: 'audio/ogg', opus: 'audio/opus', m4a: 'audio/x-m4a',
  aac: 'audio/aac', mp4: 'video/mp4', m4v: 'video/x-m4v', mov: 'video/quicktime', webm: 'video/webm', mkv: 'video/x-matroska',
  avi: 'video/x-msvideo', ogv: 'video/ogg', '3gp': 'video/3gpp',
  exe: 'application/x-msdownload', dll: 'application/x-msdownload', elf: 'application/x-elf', so: 'application/x-elf',
  wasm: 'application/wasm', sqlite: 'application/x-sqlite3',
  woff: 'font/woff', woff2: 'font/woff2', ttf: 'font/ttf', otf: 'font/otf',
  txt: 'text/plain', text: 'text/plain', log: 'text/plain', md: 'text/markdown', markdown: 'text/markdown',
  csv: 'text/csv', tsv: 'text/tab-separated-values', json: 'application/json', ndjson: 'application/x-ndjson',
  xml: 'application/xml', html: 'text/html', htm: 'text/html', css: 'text/css', js: 'text/javascript', mjs: 'text/javascript',
  yaml: 'application/yaml', yml: 'application/yaml', toml: 'application/toml', ini: 'text/plain',
  sql: 'application/sql', rtf: 'application/rtf', ics: 'text/calendar', vcf: 'text/vcard', vtt: 'text/vtt',
};

/** Lower case, parameters stripped, aliases resolved. */
export function normalizeMime(mime: string | null | undefined): string {
  const base = (mime ?? '').split(';')[0].trim().toLowerCase();
  return ALIASES[base] ?? base;
}

export function extensionOf(filename: string): string | null {
  const base = filename.split(/[\\/]/).pop() ?? '';
  const dot = base.lastIndexOf('.');
  if (dot <= 0 || dot === base.length - 1) return null;
  return base.slice(dot + 1).toLowerCase();
}

export function mimeForExtension(ext: string | null): string | undefined {
  return ext ? EXTENSIONS[ext] : undefined;
}

export function isGenericMime(mime: string): boolean {
  return GENERIC.has(normalizeMime(mime));
}

export function isTextLike(mime: string): boolean {
  const m = normalizeMime(mime);
  return m.startsWith('text/') || TEXT_APPLICATION.has(m) || m.endsWith('+json') || m.endsWith('+xml');
}

function family(m: string): ReadonlySet<string> | undefined {
  if (
    ZIP_FAMILY.has(m) ||
    m.startsWith('application/vnd.openxmlformats-officedocument.') ||
    m.startsWith('application/vnd.oasis.opendocument.') ||
    m.endsWith('.macroenabled.12')
  ) {
    return ZIP_FAMILY;
  }
  if (CFB_FAMILY.has(m)) return CFB_FAMILY;
  return MEDIA_FAMILIES.find((f) => f.has(m));
}

/** Is content sniffed as `sniffed` acceptable for a file claimed to be `expected`? (both binary types) */
export function compatibleTypes(expected: string, sniffed: string): boolean {
  const a = normalizeMime(expected);
  const b = normalizeMime(sniffed);
  if (a === b) return true;
  const fa = family(a);
  return fa !== undefined && fa === family(b);
}

/** Could the sniffer have recognised this type from a signature? */
export function isSniffable(mime: string): boolean {
  const m = normalizeMime(mime);
  const supported = supportedMimeTypes as ReadonlySet<string>;
  return supported.has(m) || [...(family(m) ?? [])].some((x) => supported.has(x));
}

export interface ContentTypeInput {
  declared: string;
  filename: string;
  sniffed: Sniffed | undefined;
  /** Valid UTF-8 and no NUL byte; undefined when not measured. */
  isText: boolean | undefined;
}

/** Does a claim ("this is `expected`") hold for the content? Returns the problem, or null. */
function checkClaim(expected: string, input: ContentTypeInput): string | null {
  const { sniffed } = input;
  if (isTextLike(expected)) {
    if (sniffed && !TEXTUAL_SNIFFED.has(normalizeMime(sniffed.mime))) return `the content is ${sniffed.mime}`;
    if (input.isText === false) return 'the content is not text (invalid UTF-8 or NUL bytes)';
    return null;
  }
  if (sniffed) return compatibleTypes(expected, sniffed.mime) ? null : `the content is ${sniffed.mime}`;
  if (isSniffable(expected)) return `the content does not look like ${normalizeMime(expected)} (no matching file signature)`;
  return null;
}

/** Null when the content agrees with the declared type and the extension; otherwise a message for error_message. */
export function contentTypeProblem(input: ContentTypeInput): string | null {
  const declared = normalizeMime(input.declared);
  if (!GENERIC.has(declared)) {
    const p = checkClaim(declared, input);
    if (p) return `Content type mismatch: declared ${declared} but ${p}`;
  }
  const ext = extensionOf(input.filename);
  const extMime = mimeForExtension(ext);
  if (extMime) {
    const p = checkClaim(extMime, input);
    if (p) return `Content type mismatch: the extension .${ext} (${extMime}) does not match: ${p}`;
  }
  return null;
}

/** Whether the text check is needed for this declared type and file name (it reads every byte). */
export function needsTextCheck(declared: string, filename: string): boolean {
  const extMime = mimeForExtension(extensionOf(filename));
  return isTextLike(declared) || (extMime !== undefined && isTextLike(extMime));
}
