// Generic folder dataset: data.images_dir and data.masks_dir (relative to data.root),
// matched by file stem: image `abc.jpg` <-> mask `abc<mask_suffix>.png`.
// Splits: a `{split}` placeholder in either dir is replaced by the split name; else a
// sub-folder named like the split is used if present; else the same folder serves every
// split (handy for overfitting a handful of images).
// data.value_map maps raw mask values to classes (e.g. {"255": 1}); other values are
// read as class ids; values that are neither a class nor the ignore index are errors.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { z } from 'zod';
import type { Config } from '../utils/config';
import { parseSchema } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { IMAGE_EXTS, keyed, matchPairs, requireRoot } from './files';
import { genericMeta } from '../utils/dataset_utils';
import { DatasetDefinition, identityLut, MaskLut, PairRef, registerDataset } from './registry';
import { warning } from '../utils/warnings';

const isDir = (p: string) => fs.existsSync(p) && fs.statSync(p).isDirectory();
const warnedShared = new Set<string>();

/**
 * The folder of one split. When `dir` has sub-folders named like the config's splits
 * but not this one, the split does not exist: an error, not another split's images.
 * With no split sub-folders at all every split reads `dir`, with a warning (once).
 */
function splitDir(cfg: Config, dir: string, split: string, key: string): string {
  const root = cfg.data.root;
  if (dir.includes('{split}')) return path.join(root, dir.replaceAll('{split}', split));
  const sub = path.join(root, dir, split);
  if (isDir(sub)) return sub;
  const known = [...new Set([cfg.data.train_split, cfg.data.val_split, cfg.data.test_split])].filter((s) => isDir(path.join(root, dir, s)));
  if (known.length) throw new UserError(`split '${split}' not found: ${path.join(root, dir)} has no '${split}' sub-folder (it has ${known.join(', ')}; data.${key})`);
  const shared = path.join(root, dir);
  if (key === 'images_dir' && !warnedShared.has(`${shared}:${split}`)) {
    warnedShared.add(`${shared}:${split}`);
    warning(`warning: ${shared} has no split sub-folders; split '${split}' reads all of its images (as every split does)`);
  }
  return shared;
}

// The folder loader's own keys of `data:` (config/resolve.ts checks them when it is chosen).
const options = z.object({
  // Folders relative to data.root; `{split}` in either is replaced by the split's name.
  images_dir: z.string().optional(),
  masks_dir: z.string().optional(),
  // A mask's name is the image's stem + mask_suffix + .png.
  mask_suffix: z.string().default(''),
  value_map: z.record(z.string(), z.number().finite().int()).optional(),
});
export type FolderOptions = z.infer<typeof options>;

export function valueMapLut(cfg: Config, o: FolderOptions): MaskLut {
  const vm = o.value_map;
  if (!vm) return identityLut(cfg);
  const lut = identityLut(cfg); // values not in the map keep their meaning as class ids
  for (const [k, c] of Object.entries(vm)) {
    const v = Number(k);
    if (!Number.isInteger(v) || v < 0 || v > 255) throw new UserError(`data.value_map: key '${k}' is not a mask value 0-255`);
    if ((c < 0 || c >= cfg.data.num_classes) && c !== cfg.data.ignore_index)
      throw new UserError(`data.value_map: ${k} -> ${c} is not a class 0-${cfg.data.num_classes - 1} or the ignore index ${cfg.data.ignore_index}`);
    lut[v] = c;
  }
  return lut;
}

