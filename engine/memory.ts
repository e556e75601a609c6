// How much memory a training step (or an inference batch) needs, estimated from the
// model, the batch and the input size before anything runs, so that a run past the
// ceiling is refused with one line instead of grinding for minutes (or failing with
// `XNN ... status 6`) after the first step. The wasm backend's heap is wasm32 memory:
// at most 4 GiB (tfjs-backend-wasm creates it with maximum 4294967296 bytes), whatever
// the machine has.
import assert from 'node:assert/strict';
import os from 'node:os';
import { configActivationFloats, configParamCount, getModelDefinition } from '../models/registry';
import { Config, outChannels, parseConfig } from '../utils/config';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';

export const WASM_HEAP_LIMIT = 4 * 2 ** 30;

/**
 * Calibration (bench/memory.ts, wasm, 2 threads: the heap's size after two steps,
 * one process per case; the heap only grows, so that is the step's high-water mark,
 * allocator growth steps included):
 *
 *   size batch base depth   forward floats   heap MiB   estimate MiB
 *    64    2     4    2          1.2 M           19          37
 *   128    2    16    4         19.4 M          298         340  (+14 %)
 *   128    4     8    2         17.2 M          248         280  (+13 %)
 *   128    4    16    4         38.9 M          522         637  (+22 %)
 *   160    2    32    4         59.8 M          915        1040  (+14 %)
 *   256    2    16    4         77.8 M         1094        1231  (+13 %)
 *   256    4    16    4        155.6 M         2036        2418  (+19 %)
 *
 * A step keeps every forward activation for the backward pass and, at the backward
 * pass's peak, gradients and the Conv2D gradient kernels' transposed copies: 13.6 bytes
 * per forward float measured (slope of the base-16 cases). ACT_BYTES = 16 errs high by
 * 13-22 %: a refusal near the limit costs a retry with a smaller batch, a step that
 * dies at 4 GiB costs the run.
 */
const ACT_BYTES = 16;
/** Weights, their gradients, two Adam slots and the update's temporaries, 4 bytes each. */
const PARAM_BYTES = 6 * 4;
/** What an empty heap already holds (its initial 16 MiB). */
const BASE_BYTES = 16 * 2 ** 20;
/**
 * Inference keeps no activations for a backward pass (tfjs-layers frees each once its
 * last user ran): the skips and a few maps are live at once. Half the forward floats
 * (2 bytes each) is a generous bound, not calibrated: inference is far from the limit
 * whenever training fits.
 */
const INFER_BYTES = 2;

export interface Shape {
  batch: number;
  height: number;
  width: number;
}

/** Floats of every tensor one forward pass (plus its loss) makes for one sample. */
export function forwardFloatsPerSample(cfg: Config, height: number, width: number): number {
  const c = outChannels(cfg);
  // the model's layer outputs (models/<name>.ts counts them); then probabilities,
  // log-probabilities, one-hot labels and the per-pixel terms of the loss
  return configActivationFloats(cfg, height, width) + 7 * Math.max(c, 2) * height * width;
}

/** The model's trainable parameters (its definition counts them without building it). */
export function paramCount(cfg: Config): number {
  return configParamCount(cfg);
}

/** The key that shrinks the configured model, for advice ('model.base' for the U-Net). */
export function widthKey(cfg: Config): string {
  return getModelDefinition(cfg.model.name).widthKey;
}

/** Bytes a training step of this shape needs at its peak. */
export function trainStepBytes(cfg: Config, s: Shape): number {
  return BASE_BYTES + s.batch * forwardFloatsPerSample(cfg, s.height, s.width) * ACT_BYTES + paramCount(cfg) * PARAM_BYTES;
}

/** Bytes an inference batch needs (evaluation, prediction): no backward pass. */
export function inferBytes(cfg: Config, s: Shape): number {
  return BASE_BYTES + s.batch * forwardFloatsPerSample(cfg, s.height, s.width) * INFER_BYTES + paramCount(cfg) * 4;
}

/** The ceiling for this backend: the wasm heap, else the machine's memory. */
export function memoryLimit(backend: string): { bytes: number; what: string } {
  if (backend === 'wasm') return { bytes: WASM_HEAP_LIMIT, what: 'the wasm heap limit of 4 GiB' };
  return { bytes: os.totalmem(), what: `this machine's ${gib(os.totalmem())} of memory` };
}

export const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

/** The training input size: the crop if the run crops, else data.size. */
export function trainShape(cfg: Config): Shape {
  const [height, width] = cfg.training.augmentations.crop?.size ?? cfg.data.size;
  return { batch: cfg.training.batch_size, height, width };
}

/**
 * Throws a one-line UserError when a training step cannot fit under the backend's
 * ceiling; returns the estimate. Native (tensorflow) backends are only warned about:
 * their memory is the GPU's or the machine's, not a fixed heap.
 */
