// Where a run starts: from scratch, from given weights (--weights / checkpoint.weights:
// a checkpoint folder or an exported model.json),
// or, with --resume, from last/ with its optimizer state, step and best metric.
// The data pipeline draws its randomness from (seed, epoch, position in epoch), so the
// seed plus epoch and step is the whole random-generator state a resume needs, as long
// as the epoch has the same shape. When the data or the batch size changed since the
// save, steps per epoch can differ: the run then keeps its completed epochs and the
// share of the interrupted epoch it had done, rebases its step, and says it is no longer
// bit-exact (refusing would strand the run; looping on a step past the epoch hung it).
// A fresh start over an earlier run's checkpoints is refused unless asked for.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type * as tf from '../backends/tf';
import type { Config } from '../utils/config';
import type { Resolved } from '../config/resolve';
import { UserError } from '../utils/errors';
import type { TrainOptimizer } from '../training/optimizers';
import { runIfMain, SelfTest } from '../utils/self_test';
import { applyMatchingWeights, applyWeights, checkpointExists, CheckpointMeta, loadCheckpoint } from '../storage/checkpoint';
import { existsOrOldCopy, whyIncomplete } from '../storage/atomic_dir';
import { loadWeightsFrom, refuseChangedDefinition } from './model_io';
import { pretrainedWeights } from '../models/encoders/index';
import { resultsOfRun, RunDirs } from './run_dirs';

export interface StartOptions {
  resume?: boolean;
  weights?: string | null;
  /** A fresh start may replace an earlier run's last/ and best/ (train --overwrite). */
  overwrite?: boolean;
}

/** The shape of an epoch of the current data: what resume compares with the checkpoint's. */
export interface EpochShape {
  stepsPerEpoch: number;
  trainPairs: number;
}

/**
 * Refuses a fresh start (no --resume) where an earlier run's last/ or best/ exists, or
 * its results folder holds a run's results (another checkpoint.ckpt_root does not make
 * them another run's to wipe), unless `overwrite`.
 */
export function refuseOverwrite(dirs: RunDirs, opts: StartOptions): void {
  if (opts.resume || opts.overwrite) return;
  const found = [dirs.last, dirs.best].filter((d) => existsOrOldCopy(d));
  if (!found.length) {
    const held = resultsOfRun(dirs.results);
    if (held) throw new UserError(`${dirs.results} already holds a run's results (${held}); pick another name (--set name=...), or pass --overwrite (library: overwrite: true) to replace them`);
    return;
  }
  const what = found.map((d) => path.basename(d) + '/').join(' and ');
  throw new UserError(`${dirs.ckpt} already holds a run (${what}); continue it with --resume, pick another name (--set name=...), or pass --overwrite to replace it`);
}

/**
 * Fits a resumed state (`meta`, as saved) to the current epoch shape: when steps per
 * epoch changed, rebases `meta.step` to the same share of the interrupted epoch.
 * Returns a warning when the resume is not bit-exact, else null.
 */
export function alignResume(meta: CheckpointMeta, now: EpochShape, cfg: Config, source: string): string | null {
  const spe = now.stepsPerEpoch;
  const saved = (meta.config ?? {}) as { training?: { batch_size?: unknown }; data?: { limit?: unknown } };
  const changed: string[] = [];
  if (meta.trainPairs !== undefined && meta.trainPairs !== now.trainPairs) changed.push(`training pairs ${meta.trainPairs} -> ${now.trainPairs}`);
  const batch = saved.training?.batch_size;
  if (typeof batch === 'number' && batch !== cfg.training.batch_size) changed.push(`training.batch_size ${batch} -> ${cfg.training.batch_size}`);
  const limit = saved.data?.limit;
  if (typeof limit === 'number' && limit !== cfg.data.limit) changed.push(`data.limit ${limit} -> ${cfg.data.limit}`);
  const why = changed.length ? changed.join(', ') : 'the training data changed';
  // Not recorded (older checkpoints) and nothing known changed: take the shape as the same.
  const oldSpe = meta.stepsPerEpoch ?? (changed.length ? undefined : spe);
  const pos = meta.step - meta.epoch * spe;
  if (oldSpe === spe || (oldSpe === undefined && pos >= 0 && pos < spe)) {
    // Same shape: the step alone fixes the position (older runs that ended mid-epoch on
    // training.iterations counted that epoch as done, so the epoch is recomputed).
    if (oldSpe === spe) meta.epoch = Math.floor(meta.step / spe);
    if (!changed.length) return null;
    return `warning: resume is not bit-exact: ${why} since ${source} was saved, so the samples come in another order; continuing epoch ${meta.epoch + 1} at step ${meta.step - meta.epoch * spe}/${spe}`;
  }
  const oldPos = oldSpe === undefined ? -1 : meta.step - meta.epoch * oldSpe;
  const known = oldSpe !== undefined && oldPos >= 0 && oldPos < oldSpe;
  const newPos = known ? Math.min(spe - 1, Math.floor((oldPos / oldSpe) * spe)) : 0;
  const from = meta.step;
  meta.step = meta.epoch * spe + newPos;
  const was = oldSpe === undefined ? 'a number the checkpoint does not record' : `${oldSpe}`;
  const where = known ? `at step ${newPos}/${spe}, the same share of the epoch` : 'from its start';
  return `warning: resume is not bit-exact: ${why} since ${source} was saved, so an epoch has ${spe} steps instead of ${was}; continuing epoch ${meta.epoch + 1} ${where} (global step ${from} -> ${meta.step})`;
}

