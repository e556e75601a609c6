// Schedule 'cosine': half a cosine from the base rate down to min_lr at the last step.
import assert from 'node:assert/strict';
import { z } from 'zod';
import { minLrOption, registerSchedule } from '../lr_schedule';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const cosine = registerSchedule({
  name: 'cosine',
  summary: 'Cosine annealing from the base rate to min_lr at the last step.',
  options: z.object({ min_lr: minLrOption }),
  rate(o, at) {
    const minLr = Math.min(o.min_lr, at.baseLr);
    return minLr + (at.baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * at.frac));
  },
});

export const selfTest: SelfTest = {
  'halfway is the midpoint of base and min_lr'() {
    const v = cosine.rate({ min_lr: 0 }, { baseLr: 2, iter: 5, totalIters: 10, frac: 0.5, itersPerEpoch: 1 });
    assert.ok(Math.abs(v - 1) < 1e-12, String(v));
  },
};

runIfMain(module, selfTest);
