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

/** Files in `dir` (not recursive) whose name ends with `suffix` (case-insensitive), sorted. */
export function listFiles(dir: string, suffixes: string[]): string[] {
  if (!fs.existsSync(dir)) return [];
  const low = suffixes.map((s) => s.toLowerCase());
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isFile() && low.some((s) => d.name.toLowerCase().endsWith(s)))
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
    m.set(name.slice(0, name.length - s.length), path.join(dir, name));
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
    fs.rmSync(d, { recursive: true });
  },
};

runIfMain(module, selfTest);
