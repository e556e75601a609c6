// ISIC 2018 Task 1, official layout:
//   ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_xxxxxxx.jpg
//   ISIC2018_Task1_{Training,Validation,Test}_GroundTruth/ISIC_xxxxxxx_segmentation.png
// Masks are 0 (background) / 255 (lesion). Some re-encoded copies of the set carry
// values in between (JPEG-era masks), so values are thresholded at 128 rather than rejected.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { parseSchema } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { keyed, matchPairs, requireRoot } from './files';
import { ISIC_META } from '../utils/dataset_utils/isic';
import { MaskLut, PairRef, registerDataset } from './registry';

const SPLITS: Record<string, string> = { train: 'Training', val: 'Validation', test: 'Test', Training: 'Training', Validation: 'Validation', Test: 'Test' };

export function isicSplitDir(split: string): string {
  const s = SPLITS[split];
  if (!s) throw new UserError(`ISIC split '${split}': expected one of train, val, test`);
  return s;
}

/** Lists pairs under `root` in the ISIC layout (used by isic and synthetic). */
export function listIsicLayout(root: string, split: string): PairRef[] {
  const s = isicSplitDir(split);
  const imageDir = path.join(root, `ISIC2018_Task1-2_${s}_Input`);
  const maskDir = path.join(root, `ISIC2018_Task1_${s}_GroundTruth`);
  if (!fs.existsSync(imageDir)) throw new UserError(`${imageDir} not found: expected the ISIC 2018 Task 1 ${s} images there (ISIC_xxxxxxx.jpg)`);
  if (!fs.existsSync(maskDir)) throw new UserError(`${maskDir} not found: expected the ISIC 2018 Task 1 ${s} ground truth there (ISIC_xxxxxxx_segmentation.png)`);
  return matchPairs(keyed(imageDir, ['.jpg', '.jpeg', '.png']), keyed(maskDir, ['_segmentation.png']), {
    imageDir, maskDir, imagePattern: 'ISIC_xxxxxxx.jpg', maskPattern: 'ISIC_xxxxxxx_segmentation.png',
  });
}

export function binaryThresholdLut(): MaskLut {
  return Int16Array.from({ length: 256 }, (_, v) => (v >= 128 ? 1 : 0));
}

export const isicLoader = registerDataset({
  name: 'isic',
  options: z.object({}), // no keys of its own: the layout is fixed
  numClasses: 2,
  meta: () => ISIC_META,
  listPairs(cfg, split) {
    requireRoot(
      cfg.data.root,
      'download ISIC 2018 Task 1 (Training and Validation "Input" images and "GroundTruth" masks, https://challenge.isic-archive.com/data/#2018)',
    );
    return listIsicLayout(cfg.data.root, split);
  },
  maskLut: () => binaryThresholdLut(),
});

export const selfTest: SelfTest = {
  'lists the official layout'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isic-'));
    fs.mkdirSync(path.join(root, 'ISIC2018_Task1-2_Training_Input'));
    fs.mkdirSync(path.join(root, 'ISIC2018_Task1_Training_GroundTruth'));
    for (const id of ['ISIC_0000001', 'ISIC_0000000']) {
      fs.writeFileSync(path.join(root, 'ISIC2018_Task1-2_Training_Input', id + '.jpg'), '');
      fs.writeFileSync(path.join(root, 'ISIC2018_Task1_Training_GroundTruth', id + '_segmentation.png'), '');
    }
    const cfg = parseSchema({ data: { name: 'isic', root } });
    const pairs = isicLoader.listPairs(cfg, 'train', {}) as PairRef[];
    assert.deepEqual(pairs.map((p) => p.id), ['ISIC_0000000', 'ISIC_0000001']);
    assert.throws(() => isicLoader.listPairs(cfg, 'val', {}), /Validation_Input not found/);
    assert.throws(() => isicLoader.listPairs(parseSchema({ data: { name: 'isic', root: root + '/x' } }), 'train', {}), /x not found: download ISIC 2018/);
    fs.rmSync(root, { recursive: true });
  },
  'threshold at 128'() {
    const lut = binaryThresholdLut();
    assert.deepEqual([lut[0], lut[127], lut[128], lut[255]], [0, 0, 1, 1]);
  },
};

runIfMain(module, selfTest);
