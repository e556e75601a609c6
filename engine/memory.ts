// How much memory a training step (or an inference batch) needs, estimated from the
// model, the batch and the input size before anything runs, so that a run past the
// ceiling is refused with one line instead of grinding for minutes (or failing with
// `XNN ... status 6`) after the first step. The wasm backend's heap is wasm32 memory:
// at most 4 GiB (tfjs-backend-wasm creates it with maximum 4294967296 bytes), whatever
// the machine has.
import assert from 'node:assert/strict';
import os from 'node:os';
import { modelActivationBytes, modelActivationFloats, modelParamCount, ResolvedModel, resolveModel } from '../models/registry';
import { Config } from '../utils/config';
import { parseConfig, Resolved, resolveRun } from '../config/resolve';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { warning } from '../utils/warnings';

export const WASM_HEAP_LIMIT = 4 * 2 ** 30;

/**
 * Calibration (bench/memory.ts, wasm, 2 threads: the heap's size after two steps, one
 * process per case; the heap only grows, so that is the step's high-water mark, allocator
 * growth included). A step needs BASE + activation floats x the model's activationBytes
 * (every forward output is kept for the backward pass; at its peak, gradients and the
 * gradient kernels' temporaries too) + parameters x PARAM_BYTES:
 *
 *   model            size batch  act. floats  params  heap MiB  estimate MiB
 *   unet 16/4         128    2      19.4 M    1.23 M     298      361 (+21 %)
 *   unet 16/4         128    4      38.8 M    1.23 M     525      613 (+17 %)
 *   unet 16/4         256    4     155.6 M    1.23 M    2036      2124 (+4 %)
 *   attention_unet    128    4      47.0 M    1.25 M     725      783 (+8 %)
 *   attention_unet    256    2      93.9 M    1.25 M    1302      1455 (+12 %)
 *   deeplabv3plus     128    4      40.7 M    3.13 M     806      914 (+13 %)
 *   deeplabv3plus     256    2      81.3 M    3.13 M    1400      1573 (+12 %)
 *   fpn               128    4      18.6 M   11.71 M    1179      1229 (+4 %)
 *   fpn               256    2      37.3 M   11.71 M    1279      1549 (+21 %)
 *   fast_scnn         128    8      23.8 M    1.40 M     429      508 (+18 %)
 *   fast_scnn         256    4      47.5 M    1.40 M     838      893 (+7 %)
 *
 * Per activation float the U-Net measured 12.5-13.6 bytes, depthwise models 15-17 (their
 * gradient kernels keep more temporaries): each definition's activationBytes. Per parameter
 * 57-74 bytes measured (FPN's 11.7 M; 80 keeps its estimate above its heap): weights,
 * gradients, two Adam slots, the optimizer's staged gradients and update temporaries, and
 * the conv-gradient kernels' filter copies.
 * Estimates err high: a refusal near the limit costs a retry with a smaller batch, a
 * step that dies at 4 GiB costs the run.
 */
const PARAM_BYTES = 80;
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
export function forwardFloatsPerSample(m: ResolvedModel, height: number, width: number): number {
  const c = m.io.outChannels;
  // the model's layer outputs (models/<name>.ts counts them); then probabilities,
  // log-probabilities, one-hot labels and the per-pixel terms of the loss
  return modelActivationFloats(m, height, width) + 7 * Math.max(c, 2) * height * width;
}

/** The model's trainable parameters (its definition counts them without building it). */
export function paramCount(m: ResolvedModel): number {
  return modelParamCount(m);
}

/** The key that shrinks the model, for advice ('model.base' for the U-Net). */
export function widthKey(m: ResolvedModel): string {
  return m.definition.widthKey;
}

/** 'model.name unet, model.base 16': the model and its width, for memory messages. */
export function modelSize(m: ResolvedModel): string {
  const key = widthKey(m);
  const value = m.options[key.replace(/^model\./, '')];
  return `model.name ${m.definition.name}${value === undefined ? '' : `, ${key} ${JSON.stringify(value)}`}`;
}

