import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../backends';
import { getModel } from '../models';
import { parseConfig } from '../utils/config';
import { buildLoss } from '../utils/losses';
import { createOptimizer } from '../utils/optimizers';
import { makeTrainStep } from '../engine/train_step';
import { syntheticBatch } from '../bench/bench';
import { snapshotWeights } from '../engine/checkpoint/store';
async function main() {
  await initBackend('webgpu');
  if (process.env.MMT) tf.env().set('WEBGPU_MATMUL_PROGRAM_TYPE', Number(process.env.MMT));
  const cfg = parseConfig({ model: { base: 4, depth: 2 }, data: { size: [32, 32] }, training: { batch_size: 4, optimizer: { name: 'adam', lr: 0.003 } } });
  const outs: Float32Array[][] = [];
  for (let r = 0; r < 2; r++) {
    const model = getModel(cfg);
    const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
    const b = syntheticBatch(4, 32);
    const losses = [];
    for (let i = 0; i < 4; i++) losses.push(await step(b));
    console.log(losses);
    outs.push((await snapshotWeights(model)).map((w) => w.values));
  }
  let maxd = 0; outs[0].forEach((a, i) => a.forEach((v, j) => { maxd = Math.max(maxd, Math.abs(v - outs[1][i][j])); }));
  console.log('max diff between runs', maxd);
}
main();
