/** Content-type agreement rules (src/jobs/content-type.ts), on sniffed results. */
import { describe, expect, it } from 'vitest';
import { fileTypeFromBuffer } from 'file-type';
import { compatibleTypes, contentTypeProblem, extensionOf, needsTextCheck, normalizeMime } from '../../src/jobs/content-type.js';
import { elfBytes, PNG_1PX } from './helpers.js';

const check = (declared: string, filename: string, sniffed?: { ext: string; mime: string }, isText?: boolean) =>
  contentTypeProblem({ declared, filename, sniffed, isText });

const PNG = { ext: 'png', mime: 'image/png' };
const ELF = { ext: 'elf', mime: 'application/x-elf' };
const ZIP = { ext: 'zip', mime: 'application/zip' };
const DOCX = { ext: 'docx', mime: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document' };

describe('content type agreement', () => {
  it('sniffs the fixtures as expected', async () => {
    expect(await fileTypeFromBuffer(PNG_1PX)).toEqual(PNG);
    expect(await fileTypeFromBuffer(elfBytes())).toEqual(ELF);
  });

  it('accepts a matching type and extension, with aliases and parameters', () => {
    expect(check('image/png', 'a.png', PNG)).toBeNull();
    expect(check('IMAGE/PNG; charset=binary', 'a.PNG', PNG)).toBeNull();
    expect(check('image/jpg', 'a.jpeg', { ext: 'jpg', mime: 'image/jpeg' })).toBeNull();
    expect(normalizeMime('application/x-zip-compressed')).toBe('application/zip');
  });

  it('rejects a declared type the content contradicts, naming both', () => {
    expect(check('image/png', 'a.png', ELF)).toBe('Content type mismatch: declared image/png but the content is application/x-elf');
    expect(check('image/jpeg', 'a.jpg', PNG)).toMatch(/declared image\/jpeg but the content is image\/png/);
    expect(check('application/pdf', 'x.pdf', { ext: 'exe', mime: 'application/x-msdownload' })).toMatch(/x-msdownload/);
  });

  it('rejects an extension the content contradicts even when the declared type says nothing', () => {
    expect(check('application/octet-stream', 'cat.png', ELF)).toMatch(/extension \.png \(image\/png\) does not match: the content is application\/x-elf/);
    expect(check('application/octet-stream', 'tool.bin', ELF)).toBeNull(); // unknown extension, no claim
    expect(check('application/octet-stream', 'noext', undefined)).toBeNull();
  });

  it('fails a sniffable declared type without its signature, passes an unsniffable one', () => {
    expect(check('image/png', 'a.png', undefined)).toMatch(/does not look like image\/png/);
    expect(check('application/x-custom-thing', 'a.custom', undefined)).toBeNull();
  });

  it('treats ZIP containers, OLE2 and media containers as families', () => {
    expect(check(DOCX.mime, 'report.docx', ZIP)).toBeNull();
    expect(check(DOCX.mime, 'report.docx', DOCX)).toBeNull();
    expect(check('application/zip', 'bundle.zip', DOCX)).toBeNull();
    expect(check('application/msword', 'old.doc', { ext: 'cfb', mime: 'application/x-cfb' })).toBeNull();
    expect(check('video/mp4', 'clip.mp4', { ext: 'mov', mime: 'video/quicktime' })).toBeNull();
    expect(compatibleTypes('video/mp4', 'image/png')).toBe(false);
    expect(check(DOCX.mime, 'report.docx', PNG)).toMatch(/the content is image\/png/);
  });

  it('checks text-like types by the text test, and fails text that is a binary format', () => {
    expect(check('text/plain', 'a.txt', undefined, true)).toBeNull();
    expect(check('text/csv', 'a.csv', undefined, false)).toMatch(/not text/);
    expect(check('application/json', 'a.json', undefined, true)).toBeNull();
    expect(check('text/plain', 'a.txt', PNG, true)).toMatch(/declared text\/plain but the content is image\/png/);
    expect(check('application/xml', 'a.xml', { ext: 'xml', mime: 'application/xml' }, true)).toBeNull();
    expect(check('image/svg+xml', 'logo.svg', { ext: 'xml', mime: 'application/xml' }, true)).toBeNull();
    expect(check('application/octet-stream', 'notes.txt', undefined, false)).toMatch(/extension \.txt/);
  });

  it('knows when the whole content must be read for the text test', () => {
    expect(needsTextCheck('text/plain', 'a.bin')).toBe(true);
    expect(needsTextCheck('application/octet-stream', 'a.csv')).toBe(true);
    expect(needsTextCheck('image/png', 'a.png')).toBe(false);
    expect(extensionOf('archive.tar.gz')).toBe('gz');
    expect(extensionOf('.bashrc')).toBeNull();
    expect(extensionOf('trailingdot.')).toBeNull();
  });
});
