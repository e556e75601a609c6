// Checks made once before the first training step (and before evaluate or predict
// read anything), so that a setting that cannot work fails in a second with one line
// instead of after an epoch, and one that works but is probably not meant says so.
// What the schema (utils/config.ts) can check alone stays there; this is what needs
// two keys together, the backend or the command line.
import assert from 'node:assert/strict';
import os from 'node:os';
import { Config, isBinary, outChannels } from '../utils/config';
import { parseConfig, Resolved, resolveRun } from '../config/resolve';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { metricNames } from './evaluator';
import { checkInferMemory, checkTrainMemory, MemoryLimit } from './memory';
import { warning } from '../utils/warnings';

export type Warn = (line: string) => void;

/** checkpoint.best_metric names a metric that validation reports for this problem. */
export function checkBestMetric(cfg: Config): void {
  const name = cfg.checkpoint.best_metric;
  const names = metricNames(isBinary(cfg));
  if (names.includes(name.replace(/^val\./, ''))) return;
  const binaryOnly = metricNames(true).includes(name.replace(/^val\./, ''));
  const why = binaryOnly ? ` is reported for binary runs only (data.num_classes 2; this run has ${cfg.data.num_classes})` : ' is not a validation metric';
  throw new UserError(`checkpoint.best_metric '${name}'${why}; choose one of ${names.map((n) => 'val.' + n).join(', ')}`);
}

/** model.out_channels fits data.num_classes: 'auto', 1 or 2 for binary, num_classes otherwise. */
export function checkOutChannels(cfg: Config): void {
  const o = cfg.model.out_channels;
  if (o === 'auto') return;
  const k = cfg.data.num_classes;
  if (k === 2 ? o === 1 || o === 2 : o === k) return;
  const allowed = k === 2 ? "'auto', 1 (sigmoid) or 2 (softmax)" : `'auto' or ${k} (one output per class)`;
  throw new UserError(`model.out_channels is ${o} but data.num_classes is ${k}: the model would not predict every class; set model.out_channels to ${allowed}`);
}

/** A crop larger than every (scaled) image only pads: each sample is mostly ignored border. */
export function checkAugmentations(cfg: Config, warn: Warn): void {
  const a = cfg.training.augmentations;
  if (!a.crop) return;
  const maxScale = a.scale ? a.scale.range[1] : 1;
  const [h, w] = cfg.data.size;
  const [ch, cw] = a.crop.size;
  if (ch > h * maxScale || cw > w * maxScale) {
    warn(
      `warning: training.augmentations.crop.size [${ch}, ${cw}] is larger than data.size [${h}, ${w}]${a.scale ? ` at the largest scale ${maxScale}` : ''}: ` +
        `every crop is padded with the ignore index; lower the crop or raise data.size`,
    );
  }
}

/**
 * data.ignore_index must not be a class id: that class would count in no loss and no
 * metric (seen: exit 0 with best Dice 0).
 */
export function checkIgnoreIndex(cfg: Config): void {
  const { ignore_index: ii, num_classes: k } = cfg.data;
  if (ii < k) {
    throw new UserError(`data.ignore_index ${ii} is one of the classes (data.num_classes ${k}: ids 0 to ${k - 1}): that class would count in no loss and no metric; use 255, or another value of ${k} or more`);
  }
}

/** More loader workers than cores only costs memory (each decodes its own batch) and time. */
export function checkWorkers(cfg: Config, warn: Warn, cores?: number): void {
  const n = cfg.training.workers;
  if (n <= 2) return; // never too many, and the cores are not asked for (a browser has no os)
  cores ??= os.availableParallelism?.() ?? os.cpus().length;
  if (n > Math.max(2, 2 * cores)) {
    warn(`warning: training.workers ${n} is far more than the ${cores} cores here: each worker holds its own images, so memory grows and loading gets slower; ${cores} is enough`);
  }
}

/** Checks shared by every command that runs the model. */
function checkModel(cfg: Config): void {
  checkOutChannels(cfg);
  checkIgnoreIndex(cfg);
}

export interface TrainPreflight {
  resume?: boolean;
  weights?: string | null;
  /** tf.getBackend(): 'wasm', 'tensorflow', 'cpu'. */
  backend: string;
  warn?: Warn;
  /** The step's memory ceiling: by default memoryLimit(backend); null where none is known (a GPU behind a browser). */
  memoryLimit?: MemoryLimit | null;
}

/** Everything train checks before building the model; throws the first problem as one line. */
export function preflightTrain(parts: Resolved, o: TrainPreflight): void {
  const { cfg } = parts;
  const warn = o.warn ?? warning;
  if (o.resume && o.weights) {
    throw new UserError(`--weights ${o.weights} with --resume: a resumed run continues from its own last/ weights; drop --weights, or start a new run (another name) from those weights`);
  }
  checkModel(cfg);
  checkBestMetric(cfg);
  checkAugmentations(cfg, warn);
  checkWorkers(cfg, warn);
  checkTrainMemory(parts, o.backend, warn, o.memoryLimit);
  // Validation runs at data.size with the training batch size.
  checkInferMemory(parts, o.backend, cfg.training.batch_size, 'validation');
}

/** evaluate and predict: the model and its inference batches, and the threshold if given. */
export function preflightInference(parts: Resolved, o: { backend: string; batch: number; what: string; threshold?: unknown }): void {
  checkModel(parts.cfg);
  checkThreshold(o.threshold);
  checkInferMemory(parts, o.backend, o.batch, o.what);
}

