// The webgpu backend end to end, against the cpu and wasm backends. Without a GPU it
// runs on Mesa's lavapipe (SEMSEG_WEBGPU_SOFTWARE=1, see README "Backends"); where no
// adapter exists at all these tests fail, naming what to install: none is skipped.
//   - every kernel this project registers or replaces for webgpu, at U-Net shapes;
//   - one full train step: loss, every gradient, updated weights, optimizer slots;
//   - a short run whose per-step losses match wasm's, then evaluate, predict,
//     export-model and --resume on webgpu;
//   - a provoked device error ends a run with one line, saving nothing.
process.env.SEMSEG_WEBGPU_SOFTWARE = '1'; // before any backend starts; children inherit it

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import * as tf from '../backends/tf';
import { probeAdapter } from '../backends/webgpu';
import { checkDevice } from '../backends/webgpu_errors';
import { initBackend } from '../backends';
import { FilterCase, filterGradPair, relError } from '../backends/conv_grads';
import { fastBatchNorm } from '../models/layers/batch_norm';
import { atrousCase, atrousWithGrads } from '../models/layers/atrous';
import { getModel, registeredModels } from '../models/registry';
import { loadConfig, parseConfig, resolveRun } from '../config/resolve';
import { buildLoss, registeredLosses } from '../training/losses';
import { createOptimizer } from '../training/optimizers';
import { makeTrainStep } from '../engine/train_step';
import { snapshotWeights } from '../storage/checkpoint';
import { loadCheckpoint } from '../storage/checkpoint';
import { seededValues } from '../utils/rng';
import { syntheticBatch } from '../bench/bench';
import { train } from '../engine/trainer';
import { runExitHooks } from '../utils/exit';
import { assertOk, killLeftovers, show, start, tinyConfig, tmpDir, writeConfig } from './helpers/cli';
import { stepFaultEnv } from './helpers/step_fault';
import { stopAt } from './helpers/stop_at';

const INSTALL = 'no webgpu adapter; on Debian 12 install Mesa 25 from bookworm-backports (apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1, README "Backends")';
const dirs: string[] = [];
after(async () => {
  killLeftovers();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  await runExitHooks(); // releases the device: Dawn crashes a process that exits with one alive
});

before(async () => {
  const probe = await probeAdapter({ allowSoftware: true });
  assert.ok(probe.ok, `${INSTALL}: ${probe.ok ? '' : probe.reason}`);
  await initBackend('cpu'); // the reference, with the project's fix of cpu's nearest-upsampling gradient
  await initBackend('wasm'); // the yardstick of float rounding for whole architectures
  const info = await initBackend('webgpu');
  assert.equal(info.name, 'webgpu');
});

/** stderr without the run's own `data: ... N validation pairs` line: what is left would be Dawn's or an error. */
const dawnLines = (stderr: string) => stderr.split('\n').filter((l) => !/^data: /.test(l)).join('\n');

/** Runs `fn` on `backend` and reads every returned tensor asynchronously. */
async function on(backend: 'webgpu' | 'cpu', fn: () => tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const ts = fn();
  const out = await Promise.all(ts.map(async (t) => Float32Array.from(await t.data())));
  tf.dispose(ts);
  if (backend === 'webgpu') checkDevice(`a check on webgpu`); // a shader that failed to compile reads as zeros
  return out;
}

function assertClose(got: Float32Array[], want: Float32Array[], tol: number, what: string): void {
  assert.equal(got.length, want.length);
  got.forEach((g, i) => {
    const e = relError(g, want[i]);
    assert.ok(e <= tol, `${what} output ${i}: rel err ${e} > ${tol}`);
  });
}

/** Every number in `got` within `tol` of the one at the same place in `want`. */
function assertNumbersClose(got: unknown, want: unknown, tol: number, where: string): void {
  if (typeof want === 'number') {
    assert.equal(typeof got, 'number', where);
    assert.ok(Math.abs((got as number) - want) <= tol, `${where}: ${got} vs ${want}`);
  } else if (want !== null && typeof want === 'object') {
    assert.deepEqual(Object.keys(got as object).sort(), Object.keys(want).sort(), where);
    for (const [k, v] of Object.entries(want)) assertNumbersClose((got as Record<string, unknown>)[k], v, tol, `${where}.${k}`);
  }
}

