// One training/validation sample as a self-contained job (plain data in, typed arrays
// out), so it can run in-process or in a worker thread with identical results.
import assert from 'node:assert/strict';
import type { Augmentations } from '../utils/config';
import { rngFor } from '../utils/rng';
import { runIfMain, SelfTest } from '../utils/self_test';
import { decodePair, LabelMask, MaskRules } from './decode';
import type { PairRef } from '../loaders/registry';
import { augment } from './transforms';

export interface SampleJob {
  pair: PairRef;
  rules: MaskRules;
  size: [number, number]; // data.size [h, w]
  augment: Augmentations | null; // null: validation (no augmentation)
  seed: number;
  epoch: number;
  pos: number; // position in the epoch: with (seed, epoch) it fixes every random draw
  fullMask?: boolean; // also return the mask at its own size (validation)
  donor?: PairRef; // augmentations.paste: the image whose paste classes are laid over this one
}

// The donor's random draws: a stream of their own, so pasting leaves the sample's own draws as they were.
const DONOR_STREAM = 0xd0e0;

export interface SampleResult { image: Float32Array | Uint8Array; mask: Uint8Array; id: string; fullMask?: LabelMask }

export async function loadSample(job: SampleJob): Promise<SampleResult> {
  const { image, mask, fullMask } = await decodePair(job.pair, job.rules, job.size, job.fullMask);
  if (!job.augment) return { image: image.data, mask: mask.data, id: job.pair.id, ...(fullMask ? { fullMask } : {}) };
  const rng = rngFor(job.seed, job.epoch, job.pos);
  let donor;
  if (job.donor) {
    const d = await decodePair(job.donor, job.rules, job.size);
    donor = { sample: { image: d.image.data, mask: d.mask.data, width: d.image.width, height: d.image.height }, rng: rngFor(job.seed, job.epoch, job.pos, DONOR_STREAM) };
  }
  const a = augment({ image: image.data, mask: mask.data, width: image.width, height: image.height }, job.augment, rng, job.rules.ignoreIndex, donor);
  return { image: a.image, mask: a.mask, id: job.pair.id };
}

export const selfTest: SelfTest = {
  async 'missing file is a UserError naming it'() {
    const rules = { lut: new Int16Array(256), numClasses: 2, ignoreIndex: 255 };
    await assert.rejects(loadSample({ pair: { id: 'x', image: '/nonexistent/x.jpg', mask: '/nonexistent/x.png' }, rules, size: [8, 8], augment: null, seed: 1, epoch: 0, pos: 0 }), /x\.(jpg|png): cannot read file/);
  },
};

runIfMain(module, selfTest);
