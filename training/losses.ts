// Segmentation losses by name, combined as weighted sums (`bce+dice`). A loss is declared
// once, in training/losses/<name>.ts, as a LossDefinition: its own options (the keys of
// `training.loss` it owns, a zod schema with defaults) and how it computes; `name: X`
// loads training/losses/X.ts on first use, so a new loss needs no list edited anywhere.
// The tensors the parts of one call share are in loss_context.ts.
import * as tf from '../backends/tf';
import assert from 'node:assert/strict';
import path from 'node:path';
import { z } from 'zod';
import { Config, parseSchema } from '../utils/config';
import { FolderRegistry } from '../utils/folder_registry';
import { partOptions, resolvePartSection } from '../utils/part_options';
import { UserError } from '../utils/errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { LossContext } from './loss_context';

export type LossFn = (logits: tf.Tensor4D, labels: tf.Tensor3D) => tf.Scalar;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface LossDefinition<S extends z.ZodObject<any> = z.ZodObject<any>> {
  name: string;
  /** One line: what it is (README, messages). */
  summary: string;
  /** The keys of training.loss this loss owns, with their defaults (beside LOSS_KEYS). */
  options: S;
  /** The loss of one batch: a scalar, e.g. the mean over the pixels that count. */
  compute(ctx: LossContext, o: z.infer<S>): tf.Scalar;
}

/** The training.loss keys of every loss; the rest belong to the named losses' schemas. */
export const LOSS_KEYS = ['name', 'weights', 'class_weights'] as const;

const losses = new FolderRegistry<LossDefinition>(path.join(__dirname, 'losses'), new Set(), (name, known) => `training.loss.name '${name}' is not a registered loss; registered: ${known.join(', ')} (join with '+')`);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerLoss<S extends z.ZodObject<any>>(d: LossDefinition<S>): LossDefinition<S> {
  losses.register(d as unknown as LossDefinition);
  return d;
}

/** Names of the losses in training/losses/ (and any registered from elsewhere). */
export function registeredLosses(): string[] {
  return losses.names();
}

export function getLossDefinition(name: string): LossDefinition {
  return losses.get(name);
}

/** The names of a training.loss.name: '+'-joined, case and spaces ignored. */
const lossNames = (name: string) => name.split('+').map((s) => s.trim().toLowerCase());

/**
 * training.loss with the named losses' own keys checked and their defaults filled (config/resolve.ts);
 * a misspelt name or option is one line naming the key.
 */
export function resolveLossSection(section: Record<string, unknown>, source: string, raw: unknown): Record<string, unknown> {
  const kind = { kind: 'loss', at: ['training', 'loss'], common: LOSS_KEYS, get: getLossDefinition, names: registeredLosses };
  return resolvePartSection(kind, section, lossNames(String(section.name)), source, raw).section;
}

/** training.loss resolved: each named loss's definition and own options, and what every loss gets. */
export interface ResolvedLoss {
  /** training.loss.name as written (messages). */
  name: string;
  parts: { definition: LossDefinition; options: Record<string, unknown> }[];
  weights?: number[];
  classWeights?: number[];
  numClasses: number;
  ignoreIndex: number;
}

/**
 * The loss of a config validated by config/resolve.ts: its definitions looked up and their
 * options read from the resolved section (defaults filled there), once (config/resolve.ts resolveRun).
 */
export function resolveLoss(cfg: Config): ResolvedLoss {
  const lc = cfg.training.loss;
  const parts = lossNames(lc.name).map((n) => {
    const definition = getLossDefinition(n);
    return { definition, options: partOptions(definition, lc) };
  });
  return { name: lc.name, parts, weights: lc.weights, classWeights: lc.class_weights, numClasses: cfg.data.num_classes, ignoreIndex: cfg.data.ignore_index };
}

/**
 * Builds the training loss (names joined by '+', optional weights) from the resolved loss;
 * a Config is resolved here first (tests, direct library use).
 */