/** The state a fresh run starts from. */
export function freshMeta(cfg: Config): CheckpointMeta {
  return { epoch: 0, step: 0, bestMetric: null, bestMetricName: cfg.checkpoint.best_metric, rng: { seed: cfg.training.seed }, config: cfg };
}

/**
 * `model.encoder_weights` into a fresh model: a pretrained source's weights (imagenet) or a
 * checkpoint's, loaded into the layers of the same name; logs what was loaded. Also the
 * browser training page's path (deploy/web_train/page.ts), which takes pretrained sources only.
 */
export async function loadEncoderWeights(parts: Resolved, model: tf.LayersModel, log: (s: string) => void): Promise<void> {
  const encoder = parts.cfg.model.encoder_weights;
  if (!encoder) return;
  const source = (await pretrainedWeights(parts.model.options, encoder)) ?? (await loadWeightsFrom(encoder)).weights;
  const r = applyMatchingWeights(model, source, encoder);
  const layers = (names: string[]) => [...new Set(names.map((n) => n.split('/')[0]))];
  const kept = layers(r.kept);
  log(
    `model.encoder_weights ${encoder}: loaded ${r.loaded} of ${model.weights.length} weights (${r.loadedValues} values); ` +
      (kept.length ? `${kept.length} layers start from their initialisation (${kept.slice(0, 4).join(', ')}${kept.length > 4 ? ', ...' : ''})` : 'every layer loaded') +
      (r.ignored ? `; ${r.ignored} weights of the source have no counterpart and were not used` : ''),
  );
}

/**
 * Loads what the run starts from into `model` and `optimizer`; returns the run's state,
 * fitted to the current epoch shape. `warn` gets the line when resume is not bit-exact.
 */
export async function startState(
  parts: Resolved, model: tf.LayersModel, optimizer: TrainOptimizer, dirs: RunDirs, opts: StartOptions, shape: EpochShape,
  log: (s: string) => void, warn: (s: string) => void = log,
): Promise<CheckpointMeta> {
  const { cfg } = parts;
  const meta = freshMeta(cfg);
  if (opts.resume) {
    if (!checkpointExists(dirs.last)) {
      if (!fs.existsSync(dirs.last)) {
        // Without last/ but with best/, a plain start would be refused as an overwrite: say what works.
        const start = fs.existsSync(dirs.best) ? `start afresh with --overwrite, adding --weights ${dirs.best} to start from best/` : 'start the run without --resume first';
        throw new UserError(`--resume: no checkpoint at ${dirs.last} (${start})`);
      }
      // Something is there but unverifiable: starting afresh would replace it, so say how to keep it.
      const fromBest = checkpointExists(dirs.best) ? ` (add --weights ${dirs.best} to start from best/)` : '';
      throw new UserError(`--resume: ${whyIncomplete(dirs.last)}; it was left as it is. Move it aside to keep it, then start afresh with --overwrite${fromBest}`);
    }
    const ck = await loadCheckpoint(dirs.last);
    refuseChangedDefinition(cfg, ck.meta.config, dirs.last); // before the weights: a changed network is named, not its first odd shape
    applyWeights(model, ck.weights, dirs.last);
    if (ck.optimizer) await optimizer.setState(ck.optimizer);
    Object.assign(meta, ck.meta);
    log(`resumed from ${dirs.last}: epoch ${meta.epoch}, step ${meta.step}`);
    const warning = alignResume(meta, shape, cfg, dirs.last);
    if (warning) warn(warning);
    Object.assign(meta, shape, { config: cfg });
    return meta;
  }
  await loadEncoderWeights(parts, model, log);
  const weights = opts.weights ?? cfg.checkpoint.weights;
  if (weights) {
    applyWeights(model, (await loadWeightsFrom(weights)).weights, weights);
    log(`starting from weights in ${weights}`);
  }
  return Object.assign(meta, shape);
}