/** --threshold: a probability. yargs turns `abc` into NaN, so this also catches non-numbers. */
export function checkThreshold(t: unknown): void {
  if (t === undefined) return;
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0 || t > 1) {
    throw new UserError(`--threshold ${Number.isNaN(t) ? '(not a number)' : String(t)}: expected a foreground probability from 0 to 1, e.g. 0.5`);
  }
}

export const selfTest: SelfTest = {
  'best_metric: a typo or a binary-only metric on a multi-class run is refused up front'() {
    checkBestMetric(parseConfig({ checkpoint: { best_metric: 'val.dice' } }));
    checkBestMetric(parseConfig({ checkpoint: { best_metric: 'mIoU' } }));
    assert.throws(() => checkBestMetric(parseConfig({ checkpoint: { best_metric: 'val.mIOU' } })), /'val\.mIOU' is not a validation metric; choose one of val\.mIoU, val\.mDice/);
    const multi = parseConfig({ data: { num_classes: 4 }, checkpoint: { best_metric: 'val.dice' } });
    assert.throws(() => checkBestMetric(multi), (e: Error) => e instanceof UserError && /binary runs only.*this run has 4\); choose one of val\.mIoU, val\.mDice, val\.pixel_acc, val\.mean_acc$/.test(e.message));
  },
  'out_channels: auto, 1 or 2 for binary, exactly num_classes otherwise'() {
    for (const o of ['auto', 1, 2]) checkOutChannels(parseConfig({ model: { out_channels: o } }));
    checkOutChannels(parseConfig({ model: { out_channels: 4 }, data: { num_classes: 4 } }));
    assert.throws(() => checkOutChannels(parseConfig({ model: { out_channels: 3 } })), /out_channels is 3 but data\.num_classes is 2.*'auto', 1 \(sigmoid\) or 2/);
    for (const o of [1, 2, 7]) assert.throws(() => checkOutChannels(parseConfig({ model: { out_channels: o }, data: { num_classes: 4 } })), new RegExp(`out_channels is ${o} but data\\.num_classes is 4:.*'auto' or 4`));
    assert.equal(outChannels(parseConfig({ data: { num_classes: 4 } })), 4);
  },
  'a crop larger than the largest scaled image warns; one within it does not'() {
    const warned: string[] = [];
    const w = (s: string) => warned.push(s);
    checkAugmentations(parseConfig({ data: { size: [64, 64] }, training: { augmentations: { crop: { size: [96, 64] } } } }), w);
    checkAugmentations(parseConfig({ data: { size: [64, 64] }, training: { augmentations: { crop: { size: [96, 64] }, scale: { range: [1, 1.5] } } } }), w);
    checkAugmentations(parseConfig({ data: { size: [64, 64] }, training: { augmentations: { crop: { size: [48, 48] } } } }), w);
    assert.equal(warned.length, 1);
    assert.match(warned[0], /^warning: training\.augmentations\.crop\.size \[96, 64\] is larger than data\.size \[64, 64\]: every crop is padded/);
  },
  '--weights with --resume, and memory past the wasm heap, are refused before anything runs'() {
    const cfg = resolveRun(parseConfig({}));
    assert.throws(() => preflightTrain(cfg, { backend: 'wasm', resume: true, weights: 'ck/best' }), /--weights ck\/best with --resume: .*drop --weights/);
    preflightTrain(cfg, { backend: 'wasm', resume: true, weights: null });
    preflightTrain(cfg, { backend: 'wasm', weights: 'ck/best' });
    assert.throws(() => preflightTrain(resolveRun(parseConfig({ data: { size: [512, 512] }, training: { batch_size: 8 } })), { backend: 'wasm' }), /over the wasm heap limit of 4 GiB/);
  },
  'an ignore index that is a class id is refused; far too many workers warn'() {
    checkIgnoreIndex(parseConfig({ data: { num_classes: 11, ignore_index: 11 } }));
    assert.throws(() => checkIgnoreIndex(parseConfig({ data: { ignore_index: 1 } })), /^UserError: data\.ignore_index 1 is one of the classes \(data\.num_classes 2: ids 0 to 1\)/);
    assert.throws(() => preflightTrain(resolveRun(parseConfig({ data: { num_classes: 19, ignore_index: 0 } })), { backend: 'wasm' }), /ignore_index 0 is one of the classes/);
    const warned: string[] = [];
    checkWorkers(parseConfig({ training: { workers: 4 } }), (s) => warned.push(s), 2);
    checkWorkers(parseConfig({ training: { workers: 64 } }), (s) => warned.push(s), 2);
    assert.deepEqual(warned, ['warning: training.workers 64 is far more than the 2 cores here: each worker holds its own images, so memory grows and loading gets slower; 2 is enough']);
  },
  'thresholds are probabilities'() {
    for (const t of [undefined, 0, 0.5, 1]) checkThreshold(t);
    assert.throws(() => checkThreshold(2), /^UserError: --threshold 2: expected a foreground probability from 0 to 1/);
    assert.throws(() => checkThreshold(NaN), /--threshold \(not a number\)/);
    assert.throws(() => checkThreshold(-0.1), /--threshold -0\.1/);
    assert.throws(() => preflightInference(resolveRun(parseConfig({})), { backend: 'wasm', batch: 1, what: 'prediction', threshold: 1.5 }), /--threshold 1\.5/);
  },
};

runIfMain(module, selfTest);
