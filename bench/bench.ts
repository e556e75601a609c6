// Training / inference / data throughput of a registered model (U-Net by default) with the
// project's real train step, loss and optimizer; optionally side by side with its PyTorch
// twin on this machine.
//   npm run bench -- --size 128 --batch 4 --base 16 --depth 4 --json [--torch] [--backend wasm|webgpu|...]
//     [--model NAME] [--opt key=value ...] [--steps 5] [--rounds 3] [--threads 2] [--data-images 64] [--no-data] [--profile]
// --model picks the architecture; --opt sets its `model:` keys (--base and --depth are the
// U-Nets'). The PyTorch side is ../shared/bench/torch_unet.py for the U-Net, else the
// model's twin in bench/torch_models/.
// --profile adds per-kernel ms and `_kernels` (kernels per train step / inference call).
// Prints one JSON line (with --json) or a readable object. Machines are shared and
// drift, so --torch runs the PyTorch side in the same invocation, in
// --rounds alternating with ours; each ratio is the median of the rounds' ratios.
import * as tf from '../backends/tf';
import { spawnSync } from 'node:child_process';
import yargs from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { getModel, getModelDefinition } from '../models/registry';
import { modelMacs } from './flops';
import { parseConfig } from '../config/resolve';
import { buildLoss } from '../training/losses';
import { createOptimizer } from '../training/optimizers';
import { makeTrainStep } from '../engine/train_step';
import { initBackend, BackendName } from '../backends';
import { seededValues } from '../backends/wasm_kernels';
import { UserError, isAllocationFailure } from '../utils/errors';
import { exitWith } from '../utils/exit';
import type { Batch } from '../pipeline/batcher';
import { measureDataPipeline } from './data_pipeline';
import { profileKernels } from './profile';

const TORCH_SCRIPT = path.resolve(__dirname, '..', '..', 'shared', 'bench', 'torch_unet.py');
// Compiled to dist/bench, the project root is one more level up.
const torchScript = () => [TORCH_SCRIPT, path.resolve(__dirname, '..', '..', '..', 'shared', 'bench', 'torch_unet.py')].find((p) => fs.existsSync(p));

const positive = (name: string) => (v: number) => {
  if (!Number.isInteger(v) || v <= 0) throw new UserError(`--${name} must be a positive integer, got '${v}'`);
  return v;
};

