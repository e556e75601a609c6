// Schedule 'poly': min_lr + (base - min_lr) * (1 - t/T)^power, reaching min_lr at the last step.
import assert from 'node:assert/strict';
import { z } from 'zod';
import { minLrOption, registerSchedule } from '../lr_schedule';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const poly = registerSchedule({
  name: 'poly',
  summary: 'Polynomial decay to min_lr at the last step, (1 - t/T)^power.',
  options: z.object({ power: z.number().finite().positive().default(0.9), min_lr: minLrOption }),
  rate(o, at) {
    const minLr = Math.min(o.min_lr, at.baseLr);
    return minLr + (at.baseLr - minLr) * Math.pow(1 - at.frac, o.power);
  },
});

export const selfTest: SelfTest = {
  'power 1 is linear to min_lr'() {
    const at = (frac: number) => poly.rate({ power: 1, min_lr: 0.1 }, { baseLr: 1.1, iter: 0, totalIters: 10, frac, itersPerEpoch: 1 });
    assert.ok(Math.abs(at(0.5) - 0.6) < 1e-12 && Math.abs(at(1) - 0.1) < 1e-12);
  },
};

runIfMain(module, selfTest);