describe('webgpu kernels against cpu', () => {
  test('batch norm, training mode: output, dx, dGamma, dBeta and moving statistics', async () => {
    // U-Net shapes and odd ones; batch 1-3.
    for (const shape of [[2, 9, 7, 3], [1, 16, 16, 16], [3, 5, 11, 8], [2, 32, 32, 32], [4, 48, 48, 8]]) { // the last in 3 segments of rows
      const c = shape[3];
      const size = shape.reduce((a, b) => a * b, 1);
      const run = () => {
        const layer = fastBatchNorm({ momentum: 0.9, epsilon: 1e-5 });
        const x = tf.tensor(seededValues(size, 3).map((v) => 2 * v + 0.7), shape);
        const r = tf.tensor(seededValues(size, 4), shape);
        layer.apply(x);
        const [gamma, beta] = layer.trainableWeights.map((w) => w.read() as tf.Variable);
        gamma.assign(tf.tensor1d(seededValues(c, 5).map((v) => 1 + v / 2)));
        beta.assign(tf.tensor1d(seededValues(c, 6)));
        const f = (xx: tf.Tensor) => tf.sum(tf.mul(layer.apply(xx, { training: true }) as tf.Tensor, r)) as tf.Scalar;
        const y = layer.apply(x, { training: true }) as tf.Tensor;
        const { grads } = tf.variableGrads(() => f(x), [gamma, beta]);
        const dx = tf.grad(f)(x);
        const moving = layer.nonTrainableWeights.map((w) => w.read().clone());
        const out = [y, dx, grads[gamma.name], grads[beta.name], ...moving];
        layer.dispose();
        tf.dispose([x, r]);
        return out;
      };
      assertClose(await on('webgpu', run), await on('cpu', run), 1e-4, `batch norm ${shape}`);
    }
  });

  test('atrous convolution (shifted taps, one 1x1 convolution) and its gradients', async () => {
    for (const [n, h, w, cin, cout, k, rate] of [[1, 9, 7, 3, 4, 3, 2], [2, 13, 11, 2, 3, 3, 3], [3, 8, 8, 4, 2, 3, 6]]) {
      const run = () => {
        const { x, filter, dy } = atrousCase(n, h, w, cin, cout, k);
        return atrousWithGrads(x, filter, dy, rate);
      };
      assertClose(await on('webgpu', run), await on('cpu', run), 1e-4, `atrous ${[n, h, w, cin, cout, k, rate]}`);
    }
  });

  test('depthwise convolution gradients (stock webgpu kernels) at strides 1 and 2, multipliers 1 and 2', async () => {
    for (const [n, h, w, c, mult, k, stride, pad] of [[1, 9, 7, 3, 1, 3, 1, 'same'], [2, 8, 11, 4, 2, 3, 2, 'same'], [3, 10, 9, 2, 1, 5, 2, 'valid']] as const) {
      const run = () => {
        const x = tf.tensor4d(seededValues(n * h * w * c, 1), [n, h, w, c]);
        const f = tf.tensor4d(seededValues(k * k * c * mult, 2), [k, k, c, mult]);
        const y = tf.depthwiseConv2d(x, f, stride, pad);
        const dy = tf.tensor(seededValues(y.size, 3), y.shape);
        return tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, stride, pad), dy)))([x, f]);
      };
      assertClose(await on('webgpu', run), await on('cpu', run), 1e-4, `depthwise ${[n, h, w, c, mult, k, stride, pad]}`);
    }
  });

  test('every loss, summed, and its gradient (Lovász: TopK, gatherND, cumsum, scatterND), with and without OHEM and boundary weights', async () => {
    const boundary = { weight: 2, width: 1 };
    for (const [c, k, ohem, b] of [[1, 2, undefined, undefined], [5, 5, undefined, undefined], [1, 2, { thresh: 0.6, min_kept: 50 }, boundary], [5, 5, { thresh: 0.3, min_kept: 200 }, boundary]] as const) {
      const names = registeredLosses().join('+');
      const f = buildLoss(parseConfig({ data: { num_classes: k }, training: { loss: { name: names, ohem, boundary: b, class_weights: Array.from({ length: k }, (_, i) => 1 + i / 2) } } }));
      const run = () => {
        const x = tf.mul(tf.tensor4d(seededValues(2 * 13 * 17 * c, 4), [2, 13, 17, c]), 3);
        // a tenth of the pixels ignored, the rest spread over the k classes
        const u = Array.from(seededValues(2 * 13 * 17, 5), (v) => (v + 1) / 2);
        const lab = tf.tensor3d(u.map((v) => (v < 0.1 ? 255 : Math.min(k - 1, Math.floor(((v - 0.1) / 0.9) * k)))), [2, 13, 17], 'int32');
        const { value, grad } = tf.valueAndGrad((t: tf.Tensor) => f(t as tf.Tensor4D, lab))(x);
        return [value, grad];
      };
      assertClose(await on('webgpu', run), await on('cpu', run), 1e-4, `${names} with ${c} output(s), ohem ${JSON.stringify(ohem)}, boundary ${JSON.stringify(b)}`);
    }
  });

  test('AddN over more inputs than the device binds at once', async () => {
    for (const n of [2, 7, 8, 20, 45]) {
      const run = () => [tf.addN(Array.from({ length: n }, (_, i) => tf.tensor(seededValues(37, i), [37])))];
      assertClose(await on('webgpu', run), await on('cpu', run), 1e-6, `AddN of ${n}`);
    }
  });

  test('Conv2DBackpropFilter (im2col + matmul) at U-Net and ResNet shapes, strides, padding, odd sizes', async () => {
    const cases: FilterCase[] = [
      { n: 2, h: 9, w: 7, cin: 3, cout: 4, k: 3, stride: 2, pad: 'same' },
      { n: 1, h: 16, w: 16, cin: 16, cout: 16, k: 3, stride: 1, pad: 'same' },
      { n: 3, h: 13, w: 11, cin: 4, cout: 3, k: 5, stride: 2, pad: 'valid' },
      { n: 2, h: 8, w: 8, cin: 32, cout: 2, k: 1, stride: 1, pad: 'same' },
      { n: 2, h: 32, w: 30, cin: 3, cout: 16, k: 7, stride: 2, pad: 'same' }, // the ResNet stem
      { n: 2, h: 8, w: 8, cin: 16, cout: 8, k: 1, stride: 2, pad: 'same' }, // ResNet's strided shortcut
    ];
    await tf.setBackend('webgpu');
    for (const c of cases) {
      // filterGradPair reads synchronously: webgpu cannot, so the reference comes from cpu.
      const x = seededValues(c.n * c.h * c.w * c.cin, 1);
      const w = seededValues(c.k * c.k * c.cin * c.cout, 2);
      const dW = () => {
        const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.cin]);
        const wt = tf.tensor4d(w, [c.k, c.k, c.cin, c.cout]);
        const shape = tf.conv2d(xt, wt, c.stride, c.pad).shape;
        const dy = tf.tensor(seededValues(shape.reduce((a, b) => a * b, 1), 3), shape);
        return [tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(xt, v as tf.Tensor4D, c.stride, c.pad), dy)))(wt)];
      };
      assertClose(await on('webgpu', dW), await on('cpu', dW), 1e-4, `dW ${JSON.stringify(c)}`);
    }
    await tf.setBackend('cpu');
    const { ref, got } = filterGradPair(cases[0], 'kernel-matmul'); // the kernel function itself, on cpu
    assert.ok(relError(got, ref) <= 1e-4);
  });
});

