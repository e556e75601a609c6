import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../backends';
import { getModel } from '../models';
import { parseConfig } from '../utils/config';
import { buildLoss } from '../utils/losses';
import { createOptimizer } from '../utils/optimizers';
import { makeTrainStep } from '../engine/train_step';
import { syntheticBatch } from '../bench/bench';
async function main() {
  await initBackend('webgpu');
  const cfg = parseConfig({ model: { base: 16, depth: 4 }, data: { size: [64, 64] }, training: { batch_size: 2, optimizer: { name: 'adam', lr: 0.001 } } });
  const model = getModel(cfg);
  const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
  const b = syntheticBatch(2, 64);
  await step(b);
  const be = tf.backend() as any;
  const run = be.runWebGPUProgram;
  const tally = new Map<string, number>();
  be.runWebGPUProgram = function (p: any, ...a: any[]) { const k = p.constructor.name; tally.set(k, (tally.get(k) ?? 0) + 1); return run.call(this, p, ...a); };
  await step(b);
  console.log(JSON.stringify([...tally.entries()].sort((a, b) => b[1] - a[1])));
}
main();
