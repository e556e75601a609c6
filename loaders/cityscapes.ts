// Cityscapes: leftImg8bit/{split}/{city}/*_leftImg8bit.png with
// gtFine/{split}/{city}/*_gtFine_labelIds.png. Label ids 0-33 become the 19 train ids;
// every other id becomes the ignore index.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { parseSchema } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { CITYSCAPES_META, labelIdToTrainId } from '../utils/dataset_utils/cityscapes';
import { keyed, listEntries, matchPairs, requireRoot } from './files';
import { PairRef, registerDataset } from './registry';

export const cityscapesLoader = registerDataset({
  name: 'cityscapes',
  options: z.object({}), // no keys of its own: the layout is fixed
  numClasses: 19,
  meta: () => CITYSCAPES_META,
  listPairs(cfg, split) {
    const root = cfg.data.root;
    requireRoot(root, 'download Cityscapes leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (https://www.cityscapes-dataset.com, registration needed)');
    const imageRoot = path.join(root, 'leftImg8bit', split);
    const maskRoot = path.join(root, 'gtFine', split);
    if (!fs.existsSync(imageRoot)) throw new UserError(`${imageRoot} not found: expected Cityscapes images in leftImg8bit/${split}/<city>/*_leftImg8bit.png`);
    const images = new Map<string, string>();
    const masks = new Map<string, string>();
    const cities = listEntries(imageRoot, 'dir');
    for (const city of cities) {
      for (const [k, f] of keyed(path.join(imageRoot, city), ['_leftImg8bit.png'])) images.set(`${city}/${k}`, f);
      for (const [k, f] of keyed(path.join(maskRoot, city), ['_gtFine_labelIds.png'])) masks.set(`${city}/${k}`, f);
    }
    return matchPairs(images, masks, {
      imageDir: imageRoot, maskDir: maskRoot, imagePattern: '<city>/*_leftImg8bit.png', maskPattern: '<city>/*_gtFine_labelIds.png',
    }).map((p) => ({ ...p, id: path.basename(p.id) }));
  },
  maskLut(cfg) {
    const lut = new Int16Array(256).fill(-1);
    labelIdToTrainId(cfg.data.ignore_index).forEach((t, id) => (lut[id] = t));
    return lut;
  },
});

export const selfTest: SelfTest = {
  'lists image/mask pairs across city folders'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cs-'));
    for (const [d, f] of [['leftImg8bit/val/a', 'a_1_leftImg8bit.png'], ['gtFine/val/a', 'a_1_gtFine_labelIds.png']]) {
      fs.mkdirSync(path.join(root, d), { recursive: true });
      fs.writeFileSync(path.join(root, d, f), '');
    }
    const cfg = parseSchema({ data: { name: 'cityscapes', root, num_classes: 19 } });
    assert.deepEqual((cityscapesLoader.listPairs(cfg, 'val', {}) as PairRef[]).map((p) => p.id), ['a_1']);
    fs.rmSync(root, { recursive: true });
  },
};

runIfMain(module, selfTest);
