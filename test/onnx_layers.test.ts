// The ONNX lowering, one layer at a time: each of the project's own layers (through its
// portable stand-in, as the export takes it) and each rule of deploy/onnx/lower.ts is built
// as a minimal model with random weights (batch-norm statistics included) at an odd size
// (13x17 by default, where 'same' pads, pool windows, crops and resize alignments are
// uneven), exported as the exporter does (portableModel -> lowerModel -> encodeModel),
// checked by onnx.checker and run by ONNX Runtime (Python) at batch 2, 1 and 3 from the same
// file (the batch is dynamic); each output must equal TF.js's predict on the project model
// within 1e-5, and the graph must hold the ONNX op the rule is meant to emit.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '../backends/tf';
import { initBackend } from '../backends';
import { portableModel } from '../engine/portable';
import { encodeModel } from '../deploy/onnx/proto';
import { lowerModel, LOWERED_CLASSES, ONNX_OPSET } from '../deploy/onnx/lower';
import { fastBatchNorm } from '../models/layers/batch_norm';
import { atrousConv2D } from '../models/layers/atrous';
import { seededDropout } from '../models/layers/seeded_dropout';
import { CropToMatch, upsampleLike } from '../models/layers/upsample';
import { BinAvgPool, BinUpsample } from '../models/fast_scnn';
import { dsConv, invertedResidual } from '../models/layers/mobilenet_parts';
import { Up } from '../models/layers/unet_parts';
import { UserError } from '../utils/errors';
import { isProjectLayer } from '../models/layers/custom_layers';
import { getModelDefinition, registeredModels } from '../models/registry';
import { tmpDir } from '../loaders/fixtures';
import { Job, JobResult, maxAbsDiff, readF32, runJobs, writeF32 } from './helpers/onnx_check';

type T = tf.SymbolicTensor;
const L = tf.layers;
const TOLERANCE = 1e-5;
const BATCHES = [2, 1, 3];

interface Case {
  name: string;
  /** The ONNX op(s) the lowering under test must emit. */
  ops: string[];
  build: (x: T) => T;
  /** Input [h, w, c]; 13x17x4 unless given. */
  shape?: [number, number, number];
  /** The registered model whose portable list replaces the project layers used here. */
  arch?: string;
  /** Random weights in [-scale/2, scale/2] (1 unless given). */
  scale?: number;
}

const CASES: Case[] = [];
const add = (c: Case) => CASES.push(c);

