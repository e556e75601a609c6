// Training / inference / data throughput of the registry U-Net with the project's real
// train step, loss and optimizer; optionally side by side with PyTorch on this machine.
//   npm run bench -- --size 128 --batch 4 --base 16 --depth 4 --json [--torch] [--backend wasm]
//     [--steps 5] [--threads 2] [--data-images 64] [--no-data] [--profile]
// Prints one JSON line (with --json) or a readable object. Machines are shared and
// drift, so --torch runs ../shared/bench/torch_unet.py in the same invocation.
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { getModel } from '../models';
import { parseConfig } from '../utils/config';
import { buildLoss } from '../utils/losses';
import { createOptimizer } from '../utils/optimizers';
import { makeTrainStep } from '../engine/train_step';
import { initBackend, BackendName } from '../backends';
import { seededValues } from '../backends/wasm_kernels';
import { UserError } from '../utils/errors';
import type { Batch } from '../pipeline/batcher';
import { measureDataPipeline } from './data_pipeline';
import { profileKernels } from './profile';

const TORCH_SCRIPT = path.resolve(__dirname, '..', '..', 'shared', 'bench', 'torch_unet.py');
// Compiled to dist/bench, the project root is one more level up.
const torchScript = () => [TORCH_SCRIPT, path.resolve(__dirname, '..', '..', '..', 'shared', 'bench', 'torch_unet.py')].find((p) => fs.existsSync(p));

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] && !process.argv[i + 1].startsWith('--') ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

function intArg(name: string, def: number): number {
  const v = Number(arg(name, String(def)));
  if (!Number.isInteger(v) || v <= 0) throw new UserError(`--${name} must be a positive integer, got '${arg(name, '')}'`);
  return v;
}

/** A batch of seeded images and 0/1 masks (no data loading in the model timings). */
export function syntheticBatch(n: number, size: number): Batch {
  const images = seededValues(n * size * size * 3, 11);
  const noise = seededValues(n * size * size, 12);
  const masks = Uint8Array.from(noise, (v) => (v > 0 ? 1 : 0));
  return { images, masks, n, h: size, w: size, ids: Array.from({ length: n }, (_, i) => `b${i}`) };
}

/** Median of the per-call seconds; one warm-up call first is the caller's job. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function runTorch(size: number, batch: number, base: number, depth: number, steps: number): { train: number; infer: number; engine: string } {
  const script = torchScript();
  if (!script) throw new UserError(`--torch: ${TORCH_SCRIPT} not found`);
  const r = spawnSync('/usr/bin/python3', [script, '--size', String(size), '--batch', String(batch), '--base', String(base),
    '--depth', String(depth), '--steps', String(steps), '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new UserError(`--torch: ${script} failed (install with apt-get install -y python3-torch): ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  const j = JSON.parse(line) as { train_images_per_s: number; infer_images_per_s: number; engine: string };
  return { train: j.train_images_per_s, infer: j.infer_images_per_s, engine: j.engine };
}

async function main(): Promise<void> {
  const size = intArg('size', 128);
  const batch = intArg('batch', 4);
  const base = intArg('base', 16);
  const depth = intArg('depth', 4);
  const steps = intArg('steps', 5);
  const backend = arg('backend', 'wasm') as BackendName;
  const info = await initBackend(backend);
  const cfg = parseConfig({
    backend,
    model: { base, depth },
    data: { size: [size, size], num_classes: 2 },
    training: { batch_size: batch, optimizer: { name: 'adam', lr: 0.001 } },
  });
  const model = getModel(cfg);
  const params = model.trainableWeights.reduce((s, w) => s + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);
  const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
  const b = syntheticBatch(batch, size);
  let peak = 0;
  const sampleRss = () => { peak = Math.max(peak, process.memoryUsage().rss); };

  step(b); // warm-up: kernels, optimizer slots
  const afterFirst = tf.memory().numTensors;
  const trainS: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    step(b);
    trainS.push((performance.now() - t0) / 1000);
    sampleRss();
  }
  const leaked = tf.memory().numTensors - afterFirst;

  const x = tf.tensor4d(b.images, [batch, size, size, 3]);
  // Synced outside tidy: tidy walks a returned typed array element by element.
  const infer = () => { const y = tf.tidy(() => model.predict(x) as tf.Tensor); y.dataSync(); y.dispose(); };
  infer();
  const inferS: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    infer();
    inferS.push((performance.now() - t0) / 1000);
    sampleRss();
  }

  const out: Record<string, unknown> = {
    backend: info.name,
    threads: info.description.match(/(\d+) thread/)?.[1] ? Number(info.description.match(/(\d+) thread/)![1]) : undefined,
    size, batch, base, depth, params,
    train_images_per_s: +(batch / median(trainS)).toFixed(2),
    infer_images_per_s: +(batch / median(inferS)).toFixed(2),
  };
  if (flag('profile')) {
    out.profile_train = await profileKernels(() => step(b));
    out.profile_infer = await profileKernels(infer);
  }
  x.dispose();
  step.dispose();
  model.dispose();

  if (!flag('no-data')) {
    const d = await measureDataPipeline({
      size, batch, images: intArg('data-images', 64), src: Math.max(256, size), workers: 2, realRoot: '', threads: true, epochs: 1,
    });
    out.data_images_per_s = d.data_images_per_s;
  }
  sampleRss();
  out.peak_rss_mb = Math.round(Math.max(peak, (process.resourceUsage().maxRSS ?? 0) * 1024) / 2 ** 20);
  out.tensors_leaked = leaked;
  if (flag('torch')) {
    const t = runTorch(size, batch, base, depth, steps);
    out.torch = t.engine;
    out.torch_train_images_per_s = t.train;
    out.torch_infer_images_per_s = t.infer;
    out.train_ratio = +((out.train_images_per_s as number) / t.train).toFixed(3);
    out.infer_ratio = +((out.infer_images_per_s as number) / t.infer).toFixed(3);
  }
  console.log(flag('json') ? JSON.stringify(out) : out);
}

if (require.main === module) {
  main().then(() => process.exit(0), (err) => {
    console.error(err instanceof UserError ? `error: ${err.message}` : err);
    process.exit(1);
  });
}
