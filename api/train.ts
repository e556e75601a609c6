// train(): what `npx train` does, returning where things went and the final metrics.
import { train as runTraining } from '../engine/trainer';
import { resolveRun } from '../config/resolve';
import { runIfMain, SelfTest } from '../utils/self_test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { checkArgs, CommonOptions, ConfigSource, libraryCall, OPTION_KINDS as K, prepare } from './options';

export interface TrainOptions extends CommonOptions {
  /** Continue the run from <ckpt_root>/<name>/last (--resume). */
  resume?: boolean;
  /** Start afresh over an earlier run of the same name (--overwrite). */
  overwrite?: boolean;
  /** Start from these weights: a checkpoint folder or an exported model.json (--weights). */
  weights?: string;
  /** Print the resolved config first (--print-config; it is always written to the results folder). */
  printConfig?: boolean;
  /** Stops the run after the current step, saving last/ (the result says interrupted). */
  abortSignal?: AbortSignal;
}

export interface TrainResult {
  name: string;
  epoch: number;
  step: number;
  /** Stopped by a signal or the abortSignal before the end (last/ holds the state to resume). */
  interrupted: boolean;
  /** What stopped it: 'SIGINT', 'SIGTERM' (handleSignals) or 'abort'; null when it ran to the end. */
  stoppedBy: string | null;
  checkpoints: { last: string; best: string };
  /** results/<name>: history.jsonl, report.html, metrics.json. */
  resultsDir: string;
  /** The final evaluation of best/ on the val split (null when interrupted). */
  metrics: Record<string, number> | null;
  perClass: { name: string; iou: number; dice: number; acc: number }[] | null;
  /** The warning lines of the run (also given to onWarning as they happen). */
  warnings: string[];
}

export async function train(config: ConfigSource, o: TrainOptions = {}): Promise<TrainResult> {
  return libraryCall(o, (warnings) => run(config, o, warnings));
}

async function run(config: ConfigSource, o: TrainOptions, warnings: string[]): Promise<TrainResult> {
  checkArgs('train', config, o, { resume: K.bool, overwrite: K.bool, weights: K.path, printConfig: K.bool, abortSignal: [z.instanceof(AbortSignal), 'an AbortSignal'] });
  const { cfg, backend } = await prepare(config, o, o.printConfig ?? false);
  const out = await runTraining(resolveRun(cfg), {
    resume: o.resume,
    overwrite: o.overwrite,
    weights: o.weights ?? null,
    configPath: typeof config === 'string' ? config : undefined,
    sets: o.set,
    backendOption: o.backend,
    backend: backend.description,
    quiet: o.quiet,
    abortSignal: o.abortSignal,
  });
  out.model.dispose();
  return {
    name: cfg.name,
    epoch: out.epoch,
    step: out.step,
    interrupted: out.interrupted,
    stoppedBy: out.stoppedBy,
    checkpoints: { last: out.lastDir, best: out.bestDir },
    resultsDir: out.resultsDir,
    metrics: out.final?.metrics ?? null,
    perClass: out.final?.perClass ?? null,
    warnings,
  };
}

export const selfTest: SelfTest = {
  async 'a bad config is refused before anything runs, naming the key'() {
    await assert.rejects(train({ training: { epochs: 0 } }, { quiet: true }), /config object: key 'training\.epochs' has 0/);
  },
};

runIfMain(module, selfTest);
