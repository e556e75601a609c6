import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../backends';
import { getModel } from '../models';
import { parseConfig } from '../utils/config';
import { buildLoss } from '../utils/losses';
import { createOptimizer } from '../utils/optimizers';
import { makeTrainStep } from '../engine/train_step';
import { syntheticBatch } from '../bench/bench';
async function main() {
  const be = process.argv[2] ?? 'webgpu';
  const info = await initBackend(be as any);
  console.log(info.description);
  const size = 64, batch = 2;
  const cfg = parseConfig({ model: { base: 16, depth: 4 }, data: { size: [size, size], num_classes: 2 }, training: { batch_size: batch, optimizer: { name: 'adam', lr: 0.001 } } });
  const model = getModel(cfg);
  const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
  const b = syntheticBatch(batch, size);
  for (let i = 0; i < 3; i++) { const t0 = performance.now(); const l = await step(b); console.log('loss', l, (performance.now() - t0).toFixed(0), 'ms'); }
  const p = await tf.profile(async () => { await step(b); });
  const byName = new Map<string, number>();
  for (const k of p.kernels) byName.set(k.name, (byName.get(k.name) ?? 0) + 1);
  if (process.env.SEQ) { const fs = require("fs"); fs.writeFileSync("/tmp/seq.txt", p.kernels.map((k) => `${k.name} ${JSON.stringify(k.inputShapes)}->${JSON.stringify(k.outputShapes)}`).join("\n")); }
  console.log("kernels", p.kernels.length, JSON.stringify([...byName.entries()].sort((a, b) => b[1] - a[1])));
}
main();
export async function dumpSeq(fn: () => Promise<unknown>) {
  const p = await tf.profile(async () => { await fn(); });
  return p.kernels.map((k) => `${k.name} ${JSON.stringify(k.inputShapes)}->${JSON.stringify(k.outputShapes)}`);
}