export function buildLoss(loss: ResolvedLoss | Config): LossFn {
  const r = 'parts' in loss ? loss : resolveLoss(loss);
  const weights = r.weights ?? r.parts.map(() => 1);
  if (weights.length !== r.parts.length) {
    throw new UserError(`training.loss.weights: expected ${r.parts.length} numbers (one per loss in '${r.name}'), got ${weights.length}`);
  }
  if (r.classWeights && r.classWeights.length !== r.numClasses) {
    throw new UserError(`training.loss.class_weights: expected ${r.numClasses} numbers (data.num_classes), got ${r.classWeights.length}`);
  }
  const setting = { ignoreIndex: r.ignoreIndex, classWeights: r.classWeights };
  const parts = r.parts.map((p, i) => ({ d: p.definition, o: p.options, w: weights[i] })).filter((p) => p.w !== 0);
  return (logits, labels) =>
    tf.tidy(() => {
      if (logits.rank !== 4 || labels.rank !== 3) throw new Error(`loss: expected logits [N,H,W,C] and labels [N,H,W], got ${logits.shape} and ${labels.shape}`);
      const lab = labels.dtype === 'int32' ? labels : (labels.cast('int32') as tf.Tensor3D);
      const ctx = new LossContext(logits, lab, setting);
      let total: tf.Scalar = tf.scalar(0);
      for (const p of parts) {
        const v = p.d.compute(ctx, p.o);
        total = tf.add(total, p.w === 1 ? v : tf.mul(v, p.w));
      }
      return total;
    });
}

// For the self-tests: the config with training.loss resolved as config/resolve.ts resolves it (that
// module sits above this one, so it is not imported here).
function withLoss(raw: { [k: string]: unknown }, source = 'config'): Config {
  const c = parseSchema(raw, source);
  c.training.loss = resolveLossSection(c.training.loss, source, raw) as typeof c.training.loss;
  return c;
}

// ---------------------------------------------------------------------------
const cfgWith = (loss: Record<string, unknown>, numClasses = 2) =>
  withLoss({ data: { num_classes: numClasses }, training: { loss } });

