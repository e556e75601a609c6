// Schedule 'step': the base rate times gamma every step_size epochs, not below min_lr.
import assert from 'node:assert/strict';
import { z } from 'zod';
import { minLrOption, registerSchedule } from '../lr_schedule';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const step = registerSchedule({
  name: 'step',
  summary: 'Multiplies the rate by gamma every step_size epochs (not below min_lr).',
  options: z.object({
    step_size: z.number().finite().int().positive().default(30), // epochs
    gamma: z.number().finite().positive().default(0.1),
    min_lr: minLrOption,
  }),
  rate(o, at) {
    const epoch = Math.floor(at.iter / Math.max(at.itersPerEpoch, 1));
    return Math.max(Math.min(o.min_lr, at.baseLr), at.baseLr * Math.pow(o.gamma, Math.floor(epoch / o.step_size)));
  },
});

export const selfTest: SelfTest = {
  'epoch 3 of step_size 3 is the first drop'() {
    const at = (iter: number) => step.rate({ step_size: 3, gamma: 0.5, min_lr: 0 }, { baseLr: 0.8, iter, totalIters: 1000, frac: iter / 1000, itersPerEpoch: 10 });
    assert.deepEqual([at(29), at(30)], [0.8, 0.4]);
  },
};

runIfMain(module, selfTest);
