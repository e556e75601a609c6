// The page's dataset from picked folders: images and masks matched by stem as the `folder`
// loader matches them (loaders/files.ts matchPairs: same keys, same messages for unpaired
// files), and the validation split: the picked folders' own train/val sub-folders when they
// have them (as the folder loader's split sub-folders), else a seeded fraction of the pairs.
// Pure functions on names: self-tested in Node, used by page.ts.
import assert from 'node:assert/strict';
import type { PairRef } from '../../loaders/registry';
import { IMAGE_EXTS, matchPairs } from '../../loaders/files';
import { permutation, rngFor } from '../../utils/rng';
import { UserError } from '../../utils/errors';
import { runIfMain, SelfTest } from '../../utils/self_test';

/** The val split's own random stream, apart from the training draws (shuffle, augmentation). */
const VAL_STREAM = 0x5a11;

/** A picked file by its path inside the picked folder (webkitRelativePath, the folder's name first). */
export interface Picked { path: string }

/** key -> path for the files ending in one of `suffixes` (the key: the name less the suffix), per sub-folder. */
function keyedPicked(paths: string[], suffixes: string[], where: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const p of [...paths].sort()) {
    const name = p.split('/').pop()!;
    if (name.startsWith('.')) continue; // .DS_Store and the like
    const s = suffixes.find((x) => name.toLowerCase().endsWith(x.toLowerCase()));
    if (!s) continue;
    const key = name.slice(0, name.length - s.length);
    const other = m.get(key);
    if (other) throw new UserError(`${other} and ${p} have the same name but for the extension, so only one could pair with its mask: rename or remove one (${where})`);
    m.set(key, p);
  }
  return m;
}

/** Sub-folder of a picked path below the picked folder ('' when at its top). */
const subOf = (p: string) => p.split('/').slice(1, -1).join('/');

export interface Split { train: PairRef[]; val: PairRef[]; from: 'folders' | 'fraction' }

/**
 * Pairs the picked images and masks by stem (mask name: `<stem><maskSuffix>.<ext>`) and
 * splits them. With sub-folders named `trainSplit` and `valSplit` in both picks, those are
 * the splits; otherwise `valFraction` of the pairs (at least one when > 0), drawn by `seed`.
 * No masks picked (or the image folder picked twice): one folder holds both, told apart by
 * the suffix, as the folder loader does when data.images_dir and data.masks_dir are equal.
 */
export function pairAndSplit(images: string[], masks: string[], o: { maskSuffix: string; valFraction: number; seed: number; trainSplit: string; valSplit: string }): Split {
  if (!images.length) throw new UserError('no images picked: pick an image folder and a mask folder, or one folder holding both (told apart by data.mask_suffix)');
  const imageFolder = images[0].split('/')[0];
  const oneFolder = masks.length === 0 || masks[0].split('/')[0] === imageFolder;
  if (oneFolder) {
    if (!o.maskSuffix) throw new UserError(`no mask folder picked, so ${imageFolder} must hold the masks too: set data.mask_suffix (e.g. _mask) so a mask, <stem><suffix>.png, is told from its image`);
    const suffix = o.maskSuffix.toLowerCase();
    const isMask = (p: string) => IMAGE_EXTS.some((e) => p.toLowerCase().endsWith(suffix + e.toLowerCase()));
    const all = [...new Set([...images, ...masks])];
    masks = all.filter(isMask);
    images = all.filter((p) => !isMask(p));
  }
  const maskFolder = masks[0]?.split('/')[0] ?? 'masks';
  const subs = (ps: string[]) => new Set(ps.map(subOf));
  const pair = (sub: string | null) => {
    const pick = (ps: string[]) => (sub === null ? ps : ps.filter((p) => subOf(p) === sub));
    const at = (f: string) => (sub ? `${f}/${sub}` : f);
    return matchPairs(keyedPicked(pick(images), IMAGE_EXTS, 'images'), keyedPicked(pick(masks), IMAGE_EXTS.map((e) => o.maskSuffix + e), 'masks'), {
      imageDir: at(imageFolder), maskDir: at(maskFolder), imagePattern: `*{${IMAGE_EXTS.join(',')}}`, maskPattern: `<stem>${o.maskSuffix}.png`,
    });
  };
  const si = subs(images), sm = subs(masks);
  if (si.has(o.trainSplit) && si.has(o.valSplit) && sm.has(o.trainSplit) && sm.has(o.valSplit)) {
    return { train: pair(o.trainSplit), val: pair(o.valSplit), from: 'folders' };
  }
  const all = pair(null);
  if (!(o.valFraction >= 0 && o.valFraction < 1)) throw new UserError(`validation fraction ${o.valFraction}: expected a number from 0 up to (not including) 1`);
  const nVal = o.valFraction > 0 ? Math.max(1, Math.round(all.length * o.valFraction)) : 0;
  if (all.length - nVal < 1) throw new UserError(`${all.length} pair(s) leave none to train on with a validation fraction of ${o.valFraction}`);
  const order = permutation(all.length, rngFor(o.seed, VAL_STREAM));
  const valIdx = new Set(order.slice(0, nVal));
  return { train: all.filter((_, i) => !valIdx.has(i)), val: all.filter((_, i) => valIdx.has(i)), from: 'fraction' };
}

