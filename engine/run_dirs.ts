// Where one run's files live: <ckpt_root>/<name>/{last,best} and <results.root>/<name>/.
// Every command asks here, so the layout is written down once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../utils/config';
import { runIfMain, SelfTest } from '../utils/self_test';

export interface RunDirs {
  /** <ckpt_root>/<name>: the run's checkpoint folder (holds the run lock). */
  ckpt: string;
  /** Latest state, for --resume. */
  last: string;
  /** Best by checkpoint.best_metric. */
  best: string;
  /** <results.root>/<name>: report, metrics, history. */
  results: string;
  history: string;
}

export function runDirs(cfg: Config): RunDirs {
  const ckpt = path.join(cfg.checkpoint.ckpt_root, cfg.name);
  const results = path.join(cfg.results.root, cfg.name);
  return { ckpt, last: path.join(ckpt, 'last'), best: path.join(ckpt, 'best'), results, history: path.join(results, 'history.jsonl') };
}

/**
 * What shows that `results` holds a run's results (a history row, the final metrics or
 * report), or null: a fresh run must not wipe them unasked, wherever its checkpoints live.
 */
export function resultsOfRun(results: string): string | null {
  for (const name of ['history.jsonl', 'metrics.json', 'report.html']) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(path.join(results, name), { throwIfNoEntry: false });
    } catch (e) {
      // A file where a folder of the path should be holds no run: writing there says what is wrong.
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw e;
    }
    if (st && (!st.isFile() || st.size > 0)) return name;
  }
  return null;
}

/** Where `evaluate` writes the report of one split. */
export function evalDir(cfg: Config, split: string): string {
  return path.join(runDirs(cfg).results, `eval-${split}`);
}

export const selfTest: SelfTest = {
  async 'folders follow the config'() {
    const { parseConfig } = await import('../config/resolve');
    const cfg = parseConfig({ name: 'r1', checkpoint: { ckpt_root: 'ck' }, results: { root: 'res' } });
    const d = runDirs(cfg);
    assert.deepEqual([d.last, d.best, d.history, evalDir(cfg, 'test')], ['ck/r1/last', 'ck/r1/best', 'res/r1/history.jsonl', 'res/r1/eval-test']);
  },
};

runIfMain(module, selfTest);
