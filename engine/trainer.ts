// The training loop: epochs or iterations, LR schedule, validation, checkpoints
// (last/ and best/), history and the final report. The pieces it is built from live
// beside it: where a run starts (resume.ts), when it stops (stop.ts), validation and
// the best metric (validation.ts), saving (run_checkpoints.ts).
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '../backends/tf';
import { listSplit, PairRef } from '../loaders/registry';
import { Batch, BatchLoader } from '../pipeline/batcher';
import { getModel } from '../models/registry';
import { Config, dumpConfig } from '../utils/config';
import { Resolved, resolveRun } from '../config/resolve';
import { guardFsSync, isAllocationFailure, UserError } from '../utils/errors';
import { buildLoss } from '../training/losses';
import { lrAt } from '../training/lr_schedule';
import { createOptimizer, TrainOptimizer } from '../training/optimizers';
import { CheckpointMeta, applyWeights, checkpointExists, loadCheckpoint } from '../storage/checkpoint';
import { acquireRunLock, LOCK_FILE } from './run_lock';
import type { EvalResult } from './evaluator';
import { History, HistoryRow } from '../storage/history';
import { BOARD_IMAGES, RunBoard } from './run_board';
import { EpochProgress } from './progress';
import { writeResults } from './results';
import { refuseOverwrite, startState } from './resume';
import { RunCheckpoints } from './run_checkpoints';
import { RunDirs, runDirs } from './run_dirs';
import { StopConditions } from './stop';
import { trainShape, trainStepBytes, gib, memoryLimit, modelSize, widthKey } from './memory';
import { preflightTrain } from './preflight';
import { makeTrainStep, TrainStep } from './train_step';
import { improves, metricValue, validate } from './validation';
import assert from 'node:assert/strict';
import { initBackend } from '../backends';
import { DeviceError } from '../backends/webgpu_errors';
import { runIfMain, SelfTest } from '../utils/self_test';
import { clearStaleReplacements, writeFileReplacing } from '../utils/file_out';
import { quietWarning, warning } from '../utils/warnings';

export interface TrainOptions {
  /** Continue from ckpt_root/<name>/last. */
  resume?: boolean;
  /** Start from these weights (a checkpoint folder or an exported model.json); overrides checkpoint.weights. */
  weights?: string | null;
  /** A fresh start may replace an earlier run's last/ and best/ (train --overwrite). */
  overwrite?: boolean;
  /** The config file, for the "resume with" hint. */
  configPath?: string;
  /** The --set overrides and --backend the run was started with, for the "resume with" hint. */
  sets?: string[];
  backendOption?: string;
  /** Print nothing but errors (tests). */
  quiet?: boolean;
  /** Stops the run as a signal would (after the current step, saving last/): the library's way in. */
  abortSignal?: AbortSignal;
  /** Backend description, for the report. */
  backend?: string;
  /**
   * Called after every training step, before the stop checks: progress reporting, or
   * stopping at a chosen step by aborting `abortSignal` from here. The model is the one
   * being trained, as a Keras callback sees it: change its weights only knowingly.
   */
  onStep?: (info: StepInfo) => void;
}

/** What `onStep` is told after each step. */
export interface StepInfo {
  /** Global steps done, this one included (as saved in a checkpoint's meta). */
  step: number;
  /** The epoch this step belongs to, from 0. */
  epoch: number;
  /** This step's loss. */
  loss: number;
  /** The learning rate this step used. */
  lr: number;
  model: tf.LayersModel;
}

export interface TrainOutcome {
  model: tf.LayersModel;
  epoch: number;
  step: number;
  interrupted: boolean;
  /** What stopped an interrupted run: 'SIGINT', 'SIGTERM' or 'abort' (abortSignal). */
  stoppedBy: string | null;
  lastDir: string;
  bestDir: string;
  resultsDir: string;
  final?: EvalResult;
}

/**
 * Trains the resolved run (config/resolve.ts resolveRun: its parts looked up once) under the
 * checkpoint folder's lock: one run per folder at a time.
 */
export async function train(parts: Resolved, opts: TrainOptions = {}): Promise<TrainOutcome> {
  const { cfg } = parts;
  preflightTrain(parts, { resume: opts.resume, weights: opts.weights, backend: tf.getBackend() });
  const { ckpt } = runDirs(cfg);
  const release = guardFsSync({ path: ckpt, what: 'run folder', setting: 'checkpoint.ckpt_root' }, () => {
    fs.mkdirSync(ckpt, { recursive: true });
    return acquireRunLock(ckpt);
  });
  try {
    return await trainLocked(parts, opts);
  } finally {
    release();
  }
}