export const folderLoader: DatasetDefinition<typeof options> = registerDataset({
  name: 'folder',
  options,
  meta: (cfg) => genericMeta(cfg.data.num_classes),
  listPairs(cfg, split, o) {
    const { root } = cfg.data;
    const { images_dir, masks_dir, mask_suffix } = o;
    if (!images_dir || !masks_dir) throw new UserError(`dataset 'folder' needs data.images_dir and data.masks_dir (folders relative to data.root)`);
    requireRoot(root, 'put your images and masks');
    const imageDir = splitDir(cfg, images_dir, split, 'images_dir');
    const maskDir = splitDir(cfg, masks_dir, split, 'masks_dir');
    if (!fs.existsSync(imageDir)) throw new UserError(`${imageDir} not found: expected the images there (data.images_dir)`);
    if (!fs.existsSync(maskDir)) throw new UserError(`${maskDir} not found: expected the masks there (data.masks_dir)`);
    const masks = keyed(maskDir, IMAGE_EXTS.map((e) => mask_suffix + e));
    // With an empty suffix, `keyed` strips just the extension: the stem.
    let images = keyed(imageDir, IMAGE_EXTS);
    // One folder holding both: the suffix is what tells a mask from an image.
    if (path.resolve(imageDir) === path.resolve(maskDir)) {
      if (!mask_suffix) throw new UserError(`data.images_dir and data.masks_dir are the same folder (${imageDir}): set data.mask_suffix (e.g. _mask) so a mask, <stem><suffix>.png, is told from its image`);
      images = new Map([...images].filter(([k]) => !k.toLowerCase().endsWith(mask_suffix.toLowerCase())));
    }
    return matchPairs(images, masks, {
      imageDir, maskDir, imagePattern: `*{${IMAGE_EXTS.join(',')}}`, maskPattern: `<stem>${mask_suffix}.png`,
    });
  },
  maskLut: valueMapLut,
});

export const selfTest: SelfTest = {
  'matches by stem with suffix and split sub-folders'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'folder-'));
    fs.mkdirSync(path.join(root, 'img/train'), { recursive: true });
    fs.mkdirSync(path.join(root, 'lab/train'), { recursive: true });
    fs.writeFileSync(path.join(root, 'img/train/a.jpg'), '');
    fs.writeFileSync(path.join(root, 'lab/train/a_mask.png'), '');
    const cfg = parseSchema({ data: { name: 'folder', root } });
    const o = options.parse({ images_dir: 'img', masks_dir: 'lab', mask_suffix: '_mask', value_map: { '255': 1 } });
    const p = folderLoader.listPairs(cfg, 'train', o) as PairRef[];
    assert.deepEqual(p.map((x) => x.id), ['a']);
    const lut = valueMapLut(cfg, o);
    assert.deepEqual([lut[0], lut[1], lut[2], lut[255]], [0, 1, -1, 1]);
    assert.throws(() => folderLoader.listPairs(cfg, 'train', options.parse({})), /needs data\.images_dir/);
    // img/ has a train sub-folder only: 'val' does not exist (not train's images again)
    assert.throws(() => folderLoader.listPairs(cfg, 'val', o), /split 'val' not found: .*img has no 'val' sub-folder \(it has train; data\.images_dir\)/);
    fs.rmSync(path.join(root, 'img/train'), { recursive: true });
    fs.rmSync(path.join(root, 'lab/train'), { recursive: true });
    fs.writeFileSync(path.join(root, 'img/b.jpg'), '');
    fs.writeFileSync(path.join(root, 'lab/b_mask.png'), '');
    // One folder of pairs: a.jpg beside a_mask.png; without a suffix it cannot be told apart.
    fs.mkdirSync(path.join(root, 'both/train'), { recursive: true });
    fs.writeFileSync(path.join(root, 'both/train/c.jpg'), '');
    fs.writeFileSync(path.join(root, 'both/train/c_mask.png'), '');
    const same = options.parse({ images_dir: 'both', masks_dir: 'both', mask_suffix: '_mask' });
    assert.deepEqual((folderLoader.listPairs(cfg, 'train', same) as PairRef[]).map((x) => [x.id, path.basename(x.image), path.basename(x.mask!)]), [['c', 'c.jpg', 'c_mask.png']]);
    assert.throws(() => folderLoader.listPairs(cfg, 'train', { ...same, mask_suffix: '' }), /same folder .*set data\.mask_suffix/);
    fs.rmSync(path.join(root, 'both'), { recursive: true });
    const warn = console.warn;
    const warned: string[] = [];
    console.warn = (s: string) => warned.push(s);
    try {
      assert.deepEqual((folderLoader.listPairs(cfg, 'val', o) as PairRef[]).map((x) => x.id), ['b']);
      folderLoader.listPairs(cfg, 'val', o);
    } finally {
      console.warn = warn;
    }
    assert.equal(warned.length, 1, 'warned once');
    assert.match(warned[0], /^warning: .*img has no split sub-folders; split 'val' reads all of its images/);
    fs.rmSync(root, { recursive: true });
  },
};

runIfMain(module, selfTest);