// --- convolutions -----------------------------------------------------------------
add({ name: 'Conv2D 3x3 same, bias, fused relu', ops: ['Conv', 'Relu'], build: (x) => L.conv2d({ filters: 5, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(x) as T });
add({ name: 'Conv2D 3x3 stride 2 same at an odd size (the odd pad pixel after)', ops: ['Conv'], build: (x) => L.conv2d({ filters: 3, kernelSize: 3, strides: 2, padding: 'same', useBias: false }).apply(x) as T });
add({ name: 'Conv2D 1x1 stride 2 same (ResNet shortcut)', ops: ['Conv'], build: (x) => L.conv2d({ filters: 3, kernelSize: 1, strides: 2, padding: 'same' }).apply(x) as T });
add({ name: 'Conv2D 7x7 stride 2 same (ResNet stem)', ops: ['Conv'], build: (x) => L.conv2d({ filters: 3, kernelSize: 7, strides: 2, padding: 'same' }).apply(x) as T });
add({ name: 'Conv2D 5x3 strides [2,1] valid', ops: ['Conv'], build: (x) => L.conv2d({ filters: 2, kernelSize: [5, 3], strides: [2, 1], padding: 'valid' }).apply(x) as T });
add({ name: 'Conv2D dilation 2 valid (stock dilated)', ops: ['Conv'], build: (x) => L.conv2d({ filters: 2, kernelSize: 3, dilationRate: 2, padding: 'valid' }).apply(x) as T });
for (const [i, rate] of [2, 3, 6, 12, 18].entries()) {
  // 12 leaves taps hanging past a 13-pixel side, 18 only the centre one (atrous.ts's liveTaps).
  add({ name: `AtrousConv2D rate ${rate}, 'same' (ASPP branch)`, ops: ['Conv'], arch: 'deeplabv3plus', build: (x) => atrousConv2D({ filters: 3, kernelSize: 3, dilationRate: rate, useBias: i % 2 === 0 }).apply(x) as T });
}
add({ name: 'DepthwiseConv2D 3x3 same, bias', ops: ['Conv'], build: (x) => L.depthwiseConv2d({ kernelSize: 3, padding: 'same' }).apply(x) as T });
add({ name: 'DepthwiseConv2D 3x3 stride 2 same, no bias', ops: ['Conv'], build: (x) => L.depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'same', useBias: false }).apply(x) as T });
add({ name: 'DepthwiseConv2D depth multiplier 2, fused relu6', ops: ['Conv', 'Clip'], build: (x) => L.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same', activation: 'relu6' }).apply(x) as T });
add({ name: 'depthwise-separable DSConv stride 2 (Fast-SCNN block: depthwise, BN, ReLU, 1x1, BN, ReLU)', ops: ['Conv', 'BatchNormalization', 'Relu'], build: (x) => dsConv(x, 6, { stride: 2, name: 'ds', seed: 1 }) });
add({ name: 'inverted residual (MobileNetV2 block: expand, depthwise, project, add)', ops: ['Conv', 'BatchNormalization', 'Clip', 'Add'], build: (x) => invertedResidual(x, 4, { expand: 3, stride: 1, name: 'ir', seed: 1 }) });
for (const [k, s, padding] of [[2, 2, 'same'], [3, 2, 'same'], [3, 1, 'same'], [4, 2, 'same'], [3, 2, 'valid'], [1, 2, 'valid'], [1, 2, 'same']] as const) {
  // k < s leaves the last row and column to output_padding; an odd 'same' total cuts after.
  add({ name: `Conv2DTranspose ${k}x${k} stride ${s} ${padding}`, ops: ['ConvTranspose'], build: (x) => L.conv2dTranspose({ filters: 3, kernelSize: k, strides: s, padding, activation: k === 4 ? 'relu' : 'linear' }).apply(x) as T });
}

// --- normalisation ------------------------------------------------------------------
add({ name: 'FastBatchNorm (inference: moving statistics), epsilon 1e-5', ops: ['BatchNormalization'], build: (x) => fastBatchNorm({ momentum: 0.9, epsilon: 1e-5 }).apply(x) as T });
add({ name: 'FastBatchNorm epsilon 1e-3 (the default)', ops: ['BatchNormalization'], build: (x) => fastBatchNorm({}).apply(x) as T });
add({ name: 'BatchNormalization without gamma and beta (center, scale off)', ops: ['BatchNormalization'], build: (x) => L.batchNormalization({ center: false, scale: false }).apply(x) as T });

// --- the project's crops and upsampling ---------------------------------------------
add({ name: 'CropToMatch: x2 nearest of a stride-2 map (7x9 -> 14x18) cut to 13x17', ops: ['Slice', 'Resize'], build: (x) => upsampleLike(L.maxPooling2d({ poolSize: 2, padding: 'same' }).apply(x) as T, x, 2, 'c2', 'nearest') });
add({ name: 'CropToMatch: x4 bilinear of a stride-4 map (4x5 -> 16x20) cut to 13x17', ops: ['Slice', 'Resize'], build: (x) => upsampleLike(L.maxPooling2d({ poolSize: 4, padding: 'same' }).apply(x) as T, x, 4, 'c4', 'bilinear') });
add({ name: 'CropToMatch with nothing to cut (the identity)', shape: [12, 16, 4], ops: ['Slice'], build: (x) => upsampleLike(L.maxPooling2d({ poolSize: 2, padding: 'same' }).apply(x) as T, x, 2, 'c0', 'nearest') });
for (const mode of ['nearest', 'bilinear', 'transpose'] as const) {
  add({ name: `U-Net Up block, up_mode ${mode} (upsample, crop, concat, double conv)`, ops: ['Concat', 'Slice', mode === 'transpose' ? 'ConvTranspose' : 'Resize'], build: (x) => Up(L.maxPooling2d({ poolSize: 2, padding: 'same' }).apply(x) as T, x, 3, 'up', mode, true, 1) });
}
const pyramid = (x: T, bins: number): T => {
  const y = new BinAvgPool({ bins, name: `ppm${bins}_pool` }).apply(x) as T;
  const up = new BinUpsample({ bins, name: `ppm${bins}_up` }).apply([y, x]) as T;
  return new CropToMatch({ name: `ppm${bins}_crop` }).apply([up, x]) as T;
};
for (const bins of [1, 2, 3, 6]) {
  add({ name: `pyramid pooling bin ${bins}: BinAvgPool + BinUpsample (bilinear) + crop, 13x17`, ops: ['AveragePool', 'Resize', 'Slice'], build: (x) => pyramid(x, bins) });
}
add({
  name: 'pyramid pooling module: bins 1, 2, 3, 6 with 1x1 conv + BN + ReLU each, concat (Fast-SCNN), 12x18 (bins divide)',
  shape: [12, 18, 4],
  ops: ['AveragePool', 'Resize', 'Slice', 'Concat'],
  build: (x) => L.concatenate().apply([x, ...[1, 2, 3, 6].map((b) => {
    let y = new BinAvgPool({ bins: b, name: `m${b}_pool` }).apply(x) as T;
    y = L.reLU().apply(fastBatchNorm({ epsilon: 1e-5 }).apply(L.conv2d({ filters: 2, kernelSize: 1, useBias: false }).apply(y))) as T;
    y = new BinUpsample({ bins: b, name: `m${b}_up` }).apply([y, x]) as T;
    return new CropToMatch({ name: `m${b}_crop` }).apply([y, x]) as T;
  })]) as T,
});

// --- resize ---------------------------------------------------------------------------
for (const size of [[2, 2], [4, 4], [2, 3]]) {
  add({ name: `UpSampling2D bilinear x${size.join('x')} (align_corners and half_pixel off, as tfjs)`, ops: ['Resize'], build: (x) => L.upSampling2d({ size, interpolation: 'bilinear' }).apply(x) as T });
}
for (const size of [[2, 2], [3, 2]]) {
  add({ name: `UpSampling2D nearest x${size.join('x')}`, ops: ['Resize'], build: (x) => L.upSampling2d({ size, interpolation: 'nearest' }).apply(x) as T });
}

// --- merges ---------------------------------------------------------------------------
add({ name: 'Concatenate on channels (axis -1) of three maps', ops: ['Concat'], build: (x) => L.concatenate({ axis: -1 }).apply([x, L.conv2d({ filters: 2, kernelSize: 1 }).apply(x) as T, L.conv2d({ filters: 3, kernelSize: 3, padding: 'same' }).apply(x) as T]) as T });
add({ name: 'Add of three maps', ops: ['Add'], build: (x) => L.add().apply([x, L.conv2d({ filters: 4, kernelSize: 1 }).apply(x) as T, L.conv2d({ filters: 4, kernelSize: 3, padding: 'same' }).apply(x) as T]) as T });
add({
  name: 'Add broadcasting a pooled [1,1,C] map (ASPP image pooling: GAP, Reshape, 1x1 conv)',
  ops: ['GlobalAveragePool', 'Reshape', 'Add'],
  build: (x) => {
    const pool = L.conv2d({ filters: 3, kernelSize: 1 }).apply(L.reshape({ targetShape: [1, 1, 4] }).apply(L.globalAveragePooling2d({}).apply(x))) as T;
    return L.add().apply([L.conv2d({ filters: 3, kernelSize: 1 }).apply(x) as T, pool]) as T;
  },
});
add({ name: 'Multiply gating by a sigmoid [.,h,w,1] map (attention gate)', ops: ['Mul', 'Sigmoid'], build: (x) => L.multiply().apply([x, L.activation({ activation: 'sigmoid' }).apply(L.conv2d({ filters: 1, kernelSize: 1 }).apply(x)) as T]) as T });

// --- activations ----------------------------------------------------------------------
// After a 1x1 conv of weights up to +-4: values up to ~15, so relu6's clip and tanh's and
// the sigmoid's saturation are reached, and the softmax's channels differ.
for (const [act, ops] of [['relu', ['Relu']], ['relu6', ['Clip']], ['sigmoid', ['Sigmoid']], ['tanh', ['Tanh']], ['softmax', ['Softmax']], ['linear', []]] as const) {
  add({ name: `Activation ${act}`, ops: [...ops], scale: 8, build: (x) => L.activation({ activation: act }).apply(L.conv2d({ filters: 5, kernelSize: 1 }).apply(x)) as T });
}
add({ name: 'ReLU layer', ops: ['Relu'], build: (x) => L.reLU().apply(x) as T });
add({ name: 'ReLU layer max 6 (ReLU6)', ops: ['Clip'], scale: 8, build: (x) => L.reLU({ maxValue: 6 }).apply(L.conv2d({ filters: 4, kernelSize: 1 }).apply(x)) as T });

// --- pooling --------------------------------------------------------------------------
add({ name: 'MaxPooling2D 2x2 same at an odd size', ops: ['MaxPool'], build: (x) => L.maxPooling2d({ poolSize: 2, padding: 'same' }).apply(x) as T });
add({ name: 'MaxPooling2D 3x3 stride 2 same (ResNet stem)', ops: ['MaxPool'], build: (x) => L.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }).apply(x) as T });
add({ name: 'MaxPooling2D 2x2 valid', ops: ['MaxPool'], build: (x) => L.maxPooling2d({ poolSize: 2 }).apply(x) as T });
add({ name: 'AveragePooling2D 3x3 stride 2 same (padding left out of the averages)', ops: ['AveragePool'], build: (x) => L.averagePooling2d({ poolSize: 3, strides: 2, padding: 'same' }).apply(x) as T });
add({ name: 'AveragePooling2D 2x2 valid', ops: ['AveragePool'], build: (x) => L.averagePooling2d({ poolSize: 2 }).apply(x) as T });
add({ name: 'GlobalAveragePooling2D (a [batch, C] output)', ops: ['GlobalAveragePool', 'Flatten'], build: (x) => L.globalAveragePooling2d({}).apply(x) as T });
add({ name: 'GlobalMaxPooling2D', ops: ['GlobalMaxPool'], build: (x) => L.globalMaxPooling2d({}).apply(x) as T });

