// The run history: one JSON object per line, appended as training goes, so a
// killed run keeps everything up to its last line and a resumed run continues it.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import assert from 'node:assert/strict';
import { runIfMain, SelfTest } from '../utils/self_test';
import { guardFsSync } from '../utils/errors';
import { appendFileNoFollow, writeFileReplacing } from '../utils/file_out';

export interface HistoryRow {
  epoch: number;
  step: number;
  split: 'train' | 'val';
  loss?: number;
  lr?: number;
  [metric: string]: number | string | undefined;
}

export class History {
  constructor(readonly file: string) {}

  /** Starts a fresh history (new run) or keeps rows up to `step` (resumed run). */
  reset(keepUpToStep: number | null): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const kept = keepUpToStep === null ? [] : this.read().filter((r) => r.step <= keepUpToStep);
    writeFileReplacing(this.file, kept.map((r) => JSON.stringify(r) + '\n').join(''));
  }

  append(row: HistoryRow): void {
    // A failed write(2) names no file: say which, and that checkpoints are separate.
    guardFsSync({ path: this.file, what: 'history', kept: 'the checkpoints are not affected', setting: 'results.root' }, () => appendFileNoFollow(this.file, JSON.stringify(row) + '\n'));
  }

  read(): HistoryRow[] {
    if (!fs.existsSync(this.file)) return [];
    return fs
      .readFileSync(this.file, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as HistoryRow];
        } catch {
          return []; // a line cut by a kill
        }
      });
  }
}

export const selfTest: SelfTest = {
  'append, read, and trim on resume'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hist-'));
    const h = new History(path.join(dir, 'history.jsonl'));
    h.reset(null);
    for (let s = 1; s <= 5; s++) h.append({ epoch: 0, step: s, split: 'train', loss: 1 / s });
    fs.appendFileSync(h.file, '{"epoch":0,"st'); // torn last line
    assert.equal(h.read().length, 5);
    h.reset(3);
    assert.deepEqual(h.read().map((r) => r.step), [1, 2, 3]);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