export const selfTest: SelfTest = {
  'every loss in training/losses is found by its file name; a misspelt name or option is one line at parse time'() {
    assert.deepEqual(registeredLosses(), ['bce', 'ce', 'dice', 'focal', 'jaccard', 'lovasz']);
    assert.throws(() => withLoss({ training: { loss: { name: 'ce+dcie' } } }, 'x.yaml'), /^UserError: x\.yaml: key 'training\.loss\.name' has "ce\+dcie"; 'dcie' is not a registered loss; registered: bce, ce, dice, focal, jaccard, lovasz \(join with '\+'\)$/);
    assert.throws(() => withLoss({ training: { loss: { name: 'dice', smoth: 1 } } }, 'x.yaml'), /^UserError: x\.yaml: unknown key 'training\.loss\.smoth' \(check the spelling; loss 'dice' takes per_image, smooth, every loss name, weights, class_weights\)$/);
    const lc = withLoss({ training: { loss: { name: 'ce+dice', focal_gamma: 3 } } }).training.loss;
    assert.deepEqual(lc, { name: 'ce+dice', smooth: 1, per_image: false }); // another loss's key (saved configs hold all) is dropped
  },
  'ce equals -log softmax at the label, ignoring ignore_index'() {
    const f = buildLoss(cfgWith({ name: 'ce' }, 3));
    const logits = tf.tensor4d([1, 2, 3, 0, 0, 0, 5, 5, 5], [1, 1, 3, 3]);
    const labels = tf.tensor3d([2, 0, 255], [1, 1, 3], 'int32');
    const v = f(logits, labels).dataSync()[0];
    const l0 = -(3 - Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)));
    const expect = (l0 + Math.log(3)) / 2;
    assert.ok(Math.abs(v - expect) < 1e-5, `${v} vs ${expect}`);
  },
  'per-image dice is the mean of the images\' dice; batch dice pools the pixels'() {
    // Image 0: a large mask predicted well; image 1: a one-pixel mask missed.
    const logits = tf.tensor4d([9, 9, 9, -9, -9, -9, -9, -9], [2, 2, 2, 1]);
    const labels = tf.tensor3d([1, 1, 1, 0, 0, 0, 0, 1], [2, 2, 2], 'int32');
    const p = logits.sigmoid().dataSync();
    const y = labels.dataSync();
    const diceOf = (lo: number, hi: number) => {
      let inter = 0, sums = 0;
      for (let i = lo; i < hi; i++) { inter += p[i] * y[i]; sums += p[i] + y[i]; }
      return { inter, sums, d: (2 * inter + 1) / (sums + 1) };
    };
    const a = diceOf(0, 4), b = diceOf(4, 8);
    const perImage = buildLoss(cfgWith({ name: 'dice', per_image: true }))(logits, labels).dataSync()[0];
    const pooled = buildLoss(cfgWith({ name: 'dice' }))(logits, labels).dataSync()[0];
    assert.ok(Math.abs(perImage - (1 - (a.d + b.d) / 2)) < 1e-5, `${perImage}`);
    assert.ok(Math.abs(pooled - (1 - (2 * (a.inter + b.inter) + 1) / (a.sums + b.sums + 1))) < 1e-5, `${pooled}`);
    assert.ok(perImage > pooled + 0.1, `the missed small mask weighs more per image: ${perImage} vs ${pooled}`);
  },
  'per-image multi-class dice with class weights ignores ignored pixels'() {
    const logits = tf.randomNormal([2, 3, 3, 3], 0, 2, 'float32', 7) as tf.Tensor4D;
    const lab = [0, 1, 2, 255, 1, 1, 0, 2, 2, 2, 2, 2, 1, 0, 255, 255, 1, 0];
    const labels = tf.tensor3d(lab, [2, 3, 3], 'int32');
    const cw = [1, 2, 0.5];
    const v = buildLoss(cfgWith({ name: 'dice', per_image: true, class_weights: cw }, 3))(logits, labels).dataSync()[0];
    const pr = tf.softmax(logits).dataSync();
    let total = 0;
    for (let n = 0; n < 2; n++) {
      let row = 0;
      for (let c = 0; c < 3; c++) {
        let inter = 0, sums = 0;
        for (let i = 0; i < 9; i++) {
          const l = lab[n * 9 + i];
          if (l === 255) continue;
          const pc = pr[(n * 9 + i) * 3 + c];
          inter += pc * (l === c ? 1 : 0);
          sums += pc + (l === c ? 1 : 0);
        }
        row += cw[c] * (2 * inter + 1) / (sums + 1);
      }
      total += row / 3.5;
    }
    assert.ok(Math.abs(v - (1 - total / 2)) < 1e-5, `${v} vs ${1 - total / 2}`);
  },
  'ohem averages ce over the hard pixels only, at least min_kept of them'() {
    // True-class probabilities: 0.96, 0.33, 0.11, 0.96 (pixel 4 ignored).
    const logits = tf.tensor4d([4, 0, 0, 0, 0, 0, 0, 2, 0], [1, 1, 3, 3]).concat(tf.tensor4d([0, 0, 4, 9, 9, 9], [1, 1, 2, 3]), 2);
    const labels = tf.tensor3d([0, 1, 0, 2, 255], [1, 1, 5], 'int32');
    const nll = tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor3d([0, 1, 0, 2, 0], [1, 1, 5], 'int32'), 3)), -1)).dataSync();
    const ohem = (thresh: number, min_kept: number) => buildLoss(cfgWith({ name: 'ce', ohem: { thresh, min_kept } }, 3))(logits, labels).dataSync()[0];
    const near = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-5, `${a} vs ${b}`);
    near(ohem(0.7, 1), (nll[1] + nll[2]) / 2); // below 0.7: pixels 1 and 2
    near(ohem(0.3, 1), nll[2]); // only pixel 2 is below 0.3
    near(ohem(0.3, 2), (nll[1] + nll[2]) / 2); // the two hardest, though pixel 1 is above 0.3
    near(ohem(0.3, 99), buildLoss(cfgWith({ name: 'ce' }, 3))(logits, labels).dataSync()[0]); // fewer valid pixels than min_kept: all
  },
  'boundary weighs the pixels next to another class 1 + weight times'() {
    // Labels 0 0 1 255 255 in a row, width 1: pixels 1 and 2 touch another class; pixel 0
    // does not, and the ignored pixels are no class.
    const logits = tf.tensor4d([1, 0, 2, 0, 0, 1, 3, 0, 0, 0], [1, 1, 5, 2]);
    const labels = tf.tensor3d([0, 0, 1, 255, 255], [1, 1, 5], 'int32');
    const nll = tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor3d([0, 0, 1, 0, 0], [1, 1, 5], 'int32'), 2)), -1)).dataSync();
    const v = buildLoss(cfgWith({ name: 'ce', boundary: { weight: 2, width: 1 } }))(logits, labels).dataSync()[0];
    const expect = (nll[0] + 3 * nll[1] + 3 * nll[2]) / 7;
    assert.ok(Math.abs(v - expect) < 1e-5, `${v} vs ${expect}`);
  },
};

runIfMain(module, selfTest);
