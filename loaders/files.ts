// File-system helpers shared by the loaders: listing a folder, pairing images with
// masks, and the one-line errors for missing data.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import assert from 'node:assert/strict';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import type { PairRef } from './registry';

export const IMAGE_EXTS = ['.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp'];

/** Throws the "what to download and where" error when a dataset root is missing. */
export function requireRoot(root: string, what: string): void {
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory())
    throw new UserError(`${root} not found: ${what} and unpack it there (see README Datasets)`);
}

/**
 * What a folder entry is, following symbolic links (datasets are often assembled from
 * links to files or folders); a link to nothing is an error naming it.
 */
export function entryKind(dir: string, d: fs.Dirent): 'file' | 'dir' | 'other' {
  if (d.isSymbolicLink()) {
    const p = path.join(dir, d.name);
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      throw new UserError(`${p} is a broken symbolic link (to ${fs.readlinkSync(p)}, which does not exist): fix or remove it`);
    }
    return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : 'other';
  }
  return d.isFile() ? 'file' : d.isDirectory() ? 'dir' : 'other';
}

/** Names of the entries of `dir` of one kind (links followed), sorted. */
export function listEntries(dir: string, kind: 'file' | 'dir'): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).filter((d) => entryKind(dir, d) === kind).map((d) => d.name).sort();
}

/** Files in `dir` (not recursive, links followed) whose name ends with `suffix` (case-insensitive), sorted. */
export function listFiles(dir: string, suffixes: string[]): string[] {
  if (!fs.existsSync(dir)) return [];
  const low = suffixes.map((s) => s.toLowerCase());
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => low.some((s) => d.name.toLowerCase().endsWith(s)) && entryKind(dir, d) === 'file')
    .map((d) => d.name)
    .sort();
}

function firstFew(xs: string[], n = 3): string {
  return xs.slice(0, n).join(', ') + (xs.length > n ? ` and ${xs.length - n} more` : '');
}

/**
 * Pairs images with masks by key. Images without a mask (or masks without an image)
 * are an error naming the first few; an empty listing is an error naming the pattern.
 */
export function matchPairs(
  images: Map<string, string>,
  masks: Map<string, string>,
  where: { imageDir: string; maskDir: string; imagePattern: string; maskPattern: string },
): PairRef[] {
  if (!images.size && !masks.size)
    throw new UserError(`no images found in ${where.imageDir} (expected files like ${where.imagePattern})`);
  const noMask = [...images.keys()].filter((k) => !masks.has(k));
  if (noMask.length)
    throw new UserError(`${noMask.length} image(s) without a mask in ${where.maskDir} (expected ${where.maskPattern}): ${firstFew(noMask.map((k) => path.basename(images.get(k)!)))}`);
  const noImage = [...masks.keys()].filter((k) => !images.has(k));
  if (noImage.length)
    throw new UserError(`${noImage.length} mask(s) without an image in ${where.imageDir} (expected ${where.imagePattern}): ${firstFew(noImage.map((k) => path.basename(masks.get(k)!)))}`);
  return [...images.keys()].sort().map((id) => ({ id, image: images.get(id)!, mask: masks.get(id)! }));
}

/** Maps key -> full path for the files of `dir` ending with one of `suffixes`; key = name minus suffix. */
export function keyed(dir: string, suffixes: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const name of listFiles(dir, suffixes)) {
    const s = suffixes.find((x) => name.toLowerCase().endsWith(x.toLowerCase()))!;
    const key = name.slice(0, name.length - s.length);
    // a.jpg and a.png would pair with one mask: one of them was dropped without a word.
    const other = m.get(key);
    if (other) throw new UserError(`${other} and ${path.join(dir, name)} have the same name but for the extension, so only one could pair with its mask: rename or remove one`);
    m.set(key, path.join(dir, name));
  }
  return m;
}

export const selfTest: SelfTest = {
  'pairs by key and reports strays'() {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'files-'));
    for (const f of ['a.jpg', 'b.jpg', 'a_m.png', 'b_m.png', 'c_m.png']) fs.writeFileSync(path.join(d, f), '');
    const where = { imageDir: d, maskDir: d, imagePattern: '*.jpg', maskPattern: '*_m.png' };
    const imgs = keyed(d, ['.jpg']);
    const masks = keyed(d, ['_m.png']);
    assert.throws(() => matchPairs(imgs, masks, where), /1 mask\(s\) without an image .*c_m\.png/);
    masks.delete('c');
    assert.deepEqual(matchPairs(imgs, masks, where).map((p) => p.id), ['a', 'b']);
    assert.throws(() => matchPairs(new Map(), new Map(), where), /no images found in .* \(expected files like \*\.jpg\)/);
    assert.throws(() => requireRoot(path.join(d, 'nope'), 'download X'), /nope not found: download X/);
    fs.writeFileSync(path.join(d, 'a.png'), '');
    assert.throws(() => keyed(d, ['.jpg', '.png']), /a\.jpg and .*a\.png have the same name but for the extension/);
    fs.rmSync(d, { recursive: true });
  },
  'links to files and folders are followed; a broken link is one line naming it'() {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'files-'));
    const real = path.join(d, 'real');
    fs.mkdirSync(path.join(real, 'city'), { recursive: true });
    fs.writeFileSync(path.join(real, 'a.jpg'), '');
    const linked = path.join(d, 'linked');
    fs.mkdirSync(linked);
    fs.symlinkSync(path.join(real, 'a.jpg'), path.join(linked, 'a.jpg'));
    fs.symlinkSync(path.join(real, 'city'), path.join(linked, 'city'));
    assert.deepEqual(listFiles(linked, ['.jpg']), ['a.jpg']);
    assert.deepEqual(listEntries(linked, 'dir'), ['city']);
    fs.symlinkSync(path.join(real, 'gone.jpg'), path.join(linked, 'b.jpg'));
    assert.throws(() => listFiles(linked, ['.jpg']), (e: Error) => e instanceof UserError && e.message.includes(path.join(linked, 'b.jpg')) && /broken symbolic link/.test(e.message));
    fs.rmSync(d, { recursive: true });
  },
};

runIfMain(module, selfTest);
