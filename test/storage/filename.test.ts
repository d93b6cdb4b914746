import { describe, expect, it } from 'vitest';
import { contentDisposition, sanitizeFilename } from '../../src/storage/filename.js';

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

describe('sanitizeFilename', () => {
  it.each([
    ['report.pdf', 'report.pdf'],
    ['../../etc/passwd', 'passwd'],
    ['..\\..\\windows\\system32\\cmd.exe', 'cmd.exe'],
    ['C:\\Users\\me\\Desktop\\notes.txt', 'notes.txt'],
    ['dir/sub/', 'sub'],
    ['..', 'file'],
    ['.', 'file'],
    ['...', 'file'],
    ['___', 'file'],
    ['___.txt', 'file.txt'],
    ['.bashrc', 'bashrc'],
    ['.env.local', 'env.local'],
    ['..hidden.txt', 'hidden.txt'],
    ['a\u0000b.txt', 'ab.txt'],
    ['line\r\nbreak.txt', 'line break.txt'],
    ['bell\u0007\u007f\u009b.txt', 'bell.txt'],
    ['tab\there.txt', 'tab here.txt'],
    ['  lots   of \u00a0 space  .txt ', 'lots of space.txt'],
    ['trailing dots...', 'trailing dots'],
    ['what?<is>:"this"|*.txt', 'what__is___this___.txt'],
    ['invoice\u202Efdp.exe', 'invoicefdp.exe'],
    ['CON.txt', '_CON.txt'],
    ['', 'file'],
    ['   ', 'file'],
    ['/', 'file'],
  ])('%j -> %j', (input, expected) => {
    expect(sanitizeFilename(input)).toBe(expected);
  });

  it('handles null and undefined', () => {
    expect(sanitizeFilename(null)).toBe('file');
    expect(sanitizeFilename(undefined)).toBe('file');
  });

  it('keeps Unicode readable and NFC-normalises it', () => {
    expect(sanitizeFilename('Cafe\u0301 menu.pdf')).toBe('Caf\u00e9 menu.pdf');
    expect(sanitizeFilename('Отчёт 2024.docx')).toBe('Отчёт 2024.docx');
    expect(sanitizeFilename('報告書.pdf')).toBe('報告書.pdf');
    expect(sanitizeFilename('🎉 party.png')).toBe('🎉 party.png');
  });

  it('drops lone surrogates instead of producing invalid UTF-8', () => {
    expect(sanitizeFilename('bad\uD800name.txt')).toBe('badname.txt');
  });

  it('caps 1000-character names at 255 UTF-8 bytes, keeping the extension', () => {
    const ascii = sanitizeFilename(`${'a'.repeat(1000)}.pdf`);
    expect(bytes(ascii)).toBe(255);
    expect(ascii.endsWith('.pdf')).toBe(true);

    const multi = sanitizeFilename(`${'é'.repeat(1000)}.tar.gz`);
    expect(bytes(multi)).toBeLessThanOrEqual(255);
    expect(multi.endsWith('.gz')).toBe(true);
    expect(multi).not.toContain('\uFFFD');

    const emoji = sanitizeFilename('👍🏽'.repeat(300));
    expect(bytes(emoji)).toBeLessThanOrEqual(255);
    expect(emoji.length % '👍🏽'.length).toBe(0); // never splits a grapheme

    const noExt = sanitizeFilename('x'.repeat(1000));
    expect(noExt).toBe('x'.repeat(255));
  });

  it('does not treat junk after the last dot as an extension', () => {
    const name = sanitizeFilename(`${'a'.repeat(300)}.${'b'.repeat(100)}`);
    expect(bytes(name)).toBe(255);
    expect(sanitizeFilename('archive.final version')).toBe('archive.final version');
  });

  it('is idempotent and never crashes on odd input', () => {
    const inputs = ['../../etc/passwd', '..', '___', 'a'.repeat(1000), '\u0000\u0001\u0002', '💥'.repeat(200), ' . . . ', 'a.b.c.d'];
    for (const input of inputs) {
      const once = sanitizeFilename(input);
      expect(once.length).toBeGreaterThan(0);
      // eslint-disable-next-line no-control-regex
      expect(once).not.toMatch(/[/\\\u0000-\u001f]/);
      expect(once.startsWith('.')).toBe(false);
      expect(sanitizeFilename(once)).toBe(once);
    }
  });
});

describe('contentDisposition', () => {
  it('quotes a plain ASCII name', () => {
    expect(contentDisposition('report.pdf')).toBe(`attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`);
    expect(contentDisposition('a.png', 'inline')).toBe(`inline; filename="a.png"; filename*=UTF-8''a.png`);
  });

  it('gives an ASCII fallback and a percent-encoded UTF-8 name', () => {
    expect(contentDisposition('Café menu.pdf')).toBe(
      `attachment; filename="Cafe menu.pdf"; filename*=UTF-8''Caf%C3%A9%20menu.pdf`,
    );
    expect(contentDisposition('報告書.pdf')).toBe(
      `attachment; filename="file.pdf"; filename*=UTF-8''%E5%A0%B1%E5%91%8A%E6%9B%B8.pdf`,
    );
  });

  it('never lets quotes, backslashes or line breaks into the header', () => {
    const header = contentDisposition('evil"\r\nSet-Cookie: x=1\\.txt');
    expect(header).not.toMatch(/[\r\n]/);
    const fallback = /filename="([^"]*)"/.exec(header)?.[1];
    expect(fallback).toBeDefined();
    expect(fallback).not.toMatch(/["\\]/);
    expect(header).toMatch(/filename\*=UTF-8''[A-Za-z0-9%!#$&+\-.^_`|~]+$/);
  });

  it("percent-encodes RFC 5987 specials such as ' ( ) *", () => {
    expect(contentDisposition("it's (1).txt")).toContain(`filename*=UTF-8''it%27s%20%281%29.txt`);
    expect(contentDisposition('100%.txt')).toContain(`filename="100_.txt"; filename*=UTF-8''100%25.txt`);
  });
});