// --- shapes ---------------------------------------------------------------------------
add({ name: 'Reshape [13,17,4] -> [17,13,4] in NHWC order', ops: ['Reshape'], build: (x) => L.reshape({ targetShape: [17, 13, 4] }).apply(x) as T });
add({ name: 'Reshape [13,17,4] -> [884] (rank 2)', ops: ['Reshape'], build: (x) => L.reshape({ targetShape: [13 * 17 * 4] }).apply(x) as T });
add({ name: 'Flatten in NHWC order', ops: ['Flatten'], build: (x) => L.flatten().apply(x) as T });
add({ name: 'ZeroPadding2D [[1,2],[0,3]]', ops: ['Pad'], build: (x) => L.zeroPadding2d({ padding: [[1, 2], [0, 3]] }).apply(x) as T });
add({ name: 'Cropping2D [[1,2],[3,0]]', ops: ['Slice'], build: (x) => L.cropping2D({ cropping: [[1, 2], [3, 0]] }).apply(x) as T });

// --- dropout: the identity at inference -------------------------------------------------
add({ name: 'SeededDropout rate 0.5 (identity at inference)', ops: ['Identity'], build: (x) => seededDropout({ rate: 0.5 }).apply(L.conv2d({ filters: 2, kernelSize: 1 }).apply(x)) as T });
add({ name: 'Dropout rate 0.5', ops: ['Identity'], build: (x) => L.dropout({ rate: 0.5 }).apply(L.conv2d({ filters: 2, kernelSize: 1 }).apply(x)) as T });

