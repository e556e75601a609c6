// Training / inference / data throughput of a registered model (U-Net by default) with the
// project's real train step, loss and optimizer; optionally side by side with its PyTorch
// twin on this machine, and with its ONNX export on ONNX Runtime.
//   npm run bench -- --size 128 --batch 4 --base 16 --depth 4 --json [--torch] [--backend wasm|webgpu|...]
//     [--model NAME|a,b|all] [--opt key=value ...] [--steps 5] [--rounds 3] [--threads 2] [--data-images 64] [--no-data]
//     [--profile] [--runtime onnx]
// --model picks the architecture (a list, or `all`: one result each, then a table); --opt
// sets its `model:` keys (--base and --depth are the U-Nets'). The PyTorch side is
// ../shared/bench/torch_unet.py for the U-Net, else the model's twin in bench/torch_models/.
// --runtime onnx also times inference of the model's ONNX export (the graph `npx
// export-model --format onnx` writes) on ONNX Runtime's CPU kernels (onnxruntime-node,
// SEMSEG_ORT_THREADS or every core), called as predict calls it (a TF.js tensor in and out),
// in the same rounds; with --torch, PyTorch gets the same thread count and, as ONNX Runtime,
// waits without spinning (OMP_WAIT_POLICY=PASSIVE unless set).
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
import { registeredModels } from '../models/registry';
import { portableModel } from '../engine/portable';
import { openOnnx, ortThreads } from '../engine/onnx_runtime';
import type { Runtime } from '../engine/inference';
import { lowerModel, ONNX_OPSET } from '../deploy/onnx/lower';
import { encodeModel } from '../deploy/onnx/proto';

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
    .option('model', { type: 'string', default: 'unet', describe: 'a registered model (models/<name>.ts), a comma-separated list, or all' })
    .option('opt', { type: 'string', array: true, default: [] as string[], describe: "the model's own options, key=value" })
    .option('steps', { type: 'number', default: 5, coerce: positive('steps') })
    .option('backend', { type: 'string', default: 'wasm', choices: ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'] })
    .option('threads', { type: 'number', describe: 'wasm threads (sets SEMSEG_WASM_THREADS)', coerce: positive('threads') })
    .option('data-images', { type: 'number', default: 64, coerce: positive('data-images') })
    .option('data', { type: 'boolean', default: true, describe: '--no-data skips the data-pipeline timing' })
    .option('json', { type: 'boolean', default: false })
    .option('torch', { type: 'boolean', default: false, describe: 'also run ../shared/bench/torch_unet.py' })
    .option('profile', { type: 'boolean', default: false, describe: 'per-kernel ms and kernel counts' })
    .option('rounds', { type: 'number', default: 3, coerce: positive('rounds'), describe: 'with --torch or --runtime onnx: alternating rounds of ours, ONNX Runtime and PyTorch' })
    .option('runtime', { type: 'string', default: 'tfjs', choices: ['tfjs', 'onnx'], describe: 'onnx: also time inference of the ONNX export on ONNX Runtime (onnxruntime-node)' })
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
function torchCommand(model: string, opts: Record<string, unknown>, size: number, batch: number, base: number, depth: number, steps: number, threads?: number): string[] {
  const common = ['--size', String(size), '--batch', String(batch), '--steps', String(steps), '--json', ...(threads ? ['--threads', String(threads)] : [])];
  if (model === 'unet' && Object.keys(opts).length === 0) {
    const script = torchScript();
    if (!script) throw new UserError(`--torch: ${TORCH_SCRIPT} not found`);
    return [script, '--base', String(base), '--depth', String(depth), ...common];
  }
  return [TWINS, model, ...Object.entries(opts).map(([k, v]) => `--opt=${k}=${Array.isArray(v) ? v.join(',') : v}`), ...common];
}

function runTorch(cmd: string[], passive: boolean): { train: number; infer: number; engine: string } {
  const script = cmd[0];
  // Beside ONNX Runtime, which does not spin-wait (engine/onnx_runtime.ts), PyTorch's OpenMP
  // threads do not either, unless OMP_WAIT_POLICY says otherwise: on a busy machine spinning
  // cost it 15x (U-Net 128x128 inference, 4 against 64 img/s).
  const env = passive && !process.env.OMP_WAIT_POLICY ? { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' } : process.env;
  const r = spawnSync('/usr/bin/python3', cmd, { encoding: 'utf8', env });
  if (r.status !== 0) throw new UserError(`--torch: ${script} failed (install with apt-get install -y python3-torch): ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  const j = JSON.parse(line) as { train_images_per_s: number; infer_images_per_s: number; engine: string };
  return { train: j.train_images_per_s, infer: j.infer_images_per_s, engine: j.engine };
}

/** The model's ONNX export (as `npx export-model --format onnx` lowers it) opened on ONNX Runtime. */
async function onnxRuntime(model: tf.LayersModel, name: string, size: number): Promise<Runtime> {
  const portable = await portableModel(model, [size, size], getModelDefinition(name));
  const bytes = encodeModel({ opset: ONNX_OPSET, producer: { name: 'bench', version: '0' }, graph: lowerModel(portable), metadata: {} });
  portable.dispose();
  return openOnnx(`${name}.onnx (bench)`, { bytes, size: [size, size] });
}

type Args = ReturnType<typeof parseArgs>;

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.threads !== undefined) process.env.SEMSEG_WASM_THREADS = String(args.threads);
  const info = await initBackend(args.backend as BackendName);
  const names = args.model === 'all' ? registeredModels() : args.model.split(',').map((m) => m.trim());
  const results: Record<string, unknown>[] = [];
  for (const [i, name] of names.entries()) {
    // The data pipeline does not depend on the model: timed once.
    const out = await benchModel(args, name, info, i === 0 && args.data);
    results.push(out);
    console.log(args.json ? JSON.stringify(out) : out);
  }
  if (names.length > 1 && !args.json) console.log(table(results));
}

/** Inference images/s per model, a markdown table: TF.js, ONNX Runtime and PyTorch where timed. */
function table(rows: Record<string, unknown>[]): string {
  const cols: [string, string][] = [['model', 'model'], ['gflops_per_image', 'GFLOP/image'], ['infer_images_per_s', 'TF.js img/s'], ['onnx_infer_images_per_s', 'ONNX Runtime img/s'], ['torch_infer_images_per_s', 'PyTorch img/s'], ['infer_ratio', 'TF.js / PyTorch'], ['onnx_infer_ratio', 'ONNX Runtime / PyTorch']];
  const used = cols.filter(([k]) => rows.some((r) => r[k] !== undefined));
  const line = (cells: unknown[]) => `| ${cells.map((c) => (c === undefined ? '' : String(c))).join(' | ')} |`;
  return [line(used.map(([, h]) => h)), line(used.map(() => '---')), ...rows.map((r) => line(used.map(([k]) => r[k])))].join('\n');
}

async function benchModel(args: Args, modelName: string, info: Awaited<ReturnType<typeof initBackend>>, data: boolean): Promise<Record<string, unknown>> {
  const { size, batch, base, depth, steps } = args;
  const backend = args.backend as BackendName;
  const onnx = args.runtime === 'onnx';
  const opts = Object.fromEntries(args.opt.map((o) => {
    const eq = o.indexOf('=');
    if (eq <= 0) throw new UserError(`--opt '${o}': expected key=value`);
    return [o.slice(0, eq), yaml.load(o.slice(eq + 1))];
  }));
  const def = getModelDefinition(modelName);
  const unetLike = 'base' in def.options.shape && 'depth' in def.options.shape;
  const modelKeys = { name: modelName, ...(unetLike ? { base, depth } : {}), ...opts };
  // Beside ONNX Runtime, PyTorch gets the same threads (its scripts default to 2).
  const torchCmd = args.torch ? torchCommand(modelName, opts, size, batch, base, depth, steps, onnx ? ortThreads() : undefined) : [];
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
  const ort = onnx ? await onnxRuntime(model, modelName, size) : null;
  const ortInfer = async () => { const y = await ort!.logits(x); y.dispose(); };
  if (ort) await ortInfer(); // warm-up: ONNX Runtime plans its memory on the first run
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
  const rounds = args.torch || onnx ? args.rounds : 1;
  const trainS: number[] = [];
  const inferS: number[] = [];
  const ortS: number[] = [];
  const torchRounds: Array<{ train: number; infer: number; trainRatio: number; inferRatio: number; onnxRatio: number; engine: string }> = [];
  const onnxVsTfjs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const tr = await timed(() => step(b));
    const inf = await timed(infer);
    const oi = ort ? await timed(ortInfer) : [];
    trainS.push(...tr);
    inferS.push(...inf);
    ortS.push(...oi);
    if (ort) onnxVsTfjs.push(median(inf) / median(oi));
    if (args.torch) {
      const t = runTorch(torchCmd, onnx);
      torchRounds.push({ ...t, trainRatio: batch / median(tr) / t.train, inferRatio: batch / median(inf) / t.infer, onnxRatio: ort ? batch / median(oi) / t.infer : NaN });
    }
  }
  const leaked = tf.memory().numTensors - afterFirst;

  const out: Record<string, unknown> = {
    backend: info.name,
    threads: info.description.match(/(\d+) thread/)?.[1] ? Number(info.description.match(/(\d+) thread/)![1]) : undefined,
    model: modelName, options: unetLike ? { base, depth, ...opts } : opts, size, batch, params,
    gflops_per_image: +((2 * (await modelMacs(model, size, size))) / 1e9).toFixed(3),
    train_images_per_s: +(batch / median(trainS)).toFixed(2),
    infer_images_per_s: +(batch / median(inferS)).toFixed(2),
  };
  if (ort) {
    out.onnx = ort.description;
    out.onnx_infer_images_per_s = +(batch / median(ortS)).toFixed(2);
    out.onnx_vs_tfjs = +median(onnxVsTfjs).toFixed(3);
    ort.dispose();
  }
  if (args.profile) {
    out.profile_train = await profileKernels(() => step(b));
    out.profile_infer = await profileKernels(infer);
  }
  x.dispose();
  step.dispose();
  model.dispose();

  if (data) {
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
    if (ort) out.onnx_infer_ratio = +pick((t) => t.onnxRatio).toFixed(3);
    out.rounds = rounds;
  }
  return out;
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
