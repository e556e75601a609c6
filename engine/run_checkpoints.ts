// Saving a training run's last/ and best/ checkpoints: model weights, optimizer state
// and the run's state (epoch, step, best metric) together, each save atomic.
import assert from 'node:assert/strict';
import type * as tf from '../backends/tf';
import type { OptimizerState, TrainOptimizer } from '../training/optimizers';
import { runIfMain, SelfTest } from '../utils/self_test';
import { UserError } from '../utils/errors';
import { checkpointExists, CheckpointMeta, NamedTensor, saveCheckpoint } from '../storage/checkpoint';
import type { RunDirs } from './run_dirs';

export class RunCheckpoints {
  /** Step of the last save of last/ (-1: none yet), so a stop does not save the same state twice. */
  lastSavedStep = -1;

  constructor(private readonly model: tf.LayersModel, private readonly optimizer: TrainOptimizer, private readonly meta: CheckpointMeta, private readonly dirs: RunDirs) {}

  private async save(dir: string): Promise<void> {
    const opt = await this.optimizer.getState();
    // A checkpoint of Inf/NaN weights would replace a good one and resume into nothing
    // but NaN: stop as the non-finite loss does (engine/trainer.ts), keeping the last good save.
    // Checked on the weights as the save reads them: no second (or synchronous) read.
    const refuseNonFinite = (weights: NamedTensor[]) => {
      const bad = nonFinite(weights, opt);
      if (!bad) return;
      const kept = checkpointExists(this.dirs.last) ? `the last good checkpoint is kept in ${this.dirs.last}` : 'no checkpoint was saved before';
      throw new UserError(
        `${bad} became non-finite (NaN or Inf) at epoch ${this.meta.epoch + 1}, step ${this.meta.step}; training stopped without saving ${dir}, ${kept}. Try a lower training.optimizer.lr or set training.grad_clip`,
      );
    };
    await saveCheckpoint(dir, this.model, opt, { ...this.meta, savedAt: new Date().toISOString() }, refuseNonFinite);
  }

  async saveLast(): Promise<void> {
    await this.save(this.dirs.last);
    this.lastSavedStep = this.meta.step;
  }

  async saveBest(): Promise<void> {
    await this.save(this.dirs.best);
  }

  /** Saves last/ unless it already holds this step. */
  async saveLastIfNewer(): Promise<void> {
    if (this.lastSavedStep !== this.meta.step) await this.saveLast();
  }
}

/** Names what holds a non-finite value ('weight enc0_conv1/kernel', 'optimizer state x/m'), or null. */
export function nonFinite(weights: NamedTensor[], opt: OptimizerState | null): string | null {
  const bad = (a: ArrayLike<number>) => {
    for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return true;
    return false;
  };
  for (const w of weights) if (bad(w.values)) return `weight ${w.name}`;
  for (const t of opt?.tensors ?? []) if (bad(t.values)) return `optimizer state ${t.name}`;
  return null;
}

export const selfTest: SelfTest = {
  async 'last/ and best/ hold the run state at the time of saving; a repeat save is skipped'() {
    const fs = await import('node:fs');
    const { fixtureConfig, tmpDir } = await import('../loaders/fixtures');
    const { getModel } = await import('../models/registry');
    const { createOptimizer } = await import('../training/optimizers');
    const { loadCheckpoint } = await import('../storage/checkpoint');
    const { runDirs } = await import('./run_dirs');
    const { freshMeta } = await import('./resume');
    const dir = tmpDir('runckpt');
    const cfg = fixtureConfig(dir);
    const model = getModel(cfg);
    const opt = createOptimizer(cfg);
    const meta = freshMeta(cfg);
    const dirs = runDirs(cfg);
    const ck = new RunCheckpoints(model, opt, meta, dirs);
    meta.step = 7;
    await ck.saveLast();
    const t = fs.statSync(`${dirs.last}/state.json`).mtimeMs;
    await ck.saveLastIfNewer();
    assert.equal(fs.statSync(`${dirs.last}/state.json`).mtimeMs, t, 'same step: not saved again');
    meta.step = 8;
    meta.bestMetric = 0.5;
    await ck.saveBest();
    assert.equal((await loadCheckpoint(dirs.last)).meta.step, 7);
    assert.deepEqual([(await loadCheckpoint(dirs.best)).meta.step, ck.lastSavedStep], [8, 7]);
    // Inf weights: no save, one line naming the weight; last/ keeps step 7 byte for byte.
    const before = fs.readFileSync(`${dirs.last}/weights.bin`);
    const w = model.getLayer('enc0_conv1').weights[0];
    w.write(w.read().mul(Infinity));
    meta.step = 9;
    await assert.rejects(ck.saveLast(), (e: Error) => e instanceof UserError && /^weight enc0_conv1\/kernel became non-finite \(NaN or Inf\) at epoch 1, step 9; training stopped without saving .*last, the last good checkpoint is kept in .*last\. Try a lower/.test(e.message));
    assert.deepEqual(fs.readFileSync(`${dirs.last}/weights.bin`), before);
    const weights = [{ name: 'k', shape: [2], values: Float32Array.from([0, NaN]) }];
    assert.equal(nonFinite(weights, { name: 'adam', step: 1, lr: 1, tensors: [] }), 'weight k');
    assert.equal(nonFinite([], { name: 'adam', step: 1, lr: 1, tensors: [{ name: 'k/m', shape: [1], values: Float32Array.from([Infinity]) }] }), 'optimizer state k/m');
    model.dispose();
    opt.dispose();
    fs.rmSync(dir, { recursive: true });
  },
};

runIfMain(module, selfTest);
