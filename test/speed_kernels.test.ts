// The speed work: FastBatchNorm (models/batch_norm.ts) against tfjs's own batch norm on
// wasm and cpu, and the threaded wasm build (backends/wasm_threads.ts) against one thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import * as tf from '../backends/tf';
import '@tensorflow/tfjs-backend-wasm';
import { compareWithTfjs } from '../models/layers/batch_norm';
import { onBackend, registerWasmGradKernels } from '../backends/wasm_kernels';

const TOL = 1e-4;

test('FastBatchNorm matches tf.layers.batchNormalization on cpu and wasm', async () => {
  for (const backend of ['cpu', 'wasm']) {
    for (const shape of [[2, 5, 7, 3], [4, 16, 16, 8], [1, 3, 3, 1], [6, 5]]) {
      const e = await onBackend(backend, () => compareWithTfjs(shape, shape[1]));
      for (const [k, v] of Object.entries(e)) assert.ok(v <= TOL, `${backend} ${JSON.stringify(shape)} ${k}: rel diff ${v}`);
    }
  }
});

test('FastBatchNorm inference (wasm: one depthwise affine) matches the tfjs layer with trained statistics', async () => {
  const { fastBatchNorm } = await import('../models/layers/batch_norm');
  const { seededValues } = await import('../utils/rng');
  for (const backend of ['cpu', 'wasm']) {
    await onBackend(backend, () => {
      for (const shape of [[2, 5, 7, 3], [3, 16], [1, 4, 4, 32]]) {
        const c = shape[shape.length - 1];
        const x = tf.tensor(seededValues(shape.reduce((a, b) => a * b, 1), 7).map((v) => 3 * v + 1), shape);
        const stats = [seededValues(c, 1).map((v) => v + 1.5), seededValues(c, 2), seededValues(c, 3).map((v) => v * 0.5), seededValues(c, 4).map((v) => v + 1.2)];
        const ys = [fastBatchNorm({ epsilon: 1e-3 }), tf.layers.batchNormalization({ epsilon: 1e-3 })].map((layer) => {
          layer.apply(x);
          // gamma, beta, moving mean, moving variance: non-trivial, so every term counts.
          layer.setWeights(stats.map((v) => tf.tensor1d(v)));
          const y = layer.apply(x) as tf.Tensor;
          const out = y.dataSync() as Float32Array;
          tf.dispose(y);
          layer.dispose();
          return out;
        });
        let d = 0;
        for (let i = 0; i < ys[0].length; i++) d = Math.max(d, Math.abs(ys[0][i] - ys[1][i]) / Math.max(1, Math.abs(ys[1][i])));
        assert.ok(d <= 1e-5, `${backend} ${JSON.stringify(shape)}: rel diff ${d}`);
        x.dispose();
      }
    });
  }
});

test('U-Net training step gives the same loss with FastBatchNorm as with tfjs batch norm', async () => {
  // Swaps FastBatchNorm's training call for the base class's one on the same model.
  const { getModel } = await import('../models/registry');
  const { parseConfig } = await import('../config/resolve');
  const { buildLoss } = await import('../training/losses');
  const { FastBatchNorm } = await import('../models/layers/batch_norm');
  registerWasmGradKernels();
  await onBackend('wasm', () => {
    const cfg = parseConfig({ model: { base: 4, depth: 2 }, data: { size: [16, 16] } });
    const model = getModel(cfg);
    const loss = buildLoss(cfg);
    const x = tf.randomNormal([2, 16, 16, 3], 0, 1, 'float32', 5);
    const y = tf.tensor3d(Int32Array.from({ length: 2 * 16 * 16 }, (_, i) => (i * 7) % 3 === 0 ? 1 : 0), [2, 16, 16], 'int32');
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const run = () => {
      const { value, grads } = tf.variableGrads(() => loss(model.apply(x, { training: true }) as tf.Tensor4D, y), vars);
      const out = [value.dataSync()[0], ...vars.map((v) => grads[v.name].dataSync())];
      tf.dispose([value, grads]);
      return out as [number, ...Float32Array[]];
    };
    const ours = run();
    const proto = FastBatchNorm.prototype as unknown as { call: unknown };
    const own = proto.call;
    proto.call = Object.getPrototypeOf(FastBatchNorm.prototype).call;
    let ref: ReturnType<typeof run>;
    try {
      ref = run();
    } finally {
      proto.call = own;
    }
    assert.ok(Math.abs(ours[0] - ref[0]) <= TOL * Math.abs(ref[0]), `loss ${ours[0]} vs ${ref[0]}`);
    for (let i = 1; i < ours.length; i++) {
      const a = ours[i] as Float32Array;
      const b = ref[i] as Float32Array;
      let d = 0;
      let m = 1e-3;
      for (let j = 0; j < a.length; j++) { d = Math.max(d, Math.abs(a[j] - b[j])); m = Math.max(m, Math.abs(b[j])); }
      assert.ok(d / m <= 1e-3, `grad of ${vars[i - 1].name}: rel diff ${d / m}`);
    }
    tf.dispose([x, y]);
    model.dispose();
  });
});

/** Two training steps of a small U-Net in a child process; prints thread count and a digest. */
function trainDigest(threads: number): { threads: number; digest: string } {
  const root = path.resolve(__dirname, '..');
  const ext = path.extname(__filename);
  const mod = (p: string) => JSON.stringify(path.join(root, p + ext));
  const script = `
    const tf = require(${mod('backends/tf')});
    const { initBackend } = require(${mod('backends/index')});
    const { wasmThreads } = require(${mod('backends/wasm_threads')});
    const { getModel } = require(${mod('models/registry')});
    const { parseConfig } = require(${mod('config/resolve')});
    const { buildLoss } = require(${mod('training/losses')});
    const { createOptimizer } = require(${mod('training/optimizers')});
    const { makeTrainStep } = require(${mod('engine/train_step')});
    const { seededValues } = require(${mod('backends/wasm_kernels')});
    const crypto = require('node:crypto');
    (async () => {
      await initBackend('wasm');
      const cfg = parseConfig({ model: { base: 8, depth: 3 }, data: { size: [48, 48] }, training: { batch_size: 2 } });
      const model = getModel(cfg);
      model.trainableWeights.forEach((w, i) => {
        const v = w.read();
        v.assign(tf.tensor(seededValues(v.size, i + 1).map((x) => x * 0.2), v.shape));
      });
      const step = makeTrainStep(model, buildLoss(cfg), createOptimizer(cfg));
      const n = 2, h = 48, w = 48;
      const batch = { images: seededValues(n * h * w * 3, 99), masks: Uint8Array.from(seededValues(n * h * w, 98), (v) => v > 0 ? 1 : 0), n, h, w, ids: ['a', 'b'] };
      const losses = [await step(batch), await step(batch)];
      const hash = crypto.createHash('sha1');
      for (const wt of model.getWeights()) hash.update(Buffer.from(wt.dataSync().buffer));
      console.log(JSON.stringify({ threads: wasmThreads(), digest: losses.join(',') + ':' + hash.digest('hex') }));
      process.exit(0);
    })();`;
  const out = execFileSync(process.execPath, [...process.execArgv.filter((a) => !a.startsWith('--test')), '-e', script], {
    env: { ...process.env, SEMSEG_WASM_THREADS: String(threads) }, encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

test('two wasm threads train bit-identically to one thread', () => {
  const one = trainDigest(1);
  const two = trainDigest(2);
  assert.equal(one.threads, 1);
  assert.equal(two.threads, 2, 'the threaded build really runs 2 threads');
  assert.equal(two.digest, one.digest);
});