export function checkTrainMemory(cfg: Config, backend: string, warn: (s: string) => void = console.warn): number {
  const s = trainShape(cfg);
  const need = trainStepBytes(cfg, s);
  const limit = memoryLimit(backend);
  if (need <= limit.bytes) return need;
  const sizeKey = cfg.training.augmentations.crop ? 'training.augmentations.crop.size' : 'data.size';
  const fit = Math.max(0, largestBatch(cfg, s, limit.bytes, trainStepBytes));
  const advice = fit > 1 ? `lower training.batch_size to ${fit} or less` : fit === 1 ? 'lower training.batch_size to 1' : 'batch_size 1 does not fit either';
  const msg =
    `a training step at ${sizeKey} [${s.height}, ${s.width}], training.batch_size ${s.batch}, model.name ${cfg.model.name} ` +
    `needs about ${gib(need)}, over ${limit.what}: ${advice}, or lower ${sizeKey}${cfg.training.augmentations.crop ? '' : ' (or add a crop)'} or ${widthKey(cfg)}`;
  if (backend === 'wasm') throw new UserError(msg);
  warn(`warning: ${msg}`);
  return need;
}

/** Same for inference batches of evaluation and prediction (size x largest TTA scale). */
export function checkInferMemory(cfg: Config, backend: string, batch: number, what: string): number {
  const scale = Math.max(...cfg.evaluation.scales);
  const s = { batch, height: Math.ceil(cfg.data.size[0] * scale), width: Math.ceil(cfg.data.size[1] * scale) };
  const need = inferBytes(cfg, s);
  const limit = memoryLimit(backend);
  if (backend === 'wasm' && need > limit.bytes) {
    throw new UserError(
      `${what} at data.size [${cfg.data.size.join(', ')}] x evaluation.scales ${scale}, batch ${batch}, model.name ${cfg.model.name} ` +
        `needs about ${gib(need)}, over ${limit.what}: lower data.size, evaluation.scales or ${widthKey(cfg)}`,
    );
  }
  return need;
}

function largestBatch(cfg: Config, s: Shape, limit: number, bytes: (c: Config, s: Shape) => number): number {
  let b = s.batch;
  while (b > 0 && bytes(cfg, { ...s, batch: b }) > limit) b--;
  return b;
}

export const selfTest: SelfTest = {
  'the parameter count matches the built U-Net'() {
    // Counted without building (used before the backend starts); the U-Net's own test
    // ties its count to the PyTorch reference.
    const cfg = parseConfig({ model: { base: 16, depth: 4 } });
    assert.equal(paramCount(cfg), 1_226_305); // models/unet.ts: torch_unet.py's count
  },
  'the estimate scales with batch and pixels, and stays near the calibration points'() {
    const cfg = parseConfig({ model: { base: 16, depth: 4 } });
    const a = trainStepBytes(cfg, { batch: 2, height: 128, width: 128 });
    const b = trainStepBytes(cfg, { batch: 4, height: 256, width: 256 });
    assert.ok(b > 7 * a && b < 8 * a, `${a} -> ${b}`);
    // measured heap (see the calibration table): 298 and 2036 MiB; the estimate is above, by less than 30 %
    for (const [est, heap] of [[a, 298], [b, 2036]]) assert.ok(est / 2 ** 20 > heap && est / 2 ** 20 < 1.3 * heap, `${est / 2 ** 20} MiB`);
  },
  '512 px with batch 8 on wasm is refused with the estimate and what to lower; the demo size passes'() {
    const big = parseConfig({ data: { size: [512, 512] }, training: { batch_size: 8 } });
    assert.throws(() => checkTrainMemory(big, 'wasm'), (e: Error) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /needs about \d+\.\d GiB, over the wasm heap limit of 4 GiB: lower training\.batch_size to 1, or lower data\.size \(or add a crop\) or model\.base$/);
      assert.equal(e.message.split('\n').length, 1);
      return true;
    });
    const huge = parseConfig({ data: { size: [8192, 8192] }, training: { batch_size: 1 } });
    assert.throws(() => checkTrainMemory(huge, 'wasm'), /batch_size 1 does not fit either/);
    const warned: string[] = [];
    checkTrainMemory(huge, 'tensorflow', (s) => warned.push(s));
    assert.equal(warned.length, os.totalmem() < trainStepBytes(huge, trainShape(huge)) ? 1 : 0);
    assert.ok(checkTrainMemory(parseConfig({}), 'wasm') < WASM_HEAP_LIMIT / 4);
  },
  'a crop sets the training size'() {
    const cfg = parseConfig({ data: { size: [1024, 1024] }, training: { batch_size: 2, augmentations: { crop: { size: [128, 128] } } } });
    assert.deepEqual(trainShape(cfg), { batch: 2, height: 128, width: 128 });
    checkTrainMemory(cfg, 'wasm');
  },
  'inference at 8192 px is refused, at the default size it passes'() {
    assert.throws(() => checkInferMemory(parseConfig({ data: { size: [8192, 8192] } }), 'wasm', 4, 'evaluation'), /evaluation at data\.size \[8192, 8192\].*lower data\.size/);
    checkInferMemory(parseConfig({}), 'wasm', 4, 'evaluation');
  },
};

runIfMain(module, selfTest);
