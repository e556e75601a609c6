// The training loop: epochs or iterations, LR schedule, validation, checkpoints
// (last/ and best/), exact resume, SIGINT/SIGTERM handling, history and report.
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { listSplit } from '../loaders';
import { BatchLoader } from '../pipeline/batcher';
import { getModel } from '../models';
import { Config, dumpConfig } from '../utils/config';
import { UserError } from '../utils/errors';
import { History } from './history';
import { buildLoss } from '../utils/losses';
import { lrAt } from '../utils/lr_schedule';
import { createOptimizer } from '../utils/optimizers';
import { EpochProgress } from './progress';
import { applyWeights, checkpointExists, loadCheckpoint, saveCheckpoint, CheckpointMeta } from './checkpoint/store';
import { loadWeightsFrom } from './model_io';
import { acquireRunLock, LOCK_FILE } from './checkpoint/run_lock';
import { evalOptionsFrom, evaluateSplit, EvalResult } from './evaluator';
import { writeResults } from './results';
import { makeTrainStep } from './train_step';
import assert from 'node:assert/strict';
import { fixtureConfig, tmpDir } from '../test/fixtures/datasets';
import { initBackend } from '../backends';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface TrainOptions {
  /** Continue from ckpt_root/<name>/last. */
  resume?: boolean;
  /** Start from these weights (a checkpoint folder or an exported model.json); overrides checkpoint.weights. */
  weights?: string | null;
  /** The config file, for the "resume with" hint. */
  configPath?: string;
  /** Print nothing but errors (tests). */
  quiet?: boolean;
  /** Backend description, for the report. */
  backend?: string;
  /** Skip the final evaluation with overlays and report (tests). */
  skipResults?: boolean;
  /** Stop (as if interrupted) once this global step is reached (tests of resume). */
  stopAtStep?: number;
  /** Called after every training step (tests: tensor counts, fault injection). */
  onStep?: (step: number, model: tf.LayersModel) => void;
}

export interface TrainOutcome {
  model: tf.LayersModel;
  epoch: number;
  step: number;
  interrupted: boolean;
  lastDir: string;
  bestDir: string;
  resultsDir: string;
  final?: EvalResult;
}

export function runDirs(cfg: Config) {
  const ckpt = path.join(cfg.checkpoint.ckpt_root, cfg.name);
  return { ckpt, last: path.join(ckpt, 'last'), best: path.join(ckpt, 'best'), results: path.join(cfg.results.root, cfg.name) };
}

/** Reads 'val.mIoU' style names out of a validation result. */
function metricValue(name: string, res: EvalResult): number {
  const key = name.replace(/^val\./, '');
  const v = res.metrics[key];
  if (v === undefined) {
    throw new UserError(`checkpoint.best_metric '${name}' is not a validation metric; available: ${Object.keys(res.metrics).map((k) => 'val.' + k).join(', ')}`);
  }
  return v;
}

/** Trains under the checkpoint folder's lock: one run per folder at a time. */
export async function train(cfg: Config, opts: TrainOptions = {}): Promise<TrainOutcome> {
  const { ckpt } = runDirs(cfg);
  fs.mkdirSync(ckpt, { recursive: true });
  const release = acquireRunLock(ckpt);
  try {
    return await trainLocked(cfg, opts);
  } finally {
    release();
  }
}