/** The bench's options; an unknown or malformed one is a UserError (one line). */
export function parseArgs(argv: string[]) {
  return yargs(argv)
    .option('size', { type: 'number', default: 128, coerce: positive('size') })
    .option('batch', { type: 'number', default: 4, coerce: positive('batch') })
    .option('base', { type: 'number', default: 16, coerce: positive('base') })
    .option('depth', { type: 'number', default: 4, coerce: positive('depth') })
    .option('model', { type: 'string', default: 'unet', describe: 'a registered model (models/<name>.ts)' })
    .option('opt', { type: 'string', array: true, default: [] as string[], describe: "the model's own options, key=value" })
    .option('steps', { type: 'number', default: 5, coerce: positive('steps') })
    .option('backend', { type: 'string', default: 'wasm', choices: ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'] })
    .option('threads', { type: 'number', describe: 'wasm threads (sets SEMSEG_WASM_THREADS)', coerce: positive('threads') })
    .option('data-images', { type: 'number', default: 64, coerce: positive('data-images') })
    .option('data', { type: 'boolean', default: true, describe: '--no-data skips the data-pipeline timing' })
    .option('json', { type: 'boolean', default: false })
    .option('torch', { type: 'boolean', default: false, describe: 'also run ../shared/bench/torch_unet.py' })
    .option('profile', { type: 'boolean', default: false, describe: 'per-kernel ms and kernel counts' })
    .option('rounds', { type: 'number', default: 3, coerce: positive('rounds'), describe: 'with --torch: alternating rounds of ours and PyTorch' })
    .strict()
    .fail((msg, err) => { throw new UserError((err ? err.message : msg).replace(/\s*\n\s*/g, ' ')); })
    .parseSync();
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

const TWINS = path.resolve(__dirname, 'torch_models.py');

/** The PyTorch command for this model: the shared U-Net reference, else the model's twin. */
function torchCommand(model: string, opts: Record<string, unknown>, size: number, batch: number, base: number, depth: number, steps: number): string[] {
  const common = ['--size', String(size), '--batch', String(batch), '--steps', String(steps), '--json'];
  if (model === 'unet' && Object.keys(opts).length === 0) {
    const script = torchScript();
    if (!script) throw new UserError(`--torch: ${TORCH_SCRIPT} not found`);
    return [script, '--base', String(base), '--depth', String(depth), ...common];
  }
  return [TWINS, model, ...Object.entries(opts).map(([k, v]) => `--opt=${k}=${Array.isArray(v) ? v.join(',') : v}`), ...common];
}

function runTorch(cmd: string[]): { train: number; infer: number; engine: string } {
  const script = cmd[0];
  const r = spawnSync('/usr/bin/python3', cmd, { encoding: 'utf8' });
  if (r.status !== 0) throw new UserError(`--torch: ${script} failed (install with apt-get install -y python3-torch): ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  const j = JSON.parse(line) as { train_images_per_s: number; infer_images_per_s: number; engine: string };
  return { train: j.train_images_per_s, infer: j.infer_images_per_s, engine: j.engine };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const { size, batch, base, depth, steps } = args;
  const backend = args.backend as BackendName;
  if (args.threads !== undefined) process.env.SEMSEG_WASM_THREADS = String(args.threads);
  const info = await initBackend(backend);
  const opts = Object.fromEntries(args.opt.map((o) => {
    const eq = o.indexOf('=');
    if (eq <= 0) throw new UserError(`--opt '${o}': expected key=value`);
    return [o.slice(0, eq), yaml.load(o.slice(eq + 1))];
  }));
  const def = getModelDefinition(args.model);
  const unetLike = 'base' in def.options.shape && 'depth' in def.options.shape;
  const modelKeys = { name: args.model, ...(unetLike ? { base, depth } : {}), ...opts };
  const torchCmd = args.torch ? torchCommand(args.model, opts, size, batch, base, depth, steps) : [];
  const cfg = parseConfig({
    backend,
    model: modelKeys,
    data: { size: [size, size], num_classes: 2 },
    training: { batch_size: batch, optimizer: { name: 'adam', lr: 0.001 } },
  });
  const model = getModel(cfg);
  const params = model.trainableWeights.reduce((s, w) => s + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);
  const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
  const b = syntheticBatch(batch, size);
  let peak = 0;
  const sampleRss = () => { peak = Math.max(peak, process.memoryUsage().rss); };

  await step(b); // warm-up: kernels, optimizer slots
  const x = tf.tensor4d(b.images, [batch, size, size, 3]);
  // Read outside tidy (tidy walks a returned typed array element by element), and
  // asynchronously: webgpu under Node has no synchronous reads.
  const infer = async () => { const y = tf.tidy(() => model.predict(x) as tf.Tensor); await y.data(); y.dispose(); };
  await infer();
  const afterFirst = tf.memory().numTensors;
  const timed = async (fn: () => Promise<unknown>) => {
    const secs: number[] = [];
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      await fn();
      secs.push((performance.now() - t0) / 1000);
      sampleRss();
    }
    return secs;
  };
  // With --torch, rounds alternate ours and PyTorch, and the ratio is the median of
  // the rounds' ratios: this machine's speed drifts by 20% over tens of seconds.
  const rounds = args.torch ? args.rounds : 1;
  const trainS: number[] = [];
  const inferS: number[] = [];
  const torchRounds: Array<{ train: number; infer: number; trainRatio: number; inferRatio: number; engine: string }> = [];
  for (let r = 0; r < rounds; r++) {
    const tr = await timed(() => step(b));
    const inf = await timed(infer);
    trainS.push(...tr);
    inferS.push(...inf);
    if (args.torch) {
      const t = runTorch(torchCmd);
      torchRounds.push({ ...t, trainRatio: batch / median(tr) / t.train, inferRatio: batch / median(inf) / t.infer });
    }
  }
  const leaked = tf.memory().numTensors - afterFirst;

  const out: Record<string, unknown> = {
    backend: info.name,
    threads: info.description.match(/(\d+) thread/)?.[1] ? Number(info.description.match(/(\d+) thread/)![1]) : undefined,
    model: args.model, options: unetLike ? { base, depth, ...opts } : opts, size, batch, params,
    gflops_per_image: +((2 * (await modelMacs(model, size, size))) / 1e9).toFixed(3),
    train_images_per_s: +(batch / median(trainS)).toFixed(2),
    infer_images_per_s: +(batch / median(inferS)).toFixed(2),
  };
  if (args.profile) {
    out.profile_train = await profileKernels(() => step(b));
    out.profile_infer = await profileKernels(infer);
  }
  x.dispose();
  step.dispose();
  model.dispose();

  if (args.data) {
    const d = await measureDataPipeline({
      size, batch, images: args['data-images'], src: Math.max(256, size), workers: 2, realRoot: '', threads: true, epochs: 1,
    });
    out.data_images_per_s = d.data_images_per_s;
  }
  sampleRss();
  out.peak_rss_mb = Math.round(Math.max(peak, (process.resourceUsage().maxRSS ?? 0) * 1024) / 2 ** 20);
  out.tensors_leaked = leaked;
  if (args.torch) {
    const pick = (f: (t: typeof torchRounds[number]) => number) => median(torchRounds.map(f));
    out.torch = torchRounds[0].engine;
    out.torch_train_images_per_s = +pick((t) => t.train).toFixed(2);
    out.torch_infer_images_per_s = +pick((t) => t.infer).toFixed(2);
    out.train_ratio = +pick((t) => t.trainRatio).toFixed(3);
    out.infer_ratio = +pick((t) => t.inferRatio).toFixed(3);
    out.rounds = rounds;
  }
  console.log(args.json ? JSON.stringify(out) : out);
}

// The bench bundle's entry as well (bench/gpu_check.sh), hence not isMainModule.
if (require.main === module) {
  main().then(() => exitWith(0), (err) => {
    if (err instanceof UserError) console.error(`error: ${err.message}`);
    else if (isAllocationFailure(err)) console.error(`error: out of memory (${String((err as Error).message ?? err).split('\n')[0]}): lower --batch or --size`);
    else console.error(err);
    void exitWith(1);
  });
}