describe('one train step on webgpu against cpu', () => {
  test('loss, every gradient, updated weights and Adam slots', async () => {
    const cfg = parseConfig({ model: { base: 4, depth: 2 }, data: { size: [24, 24] }, training: { batch_size: 2, optimizer: { name: 'adam', lr: 0.001 } } });
    const batch = syntheticBatch(2, 24);
    const results: Record<string, { loss: number; grads: Record<string, Float32Array>; weights: Record<string, Float32Array>; slots: Record<string, Float32Array> }> = {};
    for (const be of ['cpu', 'webgpu'] as const) {
      await tf.setBackend(be);
      const model = getModel(cfg);
      const lossFn = buildLoss(cfg);
      const x = tf.tensor4d(batch.images, [2, 24, 24, 3]);
      const y = tf.tensor3d(Int32Array.from(batch.masks), [2, 24, 24], 'int32');
      const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
      // Gradients as the step computes them, but read out before the update (training
      // mode also moves the BN statistics: take them from a clone of the model's weights).
      const before = await snapshotWeights(model);
      const { grads } = tf.variableGrads(() => lossFn(model.apply(x, { training: true }) as tf.Tensor4D, y), vars);
      const gradData: Record<string, Float32Array> = {};
      for (const w of model.trainableWeights) gradData[w.originalName] = Float32Array.from(await grads[(w.read() as tf.Variable).name].data());
      tf.dispose(Object.values(grads));
      // Put the weights back (the BN moving statistics moved), then one real step.
      for (const w of model.weights) w.write(tf.tensor(before.find((b) => b.name === w.originalName)!.values, w.shape as number[]));
      const opt = createOptimizer(cfg);
      const step = makeTrainStep(model, lossFn, opt);
      const loss = await step(batch);
      const weights = Object.fromEntries((await snapshotWeights(model)).map((w) => [w.name, w.values]));
      const slots = Object.fromEntries((await opt.getState()).tensors.map((t) => [t.name, t.values]));
      results[be] = { loss, grads: gradData, weights, slots };
      tf.dispose([x, y]);
      step.dispose();
      model.dispose();
    }
    const [cpu, gpu] = [results.cpu, results.webgpu];
    assert.ok(Math.abs(cpu.loss - gpu.loss) <= 1e-5 * Math.max(1, Math.abs(cpu.loss)), `loss ${gpu.loss} vs ${cpu.loss}`);
    assert.deepEqual(Object.keys(gpu.grads).sort(), Object.keys(cpu.grads).sort());
    for (const k of Object.keys(cpu.grads)) assert.ok(relError(gpu.grads[k], cpu.grads[k]) <= 1e-3, `gradient ${k}: ${relError(gpu.grads[k], cpu.grads[k])}`);
    assert.deepEqual(Object.keys(gpu.slots).sort(), Object.keys(cpu.slots).sort());
    for (const k of Object.keys(cpu.slots)) assert.ok(relError(gpu.slots[k], cpu.slots[k]) <= 1e-3, `slot ${k}: ${relError(gpu.slots[k], cpu.slots[k])}`);
    // Adam's first step moves each weight by ~lr whatever its gradient's size: 1e-5 is 1% of it.
    for (const k of Object.keys(cpu.weights)) assert.ok(relError(gpu.weights[k], cpu.weights[k]) <= 1e-5, `weight ${k}: ${relError(gpu.weights[k], cpu.weights[k])}`);
    await tf.setBackend('webgpu');
  });
});