/** Bytes a training step of this shape needs at its peak. */
export function trainStepBytes(m: ResolvedModel, s: Shape): number {
  return BASE_BYTES + s.batch * forwardFloatsPerSample(m, s.height, s.width) * modelActivationBytes(m) + paramCount(m) * PARAM_BYTES;
}

/** Bytes an inference batch needs (evaluation, prediction): no backward pass. */
export function inferBytes(m: ResolvedModel, s: Shape): number {
  return BASE_BYTES + s.batch * forwardFloatsPerSample(m, s.height, s.width) * INFER_BYTES + paramCount(m) * 4;
}

export interface MemoryLimit { bytes: number; what: string }

/** The ceiling for this backend: the wasm heap, else the machine's memory. */
export function memoryLimit(backend: string): MemoryLimit {
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
 * their memory is the GPU's or the machine's, not a fixed heap. `limit` null: no ceiling
 * is known (a GPU behind a browser, which does not say how much memory it has).
 */
export function checkTrainMemory(parts: Resolved, backend: string, warn: (s: string) => void = warning, limit: MemoryLimit | null = memoryLimit(backend)): number {
  const { cfg, model: m } = parts; // resolved once: the search for a batch that fits asks for it per candidate
  const s = trainShape(cfg);
  const need = trainStepBytes(m, s);
  if (!limit || need <= limit.bytes) return need;
  const sizeKey = cfg.training.augmentations.crop ? 'training.augmentations.crop.size' : 'data.size';
  const fit = Math.max(0, largestBatch(m, s, limit.bytes, trainStepBytes));
  const advice = fit > 1 ? `lower training.batch_size to ${fit} or less` : fit === 1 ? 'lower training.batch_size to 1' : 'batch_size 1 does not fit either';
  const msg =
    `a training step at ${sizeKey} [${s.height}, ${s.width}], training.batch_size ${s.batch}, ${modelSize(m)} ` +
    `needs about ${gib(need)}, over ${limit.what}: ${advice}, or lower ${sizeKey}${cfg.training.augmentations.crop ? '' : ' (or add a crop)'} or ${widthKey(m)}`;
  if (backend === 'wasm') throw new UserError(msg);
  warn(`warning: ${msg}`);
  return need;
}

/** Same for inference batches of evaluation and prediction (size x largest TTA scale). */
export function checkInferMemory(parts: Resolved, backend: string, batch: number, what: string): number {
  const { cfg, model: m } = parts;
  const scale = Math.max(...cfg.evaluation.scales);
  const s = { batch, height: Math.ceil(cfg.data.size[0] * scale), width: Math.ceil(cfg.data.size[1] * scale) };
  const need = inferBytes(m, s);
  if (backend !== 'wasm') return need; // only the wasm heap is a hard ceiling
  const limit = memoryLimit(backend);
  if (need > limit.bytes) {
    throw new UserError(
      `${what} at data.size [${cfg.data.size.join(', ')}] x evaluation.scales ${scale}, batch ${batch}, ${modelSize(m)} ` +
        `needs about ${gib(need)}, over ${limit.what}: lower data.size, evaluation.scales or ${widthKey(m)}`,
    );
  }
  return need;
}

function largestBatch(m: ResolvedModel, s: Shape, limit: number, bytes: (m: ResolvedModel, s: Shape) => number): number {
  let b = s.batch;
  while (b > 0 && bytes(m, { ...s, batch: b }) > limit) b--;
  return b;
}

export const selfTest: SelfTest = {
  'the parameter count matches the built U-Net'() {
    // Counted without building (used before the backend starts); the U-Net's own test
    // ties its count to the PyTorch reference.
    const cfg = parseConfig({ model: { base: 16, depth: 4 } });
    assert.equal(paramCount(resolveModel(cfg)), 1_226_305); // models/unet.ts: torch_unet.py's count
  },
  'the estimate scales with batch and pixels, and is within 25% above the measured heap for every architecture'() {
    const cfg = resolveModel(parseConfig({ model: { base: 16, depth: 4 } }));
    const a = trainStepBytes(cfg, { batch: 2, height: 128, width: 128 });
    const b = trainStepBytes(cfg, { batch: 4, height: 256, width: 256 });
    assert.ok(b > 5 * a && b < 8 * a, `${a} -> ${b}`); // 8x the pixels x batch; the parameters are a fixed part
    // The calibration table above: model, size, batch, measured heap MiB.
    const measured: [Record<string, unknown>, number, number, number][] = [
      [{ base: 16, depth: 4 }, 128, 2, 298], [{ base: 16, depth: 4 }, 128, 4, 525], [{ base: 16, depth: 4 }, 256, 4, 2036],
      [{ name: 'attention_unet' }, 128, 4, 725], [{ name: 'attention_unet' }, 256, 2, 1302],
      [{ name: 'deeplabv3plus' }, 128, 4, 806], [{ name: 'deeplabv3plus' }, 256, 2, 1400],
      [{ name: 'fpn' }, 128, 4, 1179], [{ name: 'fpn' }, 256, 2, 1279],
      [{ name: 'fast_scnn' }, 128, 8, 429], [{ name: 'fast_scnn' }, 256, 4, 838],
    ];
    for (const [model, size, batch, heap] of measured) {
      const est = trainStepBytes(resolveModel(parseConfig({ model, data: { size: [size, size] } })), { batch, height: size, width: size }) / 2 ** 20;
      assert.ok(est >= heap && est <= 1.25 * heap, `${JSON.stringify(model)} ${size}x${batch}: estimate ${est.toFixed(0)} MiB, heap ${heap} MiB`);
    }
  },
  '512 px with batch 8 on wasm is refused with the estimate and what to lower; the demo size passes'() {
    const big = parseConfig({ data: { size: [512, 512] }, training: { batch_size: 8 } });
    assert.throws(() => checkTrainMemory(resolveRun(big), 'wasm'), (e: Error) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /needs about \d+\.\d GiB, over the wasm heap limit of 4 GiB: lower training\.batch_size to 1, or lower data\.size \(or add a crop\) or model\.base$/);
      assert.equal(e.message.split('\n').length, 1);
      return true;
    });
    const huge = parseConfig({ data: { size: [8192, 8192] }, training: { batch_size: 1 } });
    assert.throws(() => checkTrainMemory(resolveRun(huge), 'wasm'), /batch_size 1 does not fit either/);
    const warned: string[] = [];
    checkTrainMemory(resolveRun(huge), 'tensorflow', (s) => warned.push(s));
    assert.equal(warned.length, os.totalmem() < trainStepBytes(resolveModel(huge), trainShape(huge)) ? 1 : 0);
    assert.ok(checkTrainMemory(resolveRun(parseConfig({})), 'wasm') < WASM_HEAP_LIMIT / 4);
  },
  'a crop sets the training size'() {
    const cfg = parseConfig({ data: { size: [1024, 1024] }, training: { batch_size: 2, augmentations: { crop: { size: [128, 128] } } } });
    assert.deepEqual(trainShape(cfg), { batch: 2, height: 128, width: 128 });
    checkTrainMemory(resolveRun(cfg), 'wasm');
  },
  'inference at 8192 px is refused, at the default size it passes'() {
    assert.throws(() => checkInferMemory(resolveRun(parseConfig({ data: { size: [8192, 8192] } })), 'wasm', 4, 'evaluation'), /evaluation at data\.size \[8192, 8192\].*lower data\.size/);
    checkInferMemory(resolveRun(parseConfig({})), 'wasm', 4, 'evaluation');
  },
};

runIfMain(module, selfTest);