export const selfTest: SelfTest = {
  'pairs by stem with the folder loader\'s messages, and splits by fraction or by sub-folders'() {
    const imgs = ['im/a.png', 'im/b.jpg', 'im/c.png', 'im/d.png', 'im/.DS_Store'];
    const msks = ['ma/a_m.png', 'ma/b_m.png', 'ma/c_m.png', 'ma/d_m.png'];
    const o = { maskSuffix: '_m', valFraction: 0.25, seed: 1, trainSplit: 'train', valSplit: 'val' };
    const s = pairAndSplit(imgs, msks, o);
    assert.equal(s.from, 'fraction');
    assert.deepEqual([s.train.length, s.val.length], [3, 1]);
    assert.deepEqual(pairAndSplit(imgs, msks, o), s, 'the same seed, the same split');
    assert.deepEqual([...s.train, ...s.val].map((p) => p.id).sort(), ['a', 'b', 'c', 'd']);
    assert.equal(s.train.find((p) => p.id === 'b')?.mask ?? s.val[0].mask, s.train.find((p) => p.id === 'b') ? 'ma/b_m.png' : s.val[0].mask);
    assert.throws(() => pairAndSplit([...imgs, 'im/e.png'], msks, o), (e: Error) => e instanceof UserError && /^1 image\(s\) without a mask in ma \(expected <stem>_m\.png\): e\.png$/.test(e.message));
    assert.throws(() => pairAndSplit(imgs, [...msks, 'ma/z_m.png'], o), /1 mask\(s\) without an image in im .*z_m\.png/);
    assert.throws(() => pairAndSplit(['im/a.png'], ['ma/a_m.png'], { ...o, valFraction: 0.5 }), /leave none to train on/);
    // One folder of pairs: no mask folder picked, or the same one picked twice.
    const both = ['all/a.png', 'all/a_m.png', 'all/b.jpg', 'all/b_m.png', 'all/c.png', 'all/c_m.png', 'all/d.png', 'all/d_m.png'];
    const one = pairAndSplit(both, [], o);
    assert.deepEqual([...one.train, ...one.val].map((p) => [p.id, p.image, p.mask]).sort(), [['a', 'all/a.png', 'all/a_m.png'], ['b', 'all/b.jpg', 'all/b_m.png'], ['c', 'all/c.png', 'all/c_m.png'], ['d', 'all/d.png', 'all/d_m.png']]);
    assert.deepEqual(pairAndSplit(both, both, o), one);
    assert.throws(() => pairAndSplit(both, [], { ...o, maskSuffix: '' }), (e: Error) => e instanceof UserError && /^no mask folder picked, so all must hold the masks too: set data\.mask_suffix/.test(e.message));
    assert.throws(() => pairAndSplit([...both, 'all/e.png'], [], o), /1 image\(s\) without a mask in all .*e\.png/);
    assert.throws(() => pairAndSplit([], [], o), (e: Error) => e instanceof UserError && /^no images picked: /.test(e.message));
    const byFolder = pairAndSplit(['im/train/a.png', 'im/val/b.png'], ['ma/train/a_m.png', 'ma/val/b_m.png'], o);
    assert.deepEqual([byFolder.from, byFolder.train[0].id, byFolder.val[0].id], ['folders', 'a', 'b']);
  },
};

runIfMain(module, selfTest);