/** Everything one run's loop works with. */
interface Run {
  cfg: Config;
  parts: Resolved;
  opts: TrainOptions;
  /** Results, to stdout. */
  log: (s: string) => void;
  /** Progress and diagnostics, to stderr. */
  note: (s: string) => void;
  dirs: RunDirs;
  model: tf.LayersModel;
  optimizer: TrainOptimizer;
  step: TrainStep;
  meta: CheckpointMeta;
  history: History;
  board: RunBoard;
  loader: BatchLoader;
  valPairs: PairRef[];
  stepsPerEpoch: number;
  totalSteps: number;
  totalEpochs: number;
  checkpoints: RunCheckpoints;
  stop: StopConditions;
}

/** How an epoch (or the part of it that ran) ended. */
type EpochEnd = 'done' | 'interrupted' | 'time_up';

interface EpochOutcome {
  end: EpochEnd;
  /** The epoch's last step ran (also when the time limit struck right after it). */
  epochDone: boolean;
}

async function trainLocked(parts: Resolved, opts: TrainOptions): Promise<TrainOutcome> {
  const { cfg } = parts;
  // Results (metrics, where the checkpoints and report are) on stdout; what the run is doing on stderr.
  const log = opts.quiet ? () => {} : (s: string) => console.log(s);
  const note = opts.quiet ? () => {} : (s: string) => console.error(s);
  const dirs = runDirs(cfg);
  const t = cfg.training;
  refuseOverwrite(dirs, opts); // before anything is written

  const trainPairs = await listSplit(cfg, cfg.data.train_split, parts.dataset);
  const valPairs = await listSplit(cfg, cfg.data.val_split, parts.dataset);
  note(`data: ${cfg.data.name} at ${cfg.data.root}: ${trainPairs.length} training pairs (${cfg.data.train_split}), ${valPairs.length} validation pairs (${cfg.data.val_split})`);

  const loader = new BatchLoader(cfg, trainPairs, { train: true, dataset: parts.dataset });
  const stepsPerEpoch = loader.stepsPerEpoch;
  if (stepsPerEpoch === 0) throw new UserError(`data: ${trainPairs.length} training pairs is fewer than training.batch_size ${t.batch_size}`);

  const model = getModel(parts.model);
  const optimizer = createOptimizer(parts.optimizer);
  const warn = opts.quiet ? quietWarning : warning; // a library call's receiver gets them either way
  const meta = await startState(parts, model, optimizer, dirs, opts, { stepsPerEpoch, trainPairs: trainPairs.length }, note, warn);

  guardFsSync({ what: 'run config', setting: 'checkpoint.ckpt_root' }, () => {
    clearStaleReplacements(dirs.ckpt); // half-written copies from a run killed mid-write
    writeFileReplacing(path.join(dirs.ckpt, 'config.yaml'), dumpConfig(cfg)); // folder made by train()
  });
  const history = new History(dirs.history);
  guardFsSync({ what: 'results', setting: 'results.root' }, () => {
    fs.mkdirSync(dirs.results, { recursive: true });
    clearStaleReplacements(dirs.results);
    writeFileReplacing(path.join(dirs.results, 'config.yaml'), dumpConfig(cfg));
    history.reset(opts.resume ? meta.step : null);
  });
  const board = new RunBoard(dirs.results, opts.resume ? meta.step : null); // `tensorboard --logdir results` names the run <name>
  const totalSteps = t.iterations ?? t.epochs * stepsPerEpoch;
  const run: Run = {
    cfg, parts, opts, log, note, dirs, model, optimizer, meta, history, board, loader, valPairs, stepsPerEpoch, totalSteps,
    totalEpochs: Math.ceil(totalSteps / stepsPerEpoch),
    step: makeTrainStep(model, buildLoss(parts.loss), optimizer, t.seed),
    checkpoints: new RunCheckpoints(model, optimizer, meta, dirs),
    stop: new StopConditions({
      timeLimit: t.time_limit,
      keptDir: dirs.last,
      abort: opts.abortSignal,
      onSignal: (sig) => note(`\n${sig}: finishing the current step, then saving ${dirs.last}`),
    }).install(),
  };

  let end: EpochEnd = 'done';
  try {
    while (meta.step < totalSteps && end === 'done') {
      const before = meta.step;
      const epoch = await trainEpoch(run);
      if (meta.step === before && epoch.end === 'done') throw new Error(`training made no progress in epoch ${meta.epoch + 1} at step ${meta.step}`); // never loop forever
      end = epoch.end;
      if (end === 'interrupted') break;
      await endOfEpoch(run, epoch.epochDone, end === 'time_up');
      if (run.stop.requested && meta.step < totalSteps) end = 'interrupted';
    }
    if (end === 'interrupted') {
      await run.checkpoints.saveLastIfNewer();
      const cmd = resumeCommand(opts);
      note(`stopped at epoch ${meta.epoch + 1}, step ${meta.step}; saved ${dirs.last}. Resume with: ${cmd}`);
    }
  } finally {
    run.stop.dispose();
    try {
      run.step.dispose();
    } catch (err) {
      if (!isAllocationFailure(err)) throw err; // after a wasm abort nothing can be freed; the abort is the error to report
    }
  }

  const interrupted = end === 'interrupted';
  const outcome: TrainOutcome = { model, epoch: meta.epoch, step: meta.step, interrupted, stoppedBy: interrupted ? run.stop.signal : null, lastDir: dirs.last, bestDir: dirs.best, resultsDir: dirs.results };
  if (!interrupted) {
    if (end === 'time_up') note(`training.time_limit of ${t.time_limit} s reached at step ${meta.step}`);
    outcome.final = await finalResults(run);
  }
  return outcome;
}

