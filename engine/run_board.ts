// A training run's TensorBoard log, event files in results/<name>/ (so TensorBoard names the
// run <name>): train loss and learning rate at each history row, every validation metric,
// per-class IoU and a few validation overlays, written as training goes (utils/tfevents.ts).
// A fresh run removes earlier event files there; a resumed run drops what its checkpoint
// had not reached, so no step appears twice.
// `tensorboard --logdir results` shows every run side by side.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import type { HistoryRow } from '../storage/history';
import type { EvalResult } from './evaluator';
import { EventWriter, EVENT_FILE_PREFIX, eventStep, readRecords, SummaryValue, truncateEvents } from '../utils/tfevents';
import { guardFsSync } from '../utils/errors';
import { refuseLinkedFolder } from '../utils/file_out';
import { rgbPng } from '../report/overlay';
import { runIfMain, SelfTest } from '../utils/self_test';

/** Validation overlays per validation in the log: enough to watch, few enough to stay small. */
export const BOARD_IMAGES = 3;

const FS = { what: 'TensorBoard log', kept: 'the checkpoints are not affected', setting: 'results.root' };

export class RunBoard {
  private readonly writer: EventWriter;
  constructor(readonly dir: string, resumeStep: number | null) {
    refuseLinkedFolder(dir); // its event files are written and removed: never through a link
    this.writer = guardFsSync({ ...FS, path: dir }, () => {
      if (resumeStep === null) {
        for (const n of fs.existsSync(dir) ? fs.readdirSync(dir) : []) if (n.startsWith(EVENT_FILE_PREFIX)) fs.rmSync(path.join(dir, n));
      } else truncateEvents(dir, resumeStep);
      return new EventWriter(dir);
    });
  }

  private write(step: number, values: SummaryValue[]): void {
    guardFsSync({ ...FS, path: this.writer.file }, () => this.writer.write({ step, values }));
  }

  /** A history row of the training split: loss and learning rate. */
  train(row: HistoryRow): void {
    const values: SummaryValue[] = [];
    if (row.loss !== undefined) values.push({ tag: 'train/loss', scalar: row.loss });
    if (row.lr !== undefined) values.push({ tag: 'train/lr', scalar: row.lr });
    if (values.length) this.write(row.step, values);
  }

  /** A validation: its metrics, per-class IoU and the overlays it kept (PNG-encoded here, as summaries hold them). */
  async validation(step: number, res: EvalResult): Promise<void> {
    const images = await Promise.all((res.overlays ?? []).map(async (o) => ({ png: await rgbPng({ data: o.rgb, width: o.width, height: o.height }), width: o.width, height: o.height, channels: 3 })));
    this.write(step, [
      ...Object.entries(res.metrics).map(([k, v]) => ({ tag: `val/${k}`, scalar: v })),
      ...res.perClass.map((c) => ({ tag: `val_iou/${c.name}`, scalar: Number.isFinite(c.iou) ? c.iou : 0 })),
      ...images.map((image, i) => ({ tag: `val_images/${i}_${res.overlays![i].id}`, image })),
    ]);
  }
}

export const selfTest: SelfTest = {
  async 'a fresh run empties the folder; a resumed one keeps the steps up to its checkpoint'() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'board-'));
    const a = new RunBoard(dir, null);
    for (const step of [10, 20, 30]) a.train({ epoch: 0, step, split: 'train', loss: 1 / step, lr: 0.1 });
    await a.validation(30, { metrics: { mIoU: 0.5 }, perClass: [{ name: 'bg', iou: 0.4, dice: 0.5, acc: 0.6 }], confusion: [[1]], perImage: [], table: '', images: 0 });
    const b = new RunBoard(dir, 20); // resumed from step 20: 30 will come again
    b.train({ epoch: 0, step: 30, split: 'train', loss: 0.5 });
    const steps = fs.readdirSync(dir).sort().flatMap((n) => readRecords(fs.readFileSync(path.join(dir, n))).map(eventStep));
    assert.deepEqual(steps, [0, 10, 20, 0, 30]);
    new RunBoard(dir, null);
    assert.equal(fs.readdirSync(dir).length, 1);
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
