// Entry point of the data pipeline's listing side: importing it registers the built-in
// loaders (isic, cityscapes, camvid, folder, synthetic).
import assert from 'node:assert/strict';
import type { Config } from '../utils/config';
import { parseConfig } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { getLoader, registeredLoaders } from './registry';
import type { PairRef } from './registry';
import './isic';
import './cityscapes';
import './camvid';
import './folder';
import './synthetic';

export { registerLoader, getLoader, registeredLoaders, maskLutFor } from './registry';
export type { PairRef, DatasetLoader, MaskLut } from './registry';

/** The pairs of one split, sorted by id, capped at data.limit (0 = all). Empty -> UserError. */
export async function listSplit(cfg: Config, split: string): Promise<PairRef[]> {
  let pairs = await getLoader(cfg.data.name).listPairs(cfg, split);
  if (cfg.data.limit > 0) pairs = pairs.slice(0, cfg.data.limit);
  if (!pairs.length) throw new UserError(`dataset '${cfg.data.name}' at ${cfg.data.root}: split '${split}' has no image/mask pairs`);
  return pairs;
}

export const selfTest: SelfTest = {
  'built-in loaders are registered'() {
    for (const n of ['isic', 'cityscapes', 'camvid', 'folder', 'synthetic']) assert.ok(registeredLoaders().includes(n), n);
  },
  async 'limit caps a split'() {
    const os = await import('node:os');
    const path = await import('node:path');
    const fs = await import('node:fs');
    const root = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'idx-')), 'ds');
    const cfg = parseConfig({ data: { root, limit: 2, synthetic: { train: 4, val: 2, image_size: 16 } } });
    assert.equal((await listSplit(cfg, 'train')).length, 2);
    fs.rmSync(path.dirname(root), { recursive: true });
  },
};

runIfMain(module, selfTest);