/** Runs the steps of the current epoch from where the run stands, until its end or a stop. */
async function trainEpoch(run: Run): Promise<EpochOutcome> {
  const { cfg, meta, stepsPerEpoch: spe, optimizer } = run;
  const t = cfg.training;
  const epoch = meta.epoch;
  const skip = meta.step - epoch * spe;
  // startState fits a resumed step into the epoch; a step outside it would train nothing, forever.
  if (skip < 0 || skip >= spe) throw new Error(`step ${meta.step} is outside epoch ${epoch + 1} (${spe} steps per epoch)`);
  const epochEnd = Math.min((epoch + 1) * spe, run.totalSteps);
  const bar = run.opts.quiet ? null : new EpochProgress(epoch, run.totalEpochs, epochEnd - epoch * spe, skip);
  let lossSum = 0;
  let lossN = 0;
  let end: EpochEnd = 'done';
  try {
    for await (const batch of run.loader.batches(epoch, skip)) {
      const lr = lrAt(run.parts.schedule, t.optimizer.lr, meta.step, run.totalSteps, spe);
      optimizer.setLearningRate(lr);
      const loss = await stepOrExplain(run, batch);
      if (!Number.isFinite(loss)) {
        throw new UserError(
          `loss (or a gradient) became ${loss} at epoch ${epoch + 1}, step ${meta.step + 1}; training stopped. The last good checkpoint is kept in ${run.dirs.last}. Try a lower training.optimizer.lr or set training.grad_clip`,
        );
      }
      meta.step++;
      lossSum += loss;
      lossN++;
      bar?.update(meta.step - epoch * spe, lossSum / lossN, lr, batch.n); // the mean the next history row records
      if (meta.step % t.print_interval === 0) {
        logTrain(run, { epoch, step: meta.step, split: 'train', loss: lossSum / lossN, lr });
        lossSum = lossN = 0;
      }
      if (cfg.checkpoint.save_every_iters && meta.step % cfg.checkpoint.save_every_iters === 0 && meta.step < epochEnd) await run.checkpoints.saveLast();
      run.opts.onStep?.({ step: meta.step, epoch, loss, lr, model: run.model });
      run.stop.afterStep();
      if (run.stop.requested && meta.step < epochEnd) {
        end = 'interrupted';
        break;
      }
      if (run.stop.timeUp()) {
        end = 'time_up';
        break;
      }
      if (meta.step >= epochEnd) break;
    }
  } finally {
    bar?.stop();
  }
  if (end === 'interrupted') return { end, epochDone: false };
  if (lossN) logTrain(run, { epoch, step: meta.step, split: 'train', loss: lossSum / lossN, lr: optimizer.getLearningRate() });
  // Only a whole epoch counts: a run that ends mid-epoch (training.iterations) stays in it, so a resume with more iterations continues there.
  const epochDone = meta.step === (epoch + 1) * spe;
  if (epochDone) meta.epoch = epoch + 1;
  return { end, epochDone };
}

/** One step; the backend running out of memory becomes one line naming the sizes to lower. */
async function stepOrExplain(run: Run, batch: Batch): Promise<number> {
  try {
    return await run.step(batch, run.meta.step); // the global step, restored on resume: dropout masks repeat
  } catch (err) {
    if (err instanceof DeviceError) {
      throw new DeviceError(`${err.message} at epoch ${run.meta.epoch + 1}, step ${run.meta.step + 1}; nothing from this step was applied or saved, ${run.dirs.last} keeps the last save`);
    }
    if (!isAllocationFailure(err)) throw err;
    const { cfg } = run;
    const s = trainShape(cfg);
    const m = run.parts.model;
    const sizeKey = cfg.training.augmentations.crop ? 'training.augmentations.crop.size' : 'data.size';
    const cause = ((err as Error).message ?? String(err)).split('\n')[0].slice(0, 100);
    throw new UserError(
      `out of memory in training step ${run.meta.step + 1} (${cause}) at ${sizeKey} [${s.height}, ${s.width}], training.batch_size ${s.batch}, ${modelSize(m)} ` +
        `(estimated ${gib(trainStepBytes(m, s))} of ${memoryLimit(tf.getBackend()).what}): lower training.batch_size, ${sizeKey} or ${widthKey(m)}; ${run.dirs.last} keeps the last save`,
    );
  }
}

