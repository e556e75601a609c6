// Schedule 'constant': the base rate throughout (after any warm-up).
import assert from 'node:assert/strict';
import { z } from 'zod';
import { registerSchedule } from '../lr_schedule';
import { runIfMain, SelfTest } from '../../utils/self_test';

export const constant = registerSchedule({
  name: 'constant',
  summary: 'The base rate (training.optimizer.lr) throughout.',
  options: z.object({}),
  rate: (_o, at) => at.baseLr,
});

export const selfTest: SelfTest = {
  'the base rate at any step'() {
    assert.equal(constant.rate({}, { baseLr: 0.3, iter: 777, totalIters: 1000, frac: 0.777, itersPerEpoch: 10 }), 0.3);
  },
};

runIfMain(module, selfTest);