describe('every architecture on webgpu against cpu', () => {
  // Each model's demo config at 32x32: the layers they add (depthwise convolutions and
  // their gradients, atrous convolution, pyramid pooling, bilinear upsampling) on webgpu.
  // Through 20+ batch-norm layers float rounding grows toward the input (to ~1e-2 at the
  // stem, where BN sees 2x1x1 maps), so the bound is what wasm, another correct backend,
  // differs from cpu by, and at least the 1e-2 that rounding reaches at the stem (with
  // dropout on, Fast-SCNN's depthwise kernels differed by up to 3.3e-3 on lavapipe where wasm
  // was at 1.7e-4 to 5.9e-4, varying with the masks): a wrong kernel is off by far more.
  const CONFIGS = [path.join(__dirname, '..', 'configs'), path.join(__dirname, '..', '..', 'configs')].find((d) => fs.existsSync(d))!;
  for (const name of registeredModels().filter((n) => n !== 'unet')) {
    test(`${name}: loss and every gradient of a training-mode forward pass, as close to cpu as wasm is`, async () => {
      const base = loadConfig(path.join(CONFIGS, `demo_${name}.yaml`));
      const cfg = parseConfig({ ...base, data: { ...base.data, size: [32, 32] }, training: { ...base.training, batch_size: 2 } });
      const batch = syntheticBatch(2, 32);
      const out: Record<string, { loss: number; grads: Record<string, Float32Array> }> = {};
      for (const be of ['cpu', 'wasm', 'webgpu'] as const) {
        await tf.setBackend(be);
        const model = getModel(cfg); // dropout on: its masks are drawn in JS, the same on every backend
        const lossFn = buildLoss(cfg);
        const x = tf.tensor4d(batch.images, [2, 32, 32, 3]);
        const y = tf.tensor3d(Int32Array.from(batch.masks), [2, 32, 32], 'int32');
        const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
        const { value, grads } = tf.variableGrads(() => lossFn(model.apply(x, { training: true }) as tf.Tensor4D, y), vars);
        const g: Record<string, Float32Array> = {};
        for (const w of model.trainableWeights) g[w.originalName] = Float32Array.from(await grads[(w.read() as tf.Variable).name].data());
        out[be] = { loss: (await value.data())[0], grads: g };
        tf.dispose([value, x, y, ...Object.values(grads)]);
        model.dispose();
      }
      const [cpu, wasm, gpu] = [out.cpu, out.wasm, out.webgpu];
      assert.ok(Math.abs(cpu.loss - gpu.loss) <= 1e-4 * Math.max(1, Math.abs(cpu.loss)), `loss ${gpu.loss} vs ${cpu.loss}`);
      assert.deepEqual(Object.keys(gpu.grads).sort(), Object.keys(cpu.grads).sort());
      for (const k of Object.keys(cpu.grads)) {
        const [e, bound] = [relError(gpu.grads[k], cpu.grads[k]), Math.max(1e-2, 4 * relError(wasm.grads[k], cpu.grads[k]))];
        assert.ok(e <= bound, `gradient ${k}: ${e} from cpu; wasm is ${relError(wasm.grads[k], cpu.grads[k])}`);
      }
      await tf.setBackend('webgpu');
    });
  }
});