/** Quotes `s` for a POSIX shell when it holds anything but safe characters. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A training row to the history and the TensorBoard log. */
function logTrain(run: Run, row: HistoryRow): void {
  run.history.append(row);
  run.board.train(row);
}

/** The command that resumes this run: the same config, overrides and backend. */
export function resumeCommand(opts: TrainOptions): string {
  const args = ['--config', opts.configPath ?? '<config>'];
  for (const s of opts.sets ?? []) args.push('--set', s);
  if (opts.backendOption) args.push('--backend', opts.backendOption);
  return ['npx', 'train', ...args.map(shellQuote), '--resume'].join(' ');
}

/** After an epoch (or when training ends early): validation, best/, last/. */
async function endOfEpoch(run: Run, epochDone: boolean, timeUp: boolean): Promise<void> {
  const { cfg, meta } = run;
  const finished = meta.step >= run.totalSteps || timeUp;
  if ((epochDone && meta.epoch % cfg.training.val_interval === 0) || finished) {
    const res = await validate(run.model, cfg, run.valPairs, BOARD_IMAGES, run.parts.dataset);
    run.history.append({ epoch: meta.epoch, step: meta.step, split: 'val', ...res.metrics });
    await run.board.validation(meta.step, res);
    run.log(res.table);
    const value = metricValue(cfg.checkpoint.best_metric, res);
    if (improves(value, meta.bestMetric)) {
      meta.bestMetric = value;
      await run.checkpoints.saveBest();
      run.note(`new best ${cfg.checkpoint.best_metric} = ${value.toFixed(4)}: saved ${run.dirs.best}`);
    }
  }
  if ((epochDone && meta.epoch % cfg.checkpoint.save_interval === 0) || finished) await run.checkpoints.saveLast();
}

/** The report shows the best checkpoint's predictions, the one a user would keep. */
async function finalResults(run: Run): Promise<EvalResult> {
  const { dirs, model, cfg, log, note, meta } = run;
  const hasBest = checkpointExists(dirs.best);
  if (hasBest) applyWeights(model, (await loadCheckpoint(dirs.best)).weights, dirs.best);
  note(`final evaluation of ${hasBest ? dirs.best : 'the last weights'} on ${run.valPairs.length} ${cfg.data.val_split} pairs, writing ${dirs.results}`);
  const res = await writeResults(model, cfg, run.valPairs, run.history.read(), { trainSeconds: run.stop.elapsedSeconds(), quiet: run.opts.quiet, backend: run.opts.backend, what: 'train (final evaluation; the checkpoints are saved)', dataset: run.parts.dataset });
  log(`checkpoints: ${dirs.last} (latest), ${dirs.best} (best ${cfg.checkpoint.best_metric} = ${meta.bestMetric?.toFixed(4)})`);
  log(`report: ${path.join(dirs.results, 'report.html')}`);
  return res;
}

export const selfTest: SelfTest = {
  'the resume hint repeats the overrides and backend, shell-quoted'() {
    assert.equal(resumeCommand({ configPath: 'configs/demo.yaml' }), 'npx train --config configs/demo.yaml --resume');
    assert.equal(
      resumeCommand({ configPath: 'my configs/a.yaml', sets: ['training.epochs=5', 'data.size=[96, 96]', "name=it's"], backendOption: 'wasm' }),
      `npx train --config 'my configs/a.yaml' --set training.epochs=5 --set 'data.size=[96, 96]' --set 'name=it'\\''s' --backend wasm --resume`,
    );
  },
  async 'a second run on a folder in use is refused; the lock is released afterwards'() {
    const { fixtureConfig, tmpDir } = await import('../loaders/fixtures');
    await initBackend('wasm');
    const dir = tmpDir('trainer');
    const cfg = fixtureConfig(dir);
    const stop = new AbortController();
    stop.abort(); // the first run stops after its first step, having held the lock
    const first = train(resolveRun(cfg), { quiet: true, abortSignal: stop.signal });
    await assert.rejects(train(resolveRun(cfg), { quiet: true }), (e: Error) => e instanceof UserError && /in use by another training run/.test(e.message));
    const out = await first;
    assert.ok(!fs.existsSync(path.join(runDirs(cfg).ckpt, LOCK_FILE)), 'lock released');
    out.model.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