const fixtures = () => import('../loaders/fixtures');
const resolved = async (cfg: Config) => (await import('../config/resolve')).resolveRun(cfg);

export const selfTest: SelfTest = {
  async '--resume without last/ says to start without it; weights load into a fresh state'() {
    const { fixtureConfig, tmpDir } = await fixtures();
    const { getModel } = await import('../models/registry');
    const { createOptimizer } = await import('../training/optimizers');
    const { saveCheckpoint } = await import('../storage/checkpoint');
    const { runDirs } = await import('./run_dirs');
    const dir = tmpDir('resume');
    const cfg = fixtureConfig(dir);
    const dirs = runDirs(cfg);
    const model = getModel(cfg);
    const opt = createOptimizer(cfg);
    const shape = { stepsPerEpoch: 4, trainPairs: 16 };
    await assert.rejects(startState(await resolved(cfg), model, opt, dirs, { resume: true }, shape, () => {}), /--resume: no checkpoint at .*start the run without --resume/);
    const src = getModel(cfg);
    src.weights[0].write(src.weights[0].read().add(1));
    await saveCheckpoint(dirs.best, src, null, { ...freshMeta(cfg), epoch: 3, step: 12 });
    const meta = await startState(await resolved(cfg), model, opt, dirs, { weights: dirs.best }, shape, () => {});
    assert.equal(meta.step, 0, 'weights only: the run starts at step 0');
    assert.deepEqual(model.weights[0].read().dataSync(), src.weights[0].read().dataSync());
    [model, src].forEach((m) => m.dispose());
    opt.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async 'model.encoder_weights loads the layers of the same name, keeps the rest, refuses another shape'() {
    const { fixtureConfig, tmpDir } = await fixtures();
    const { getModel } = await import('../models/registry');
    const { createOptimizer } = await import('../training/optimizers');
    const { saveCheckpoint } = await import('../storage/checkpoint');
    const { runDirs } = await import('./run_dirs');
    const dir = tmpDir('encw');
    const base = fixtureConfig(dir);
    // A depth-2 U-Net's weights into a depth-3 one: enc0-2, dec0-1 and the head match; enc3 and dec2 are new.
    const srcCfg = { ...base, model: { ...base.model, base: 4, depth: 2 } };
    const src = getModel(srcCfg);
    await saveCheckpoint(path.join(dir, 'src'), src, null, freshMeta(srcCfg));
    const cfg = { ...base, name: 'deeper', model: { ...base.model, base: 4, depth: 3, encoder_weights: path.join(dir, 'src') } };
    const model = getModel(cfg);
    const before = model.getLayer('enc3_conv1').getWeights()[0].dataSync().slice();
    const opt = createOptimizer(cfg);
    const lines: string[] = [];
    await startState(await resolved(cfg), model, opt, runDirs(cfg), {}, { stepsPerEpoch: 4, trainPairs: 16 }, (l) => lines.push(l));
    assert.deepEqual(model.getLayer('enc1_conv2').getWeights()[0].dataSync(), src.getLayer('enc1_conv2').getWeights()[0].dataSync());
    assert.deepEqual(model.getLayer('head').getWeights()[0].dataSync(), src.getLayer('head').getWeights()[0].dataSync());
    assert.deepEqual(model.getLayer('enc3_conv1').getWeights()[0].dataSync(), before);
    assert.match(lines[0], /^model\.encoder_weights .*src: loaded \d+ of \d+ weights \(\d+ values\); \d+ layers start from their initialisation \(enc3_conv1, /);
    // Same names, other widths: refused, naming the weight and both shapes.
    const wide = { ...cfg, model: { ...cfg.model, base: 8 } };
    const m2 = getModel(wide);
    await assert.rejects(startState(await resolved(wide), m2, opt, runDirs(wide), {}, { stepsPerEpoch: 4, trainPairs: 16 }, () => {}), (e: Error) => e instanceof UserError && /weight 'enc0_conv1\/kernel' has shape \[3,3,3,4\] there but \[3,3,3,8\] in the model/.test(e.message));
    [src, model, m2].forEach((m) => m.dispose());
    opt.dispose();
    fs.rmSync(dir, { recursive: true });
  },
  async 'a changed epoch shape keeps completed epochs and the share of the epoch, and says so'() {
    const { parseConfig } = await import('../config/resolve');
    const cfg = parseConfig({ training: { batch_size: 2 } });
    const saved = (step: number, epoch: number, extra: Partial<CheckpointMeta> = {}): CheckpointMeta =>
      ({ ...freshMeta(parseConfig({ training: { batch_size: 4 } })), step, epoch, stepsPerEpoch: 4, trainPairs: 16, ...extra });
    // Unchanged: exact, no warning.
    const same = saved(6, 1);
    assert.equal(alignResume(same, { stepsPerEpoch: 4, trainPairs: 16 }, parseConfig({ training: { batch_size: 4 } }), 'ck/last'), null);
    assert.equal(same.step, 6);
    // Batch 4 -> 2 doubles the epoch: halfway through epoch 2 (step 6 of 4-step epochs) is step 12 of 8-step ones.
    const m = saved(6, 1);
    const w = alignResume(m, { stepsPerEpoch: 8, trainPairs: 16 }, cfg, 'ck/last');
    assert.equal(m.step, 12);
    assert.match(w!, /^warning: resume is not bit-exact: training\.batch_size 4 -> 2 since ck\/last was saved, so an epoch has 8 steps instead of 4; continuing epoch 2 at step 4\/8/);
    // Fewer pairs (limit 16 -> 4, batch 2): 2 steps per epoch; position 3/4 -> 1/2; never past the epoch's end.
    const few = saved(7, 1);
    alignResume(few, { stepsPerEpoch: 2, trainPairs: 4 }, cfg, 'ck/last');
    assert.deepEqual([few.epoch, few.step], [1, 3]);
    // An older checkpoint without its epoch shape, off the current grid: the epoch restarts.
    const old = saved(7, 1, { stepsPerEpoch: undefined, trainPairs: undefined });
    assert.match(alignResume(old, { stepsPerEpoch: 2, trainPairs: 4 }, cfg, 'ck/last')!, /instead of a number the checkpoint does not record; continuing epoch 2 from its start \(global step 7 -> 2\)/);
    // Same steps per epoch but other pairs: the position stands, the order does not.
    const other = saved(5, 1);
    assert.match(alignResume(other, { stepsPerEpoch: 4, trainPairs: 17 }, parseConfig({ training: { batch_size: 4 } }), 'ck/last')!, /training pairs 16 -> 17 .*another order; continuing epoch 2 at step 1\/4$/);
    assert.equal(other.step, 5);
    // An iterations run that ended mid-epoch, saved before epochs were counted right: epoch 2 at step 6 is epoch 1.
    const ended = saved(6, 2, { stepsPerEpoch: undefined, trainPairs: undefined, config: cfg });
    assert.equal(alignResume(ended, { stepsPerEpoch: 4, trainPairs: 16 }, cfg, 'ck/last'), null);
    assert.deepEqual([ended.epoch, ended.step], [1, 6]);
  },
  async 'a fresh start over an earlier run is refused unless --overwrite or --resume'() {
    const { tmpDir } = await fixtures();
    const { runDirs } = await import('./run_dirs');
    const { parseConfig } = await import('../config/resolve');
    const dir = tmpDir('overwrite');
    const dirs = runDirs(parseConfig({ name: 'r', checkpoint: { ckpt_root: dir }, results: { root: path.join(dir, 'res') } }));
    refuseOverwrite(dirs, {});
    fs.mkdirSync(dirs.best, { recursive: true });
    assert.throws(() => refuseOverwrite(dirs, {}), (e: Error) => e instanceof UserError && e.message === `${dirs.ckpt} already holds a run (best/); continue it with --resume, pick another name (--set name=...), or pass --overwrite to replace it`);
    refuseOverwrite(dirs, { overwrite: true });
    refuseOverwrite(dirs, { resume: true });
    fs.rmSync(dirs.best, { recursive: true });
    // Results of a run whose checkpoints live elsewhere (another checkpoint.ckpt_root): refused too.
    fs.mkdirSync(dirs.results, { recursive: true });
    fs.writeFileSync(path.join(dirs.results, 'config.yaml'), 'name: r\n'); // a run that stopped before its first row
    refuseOverwrite(dirs, {});
    fs.writeFileSync(dirs.history, '{"epoch":1}\n');
    assert.throws(() => refuseOverwrite(dirs, {}), (e: Error) => e instanceof UserError && e.message.startsWith(`${dirs.results} already holds a run's results (history.jsonl); pick another name (--set name=...), or pass --overwrite`));
    refuseOverwrite(dirs, { overwrite: true });
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
