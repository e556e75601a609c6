// Micro-benchmark of one conv layer's forward + backward on the wasm backend:
// our XNNPACK-based gradient kernels vs the stock wasm Conv2DBackpropInput.
//   npx tsx bench/conv_grads.ts --run [n h w cin cout k stride]
// Without --run it only runs its (tiny) self-test, like every module here.
import * as tf from '../backends/tf';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import yargs from 'yargs';
import { UserError } from '../utils/errors';
import { registerWasmGradKernels, seededValues } from '../backends/wasm_kernels';
import { SelfTest, runIfMain, isMainModule } from '../utils/self_test';

export interface BenchShape { n: number; h: number; w: number; cin: number; cout: number; k: number; stride: number }

// Captured before registerWasmGradKernels replaces it.
const stockInput = tf.getKernel('Conv2DBackpropInput', 'wasm');

function useInputKernel(stock: boolean): void {
  registerWasmGradKernels();
  if (!stock) return;
  if (!stockInput) throw new Error('stock wasm Conv2DBackpropInput not found');
  tf.unregisterKernel('Conv2DBackpropInput', 'wasm');
  tf.registerKernel(stockInput);
}

function restoreOurs(): void {
  tf.unregisterKernel('Conv2DBackpropInput', 'wasm');
  tf.unregisterKernel('Conv2DBackpropFilter', 'wasm');
  if (stockInput) tf.registerKernel(stockInput);
  registerWasmGradKernels();
}

/** Fastest wall time (ms) of `fn` over `reps` runs after one warm-up; the min is
 * the least disturbed by other processes on this shared 2-core machine. */
function timeMs(fn: () => void, reps: number): number {
  fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[0];
}

export interface BenchResult { fwd: number; dx: number; dw: number; fwdBwd: number }

/** Times forward, each gradient kernel, and a full fwd+bwd step on wasm. */
export function benchLayer(s: BenchShape, stockInputKernel: boolean, reps: number): BenchResult {
  useInputKernel(stockInputKernel);
  try {
    const x = tf.tensor4d(seededValues(s.n * s.h * s.w * s.cin, 1), [s.n, s.h, s.w, s.cin]);
    const f = tf.tensor4d(seededValues(s.k * s.k * s.cin * s.cout, 2), [s.k, s.k, s.cin, s.cout]);
    const y = tf.conv2d(x, f, s.stride, 'same');
    const dy = tf.onesLike(y);
    const sync = (t: tf.Tensor) => { t.dataSync(); t.dispose(); };
    const attrs = { strides: s.stride, pad: 'same', dataFormat: 'NHWC', dimRoundingMode: undefined };
    const run = (name: string, inputs: tf.NamedTensorMap, a: object) =>
      tf.engine().runKernel(name, inputs, a as unknown as tf.NamedAttrMap) as tf.Tensor;
    // Seeding the backward pass with dy keeps a sum's broadcast (a slow Tile on
    // wasm) out of the timing.
    const grad = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s.stride, 'same'));
    const res: BenchResult = {
      fwd: timeMs(() => sync(tf.conv2d(x, f, s.stride, 'same')), reps),
      dx: timeMs(() => sync(run('Conv2DBackpropInput', { dy, filter: f }, { ...attrs, inputShape: x.shape })), reps),
      dw: timeMs(() => sync(run('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: f.shape })), reps),
      fwdBwd: timeMs(() => { const g = grad([x, f], dy); g.forEach(sync); }, reps),
    };
    tf.dispose([x, f, y, dy]);
    return res;
  } finally {
    if (stockInputKernel) restoreOurs();
  }
}

async function main(): Promise<void> {
  const args = yargs(process.argv.slice(2))
    .usage('npx tsx bench/conv_grads.ts --run [n h w cin cout k stride]')
    .option('run', { type: 'boolean', demandOption: true })
    .strictOptions() // the shape comes as positional numbers
    .fail((msg, err) => { throw new UserError((err ? err.message : msg).replace(/\s*\n\s*/g, ' ')); })
    .parseSync();
  const nums = args._.map(Number);
  if (nums.some((v) => !Number.isInteger(v) || v <= 0)) throw new UserError(`shape must be positive integers [n h w cin cout k stride], got ${args._.join(' ')}`);
  const [n = 4, h = 128, w = 128, cin = 16, cout = 16, k = 3, stride = 1] = nums;
  const shape = { n, h, w, cin, cout, k, stride };
  await tf.setBackend('wasm');
  const reps = 7;
  const ours = benchLayer(shape, false, reps);
  const stock = benchLayer(shape, true, reps);
  const fmt = (r: BenchResult) =>
    `fwd ${r.fwd.toFixed(1)} ms, dx ${r.dx.toFixed(1)} ms, dW ${r.dw.toFixed(1)} ms, fwd+bwd ${r.fwdBwd.toFixed(1)} ms`;
  console.log(`conv [${n},${h},${w},${cin}] x ${k}x${k}x${cin}x${cout} stride ${stride} 'same' on wasm (min of ${reps})`);
  console.log(`  ours:                ${fmt(ours)}`);
  console.log(`  stock dx (ours dW):  ${fmt(stock)}`);
}

export const selfTest: SelfTest = {
  'bench runs on a tiny layer without leaking': async () => {
    await tf.setBackend('wasm');
    const before = tf.memory().numTensors;
    const shape = { n: 1, h: 9, w: 7, cin: 2, cout: 3, k: 3, stride: 2 };
    for (const stock of [false, true]) {
      const r = benchLayer(shape, stock, 1);
      assert.ok(r.fwdBwd >= 0 && r.dx >= 0);
    }
    assert.equal(tf.memory().numTensors, before);
  },
};

if (isMainModule(module) && process.argv.includes('--run')) {
  void main().then(() => process.exit(0), (err) => {
    console.error(err instanceof UserError ? `error: ${err.message}` : err);
    process.exit(1);
  });
} else {
  runIfMain(module, selfTest);
}