async function trainLocked(cfg: Config, opts: TrainOptions): Promise<TrainOutcome> {
  const log = opts.quiet ? () => {} : (s: string) => console.log(s);
  const dirs = runDirs(cfg);
  const t = cfg.training;

  const trainPairs = await listSplit(cfg, cfg.data.train_split);
  const valPairs = await listSplit(cfg, cfg.data.val_split);
  log(`data: ${cfg.data.name} at ${cfg.data.root}: ${trainPairs.length} training pairs (${cfg.data.train_split}), ${valPairs.length} validation pairs (${cfg.data.val_split})`);

  const model = getModel(cfg);
  const optimizer = createOptimizer(cfg);
  const lossFn = buildLoss(cfg);
  // The data pipeline draws its randomness from (seed, epoch, position in epoch), so the
  // seed plus epoch and step is the whole random-generator state a resume needs.
  const meta: CheckpointMeta = { epoch: 0, step: 0, bestMetric: null, bestMetricName: cfg.checkpoint.best_metric, rng: { seed: t.seed }, config: cfg };

  if (opts.resume) {
    if (!checkpointExists(dirs.last)) throw new UserError(`--resume: no checkpoint at ${dirs.last} (start the run without --resume first)`);
    const ck = await loadCheckpoint(dirs.last);
    applyWeights(model, ck.weights, dirs.last);
    if (ck.optimizer) await optimizer.setState(ck.optimizer);
    Object.assign(meta, ck.meta, { config: cfg });
    log(`resumed from ${dirs.last}: epoch ${meta.epoch}, step ${meta.step}`);
  } else {
    const weights = opts.weights ?? cfg.checkpoint.weights;
    if (weights) {
      applyWeights(model, (await loadWeightsFrom(weights)).weights, weights);
      log(`starting from weights in ${weights}`);
    }
  }

  fs.writeFileSync(path.join(dirs.ckpt, 'config.yaml'), dumpConfig(cfg)); // folder made by train()
  fs.mkdirSync(dirs.results, { recursive: true });
  fs.writeFileSync(path.join(dirs.results, 'config.yaml'), dumpConfig(cfg));
  const history = new History(path.join(dirs.results, 'history.jsonl'));
  history.reset(opts.resume ? meta.step : null);

  const loader = new BatchLoader(cfg, trainPairs, { train: true });
  const spe = loader.stepsPerEpoch;
  if (spe === 0) throw new UserError(`data: ${trainPairs.length} training pairs is fewer than training.batch_size ${t.batch_size}`);
  const totalSteps = t.iterations ?? t.epochs * spe;
  const totalEpochs = Math.ceil(totalSteps / spe);
  const step = makeTrainStep(model, lossFn, optimizer);

  let lastSavedStep = -1;
  const save = async (dir: string) => {
    await saveCheckpoint(dir, model, await optimizer.getState(), { ...meta, savedAt: new Date().toISOString() });
    if (dir === dirs.last) lastSavedStep = meta.step;
  };

  let stopSignal: string | null = null;
  const onSignal = (sig: string) => {
    if (stopSignal) process.exit(130); // second Ctrl-C: leave now; the last checkpoint stays loadable
    stopSignal = sig;
    log(`\n${sig}: finishing the current step, then saving ${dirs.last}`);
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);

  const started = Date.now();
  let timeUp = false;
  let interrupted = false;
  try {
    while (meta.step < totalSteps && !interrupted && !timeUp) {
      const epoch = meta.epoch;
      const skip = meta.step - epoch * spe;
      const epochEnd = Math.min((epoch + 1) * spe, totalSteps);
      const bar = opts.quiet ? null : new EpochProgress(epoch, totalEpochs, epochEnd - epoch * spe, skip);
      let lossSum = 0;
      let lossN = 0;
      for await (const batch of loader.batches(epoch, skip)) {
        const lr = lrAt(t.lr_schedule, t.optimizer.lr, meta.step, totalSteps, spe);
        optimizer.setLearningRate(lr);
        const loss = step(batch);
        if (!Number.isFinite(loss)) {
          bar?.stop();
          throw new UserError(
            `loss became ${loss} at epoch ${epoch + 1}, step ${meta.step + 1}; training stopped. The last good checkpoint is kept in ${dirs.last}. Try a lower training.optimizer.lr or set training.grad_clip`,
          );
        }
        meta.step++;
        lossSum += loss;
        lossN++;
        bar?.update(meta.step - epoch * spe, loss, lr, batch.n);
        if (meta.step % t.print_interval === 0) {
          history.append({ epoch, step: meta.step, split: 'train', loss: lossSum / lossN, lr });
          lossSum = lossN = 0;
        }
        if (cfg.checkpoint.save_every_iters && meta.step % cfg.checkpoint.save_every_iters === 0 && meta.step < epochEnd) await save(dirs.last);
        opts.onStep?.(meta.step, model);
        if (opts.stopAtStep !== undefined && meta.step >= opts.stopAtStep) stopSignal = stopSignal ?? 'stop';
        if (stopSignal && meta.step < epochEnd) {
          interrupted = true;
          break;
        }
        if (t.time_limit && (Date.now() - started) / 1000 >= t.time_limit) {
          timeUp = true;
          break;
        }
        if (meta.step >= epochEnd) break;
      }
      bar?.stop();
      if (interrupted) break;
      if (lossN) history.append({ epoch, step: meta.step, split: 'train', loss: lossSum / lossN, lr: optimizer.getLearningRate() });
      const epochDone = meta.step === epochEnd;
      if (epochDone) meta.epoch = epoch + 1;
      const finished = meta.step >= totalSteps || timeUp;
      if ((epochDone && meta.epoch % t.val_interval === 0) || finished) {
        // No test-time augmentation here: it multiplies validation time; the final report uses it.
        const res = await evaluateSplit(model, cfg, valPairs, { ...evalOptionsFrom(cfg), tta: [], scales: [1] });
        history.append({ epoch: meta.epoch, step: meta.step, split: 'val', ...res.metrics });
        log(res.table);
        const value = metricValue(cfg.checkpoint.best_metric, res);
        if (meta.bestMetric === null || value > meta.bestMetric) {
          meta.bestMetric = value;
          await save(dirs.best);
          log(`new best ${cfg.checkpoint.best_metric} = ${value.toFixed(4)}: saved ${dirs.best}`);
        }
      }
      if ((epochDone && meta.epoch % cfg.checkpoint.save_interval === 0) || finished) await save(dirs.last);
      if (stopSignal) interrupted = meta.step < totalSteps;
    }
    if (interrupted) {
      if (lastSavedStep !== meta.step) await save(dirs.last);
      const cmd = `npx train --config ${opts.configPath ?? '<config>'} --resume`;
      log(`stopped at epoch ${meta.epoch + 1}, step ${meta.step}; saved ${dirs.last}. Resume with: ${cmd}`);
    }
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    step.dispose();
  }

  const outcome: TrainOutcome = { model, epoch: meta.epoch, step: meta.step, interrupted, lastDir: dirs.last, bestDir: dirs.best, resultsDir: dirs.results };
  if (!interrupted && !opts.skipResults) {
    if (timeUp) log(`training.time_limit of ${t.time_limit} s reached at step ${meta.step}`);
    // The report shows the best checkpoint's predictions, the one a user would keep.
    const hasBest = checkpointExists(dirs.best);
    if (hasBest) applyWeights(model, (await loadCheckpoint(dirs.best)).weights, dirs.best);
    log(`final evaluation of ${hasBest ? dirs.best : 'the last weights'} on ${valPairs.length} ${cfg.data.val_split} pairs, writing ${dirs.results}`);
    outcome.final = await writeResults(model, cfg, valPairs, history.read(), { trainSeconds: (Date.now() - started) / 1000, quiet: opts.quiet, backend: opts.backend });
    log(`checkpoints: ${dirs.last} (latest), ${dirs.best} (best ${cfg.checkpoint.best_metric} = ${meta.bestMetric?.toFixed(4)})`);
    log(`report: ${path.join(dirs.results, 'report.html')}`);
  }
  return outcome;
}

