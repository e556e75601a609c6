// Calibrates engine/memory.ts: runs two training steps per case, each case in its own
// process (the wasm heap only grows, so its size after the steps is the high-water
// mark), and prints measured heap and RSS beside the estimate.
//   npx tsx bench/memory.ts 128x2x16x4 256x4x16x4 ...   (U-Net: size x batch x base x depth)
//   npx tsx bench/memory.ts fpn@128x4 deeplabv3plus@160x2 ...   (another model at its defaults: size x batch)
import { isMainModule } from '../utils/self_test';
import * as tf from '../backends/tf';
import { spawnSync } from 'node:child_process';
import { getModel, resolveModel } from '../models/registry';
import { parseConfig } from '../config/resolve';
import { buildLoss } from '../training/losses';
import { createOptimizer } from '../training/optimizers';
import { makeTrainStep } from '../engine/train_step';
import { forwardFloatsPerSample, trainStepBytes } from '../engine/memory';
import { initBackend } from '../backends';
import { syntheticBatch } from './bench';

async function one(spec: string): Promise<void> {
  const [name, dims] = spec.includes('@') ? spec.split('@') : ['unet', spec];
  const [size, batch, base, depth] = dims.split('x').map(Number);
  await initBackend('wasm');
  const model_ = name === 'unet' ? { base, depth } : { name };
  const cfg = parseConfig({ model: model_, data: { size: [size, size] }, training: { batch_size: batch } });
  const model = getModel(cfg);
  const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
  const b = syntheticBatch(batch, size);
  for (let i = 0; i < 2; i++) await step(b);
  const heap = (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer.byteLength;
  const floats = batch * forwardFloatsPerSample(resolveModel(cfg), size, size);
  const est = trainStepBytes(resolveModel(cfg), { batch, height: size, width: size });
  const mb = (x: number) => Math.round(x / 2 ** 20);
  console.log(JSON.stringify({ spec, forward_mfloats: +(floats / 1e6).toFixed(1), heap_mb: mb(heap), rss_mb: mb(process.resourceUsage().maxRSS * 1024), estimate_mb: mb(est), bytes_per_float: +(heap / floats).toFixed(1) }));
}

if (isMainModule(module)) {
  const specs = process.argv.slice(2);
  if (process.env.MEMORY_CASE) void one(process.env.MEMORY_CASE).then(() => process.exit(0));
  else for (const s of specs) spawnSync(process.execPath, [...process.execArgv, __filename], { stdio: 'inherit', env: { ...process.env, MEMORY_CASE: s } });
}