/** Random weights, batch-norm statistics away from (0, 1) so a wrong mapping shows. */
function randomise(m: tf.LayersModel, seed: number, scale: number): void {
  m.weights.forEach((v, i) => {
    const [lo, hi] = /moving_variance|gamma/.test(v.originalName) ? [0.5, 1.5] : [-scale / 2, scale / 2];
    const t = tf.randomUniform(v.shape as number[], lo, hi, 'float32', seed * 100 + i);
    v.write(t);
    t.dispose();
  });
}

interface Built { error?: string; reference: tf.Tensor[]; job?: Job; inShape: number[]; classes: string[]; own: string[] }
const built = new Map<string, Built>();
let results = new Map<string, JobResult>();
const worst: Record<string, number> = {};
let dir = '';

before(async () => {
  await initBackend('wasm');
  dir = tmpDir('onnx-layers');
  const jobs: [string, Job][] = [];
  for (const [i, c] of CASES.entries()) {
    const shape = c.shape ?? [13, 17, 4];
    const b: Built = { reference: [], inShape: shape, classes: [], own: [] };
    built.set(c.name, b);
    try {
      const input = tf.input({ shape, name: 'image' });
      const model = tf.model({ inputs: input, outputs: c.build(input) });
      randomise(model, i + 1, c.scale ?? 1);
      b.own = model.layers.map((l) => l.getClassName()).filter(isProjectLayer);
      const portable = await portableModel(model, [shape[0], shape[1]], getModelDefinition(c.arch ?? 'fast_scnn'));
      b.classes = [...new Set(portable.layers.map((l) => l.getClassName()))];
      const file = path.join(dir, `case${i}.onnx`);
      fs.writeFileSync(file, encodeModel({ opset: ONNX_OPSET, producer: { name: 'onnx_layers.test', version: '0' }, graph: lowerModel(portable), metadata: {} }));
      portable.dispose();
      const job: Job = { model: file, runs: [] };
      for (const n of BATCHES) {
        const x = tf.randomNormal([n, ...shape], 0, 1, 'float32', 1000 + i * 10 + n);
        const stem = path.join(dir, `case${i}_b${n}`);
        writeF32(`${stem}.x`, x);
        b.reference.push(model.predict(x) as tf.Tensor);
        job.runs.push({ input: `${stem}.x`, shape: [n, ...shape].join(','), output: `${stem}.y` });
        x.dispose();
      }
      model.dispose();
      b.job = job;
      jobs.push([c.name, job]);
    } catch (e) {
      b.error = (e as Error).stack ?? String(e);
    }
  }
  const out = runJobs(dir, jobs.map(([, j]) => j));
  results = new Map(jobs.map(([name], k) => [name, out[k]]));
});