export const selfTest: SelfTest = {
  async 'a tiny run writes last/, best/, history, metrics and the report; a second run on its folder is refused'() {
    await initBackend('wasm');
    const dir = tmpDir('trainer');
    const cfg = fixtureConfig(dir);
    const first = train(cfg, { quiet: true });
    await assert.rejects(train(cfg, { quiet: true }), (e: Error) => e instanceof UserError && /in use by another training run/.test(e.message));
    const out = await first;
    assert.ok(!fs.existsSync(path.join(runDirs(cfg).ckpt, LOCK_FILE)), 'lock released');
    assert.equal(out.epoch, 2);
    assert.equal(out.step, 8);
    assert.ok(checkpointExists(out.lastDir) && checkpointExists(out.bestDir));
    const meta = (await loadCheckpoint(out.lastDir)).meta;
    assert.equal(meta.step, 8);
    for (const f of ['history.jsonl', 'metrics.json', 'report.html', 'config.yaml']) assert.ok(fs.existsSync(path.join(out.resultsDir, f)), f);
    const vals = new History(path.join(out.resultsDir, 'history.jsonl')).read().filter((r) => r.split === 'val');
    assert.deepEqual(vals.map((r) => r.epoch), [1, 2]);
    assert.ok(out.final && out.final.metrics.dice >= 0 && out.final.metrics.dice <= 1);
    out.model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