describe('the commands on webgpu', () => {
  const TIMEOUT = 600_000;
  let dir: string;
  let config: string;
  const cmd = (c: 'train' | 'evaluate' | 'predict' | 'export', args: string[], env: NodeJS.ProcessEnv = {}) => start(c, args, { cwd: dir, env }).done;
  const history = (name: string, split = 'train') =>
    fs.readFileSync(path.join(dir, 'results', name, 'history.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.split === split);

  before(() => {
    dir = tmpDir('webgpu');
    dirs.push(dir);
    // Small, so that lavapipe trains it in seconds; print_interval 1 logs every step's loss.
    config = writeConfig(dir, tinyConfig(dir, {
      training: { epochs: 2, batch_size: 4, workers: 1, print_interval: 1, val_interval: 1, optimizer: { name: 'adam', lr: 0.003 } },
      data: { size: [32, 32], synthetic: { kind: 'lesion', train: 16, val: 8, image_size: 40 } },
    }));
  });

  test('train: per-step losses match wasm; evaluate and predict agree with wasm; export-model loads', { timeout: TIMEOUT }, async () => {
    const gpu = await cmd('train', ['--config', config, '--backend', 'webgpu', '--set', 'name=gpu']);
    assertOk(gpu);
    assert.match(gpu.stderr, /backend: webgpu \(Dawn, .*software adapter \(SEMSEG_WEBGPU_SOFTWARE=1\)/);
    assert.doesNotMatch(dawnLines(gpu.stderr), /validation|Invalid|error/i, show(gpu));
    const cpu = await cmd('train', ['--config', config, '--backend', 'wasm', '--set', 'name=wasm']);
    assertOk(cpu);
    const [g, w] = [history('gpu'), history('wasm')];
    assert.equal(g.length, 8);
    assert.deepEqual(g.map((r) => r.step), w.map((r) => r.step));
    g.forEach((r, i) => assert.ok(Math.abs(r.loss - w[i].loss) <= 2e-3 * Math.max(1, w[i].loss), `step ${r.step}: loss ${r.loss} on webgpu, ${w[i].loss} on wasm`));
    assert.ok(g.every((r) => r.loss > 0.01), 'losses are not the zeros of a failed read');

    // The webgpu-trained checkpoint, scored and applied on both backends.
    const scores: Record<string, unknown> = {};
    const masks: Record<string, Buffer[]> = {};
    const input = path.join(dir, 'data', 'ISIC2018_Task1-2_Validation_Input');
    for (const be of ['webgpu', 'wasm']) {
      const ev = await cmd('evaluate', ['--config', config, '--backend', be, '--set', 'name=gpu']);
      assertOk(ev);
      scores[be] = JSON.parse(fs.readFileSync(path.join(dir, 'results', 'gpu', 'eval-val', 'metrics.json'), 'utf8')).metrics;
      const out = path.join(dir, `pred-${be}`);
      const pr = await cmd('predict', ['--config', config, '--backend', be, '--set', 'name=gpu', '--checkpoint', path.join(dir, 'checkpoints', 'gpu', 'best'), '--input', input, '--output', out]);
      assertOk(pr);
      masks[be] = await Promise.all(fs.readdirSync(out).sort().map((f) => sharp(path.join(out, f)).raw().toBuffer()));
    }
    assertNumbersClose(scores.webgpu, scores.wasm, 1e-3, 'evaluate metrics');
    assert.equal(masks.webgpu.length, masks.wasm.length);
    assert.ok(masks.webgpu.length >= 8, `${masks.webgpu.length} files from predict`);
    let differ = 0;
    let total = 0;
    masks.webgpu.forEach((m, i) => { for (let j = 0; j < m.length; j++) { differ += m[j] !== masks.wasm[i][j] ? 1 : 0; total++; } });
    assert.ok(differ <= total * 1e-3, `predict: ${differ} of ${total} mask pixels differ between webgpu and wasm`);

    const ex = await cmd('export', ['--config', config, '--backend', 'webgpu', '--set', 'name=gpu', '--output', path.join(dir, 'export')]);
    assertOk(ex);
    const exported = JSON.parse(fs.readFileSync(path.join(dir, 'export', 'model.json'), 'utf8'));
    const ck = await loadCheckpoint(path.join(dir, 'checkpoints', 'gpu', 'best'));
    assert.equal(exported.weightsManifest.flatMap((m: { weights: unknown[] }) => m.weights).length, ck.weights.length);
  });

  test('train multi-class as configs/camvid.yaml does (softmax, ce+dice with class weights): losses, val scores and the final flip-TTA evaluation match wasm', { timeout: TIMEOUT }, async () => {
    // The one-hot target is cast from int32 and summed over leading axes: on stock webgpu
    // that shader failed to compile, and the run stopped with a device error at step 1.
    const mc = writeConfig(dir, tinyConfig(dir, {
      name: 'mc',
      data: { root: path.join(dir, 'data_mc'), num_classes: 4, size: [32, 32], synthetic: { kind: 'multiclass', train: 16, val: 8, image_size: 40 } },
      training: { epochs: 2, batch_size: 4, workers: 1, print_interval: 1, val_interval: 1, optimizer: { name: 'adam', lr: 0.003 }, loss: { name: 'ce+dice', class_weights: [0.5, 1, 2, 1.5] } },
      evaluation: { tta: ['hflip'] },
      checkpoint: { ckpt_root: path.join(dir, 'checkpoints'), best_metric: 'val.mIoU' },
    }), 'mc.yaml');
    const final: Record<string, unknown> = {};
    for (const be of ['webgpu', 'wasm']) {
      const r = await cmd('train', ['--config', mc, '--backend', be, '--set', `name=mc_${be}`]);
      assertOk(r);
      assert.doesNotMatch(dawnLines(r.stderr), /validation|Invalid|error/i, show(r));
      final[be] = JSON.parse(fs.readFileSync(path.join(dir, 'results', `mc_${be}`, 'metrics.json'), 'utf8')).metrics;
    }
    const [g, w] = [history('mc_webgpu'), history('mc_wasm')];
    assert.equal(g.length, 8);
    g.forEach((r, i) => assert.ok(Math.abs(r.loss - w[i].loss) <= 2e-3 * Math.max(1, w[i].loss), `step ${r.step}: loss ${r.loss} on webgpu, ${w[i].loss} on wasm`));
    const [gv, wv] = [history('mc_webgpu', 'val'), history('mc_wasm', 'val')];
    assert.equal(gv.length, 2);
    assertNumbersClose(gv, wv, 1e-3, 'val scores per epoch');
    assert.ok(gv[1].mIoU > 0, 'a val mIoU was computed');
    assertNumbersClose(final.webgpu, final.wasm, 1e-3, 'final evaluation (flip TTA) of best');
  });

  test('a run stopped mid-epoch and resumed on webgpu ends bit-identical to a straight run', { timeout: TIMEOUT }, async () => {
    await tf.setBackend('webgpu');
    const cfg = parseConfig(tinyConfig(dir, {
      backend: 'webgpu',
      training: { epochs: 2, batch_size: 4, workers: 1, print_interval: 1, optimizer: { name: 'adam', lr: 0.003 } },
    }));
    const opts = { quiet: true };
    (await train(resolveRun({ ...cfg, name: 'straight' }), opts)).model.dispose();
    // Step 3 of 4 in the first epoch: the resume must also skip the batches already seen.
    const first = await train(resolveRun({ ...cfg, name: 'resumed' }), { ...opts, ...stopAt(3) });
    assert.ok(first.interrupted);
    first.model.dispose();
    (await train(resolveRun({ ...cfg, name: 'resumed' }), { ...opts, resume: true })).model.dispose();
    const a = await loadCheckpoint(path.join(dir, 'checkpoints', 'straight', 'last'));
    const b = await loadCheckpoint(path.join(dir, 'checkpoints', 'resumed', 'last'));
    assert.equal(b.meta.step, 8);
    assert.equal(a.weights.length, b.weights.length);
    for (const w of a.weights) assert.deepEqual(b.weights.find((v) => v.name === w.name)?.values, w.values, w.name);
  });

  test('a device error during a step ends the run with one line; best/ and last/ stay as they were', { timeout: TIMEOUT }, async () => {
    // gpu has last/ and best/ from its 2 epochs; two more epochs, with a real validation error in step 10.
    const ck = path.join(dir, 'checkpoints', 'gpu');
    const files = (d: string) => fs.readdirSync(path.join(ck, d)).sort().map((f) => [f, fs.readFileSync(path.join(ck, d, f))]);
    const before = { last: files('last'), best: files('best') };
    const r = await cmd('train', ['--config', config, '--backend', 'webgpu', '--set', 'name=gpu', '--set', 'training.epochs=4', '--resume'], stepFaultEnv('gpu@10'));
    // Dawn prints its own multi-line report first; ours is the one line after it.
    const ours = r.stderr.split('\n').filter((l) => /^error: /.test(l));
    assert.notEqual(r.code, 0, show(r));
    assert.equal(ours.length, 1, show(r));
    assert.match(ours[0], /^error: webgpu: validation error in semseg_provoked_fault: .*storage buffers.* at epoch 3, step 10; nothing from this step was applied or saved/, show(r));
    assert.doesNotMatch(r.stderr + r.stdout, /\n\s+at /, `stack trace printed\n${show(r)}`);
    assert.deepEqual(files('last'), before.last, 'last/ unchanged');
    assert.deepEqual(files('best'), before.best, 'best/ unchanged');
  });
});

test('backend auto never picks a software adapter, even with the opt-in; the start-up line names one when asked for', async () => {
  const probe = await probeAdapter({ allowSoftware: true });
  assert.ok(probe.ok);
  const auto = await initBackend('auto');
  if (probe.software) {
    assert.notEqual(auto.name, 'webgpu', auto.description);
    assert.match(auto.description, /skipped webgpu: only a software adapter .*SEMSEG_WEBGPU_SOFTWARE=1 with --backend webgpu/);
    assert.match((await initBackend('webgpu')).description, /software adapter \(SEMSEG_WEBGPU_SOFTWARE=1\): for testing, slower than wasm/);
  }
  await initBackend('webgpu');
});

// The one-line check of a device error without a CLI (last: the error stays for the process).
test('checkDevice turns a provoked validation error into one line naming the program', async () => {
  const { checkDevice, provokeDeviceError, DeviceError } = await import('../backends/webgpu_errors');
  await tf.setBackend('webgpu');
  checkDevice('before');
  const t = provokeDeviceError();
  await t.data();
  t.dispose();
  assert.throws(() => checkDevice('a test'), (e: Error) => {
    assert.ok(e instanceof DeviceError);
    assert.match(e.message, /^webgpu: validation error in semseg_provoked_fault: .* \(during a test\)$/);
    assert.equal(e.message.split('\n').length, 1);
    return true;
  });
});