after(() => {
  console.log(`ONNX Runtime vs TF.js per layer, max |difference| over batches ${BATCHES.join(', ')}:\n${Object.entries(worst).map(([k, v]) => `  ${v.toExponential(2)}  ${k}`).join('\n')}`);
  for (const b of built.values()) tf.dispose(b.reference);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

for (const c of CASES) {
  test(`${c.name}: onnx.checker accepts it; ONNX Runtime equals TF.js within ${TOLERANCE} at batch ${BATCHES.join(', ')}`, () => {
    const b = built.get(c.name)!;
    assert.equal(b.error, undefined, `building or lowering failed: ${b.error}`);
    const r = results.get(c.name)!;
    assert.equal(r.error, undefined, `onnx.checker or ONNX Runtime: ${r.error}`);
    assert.ok(r.opset >= 17, `opset ${r.opset}`);
    assert.deepEqual(r.input, ['batch', ...b.inShape]);
    assert.equal(r.output[0], 'batch');
    for (const op of c.ops) assert.ok(r.ops.includes(op), `no ${op} node in the graph (ops: ${r.ops.join(', ')})`);
    let d = 0;
    BATCHES.forEach((n, k) => {
      const want = b.reference[k];
      assert.deepEqual(r.shapes[k], want.shape, `batch ${n}: output shape`);
      const got = readF32(b.job!.runs[k].output, want.shape);
      const dk = maxAbsDiff(want, got);
      got.dispose();
      assert.ok(dk <= TOLERANCE, `batch ${n}: max |difference| ${dk}`);
      d = Math.max(d, dk);
    });
    worst[c.name] = d;
  });
}

test('every lowering rule of lower.ts and every project layer with a portable stand-in has a case above', () => {
  const covered = new Set([...built.values()].flatMap((b) => b.classes));
  const missing = LOWERED_CLASSES.filter((k) => !covered.has(k));
  assert.deepEqual(missing, [], `lowered classes with no per-layer case: ${missing.join(', ')}`);
  const own = new Set([...built.values()].flatMap((b) => b.own));
  const replaced = new Set(registeredModels().flatMap((n) => Object.keys(getModelDefinition(n).portable)));
  assert.deepEqual([...replaced].filter((k) => !own.has(k)), [], 'project layers with no per-layer case');
});

test('an activation with no lowering is refused in one line naming the layer', () => {
  const x = tf.input({ shape: [5, 5, 2] });
  const m = tf.model({ inputs: x, outputs: L.activation({ activation: 'elu', name: 'act_elu' }).apply(x) as T });
  assert.throws(() => lowerModel(m), (e: Error) => e instanceof UserError && /activation 'elu' of layer act_elu has no ONNX lowering/.test(e.message) && !e.message.includes('\n'));
  m.dispose();
});
