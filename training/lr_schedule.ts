// Learning rate per iteration (training.lr_schedule): a pure function of the
// iteration, so resuming at iteration k gives exactly the same rate.
import assert from 'node:assert/strict';
import { parseConfig, ScheduleConfig } from '../utils/config';
import { runIfMain, SelfTest } from '../utils/self_test';

/**
 * Rate for the step with 0-based index `iter` out of `totalIters` steps.
 * poly and cosine reach `min_lr` at iter = totalIters; step multiplies by
 * `gamma` every `step_size` epochs. A linear warm-up over `warmup_iters`
 * starts at warmup_ratio times the scheduled rate (MMSegmentation style).
 */
export function lrAt(cfg: ScheduleConfig, baseLr: number, iter: number, totalIters: number, itersPerEpoch: number): number {
  const t = Math.min(Math.max(iter, 0), Math.max(totalIters, 1));
  const frac = totalIters > 0 ? t / totalIters : 0;
  const minLr = Math.min(cfg.min_lr, baseLr);
  let lr: number;
  switch (cfg.name) {
    case 'constant':
      lr = baseLr;
      break;
    case 'poly':
      lr = minLr + (baseLr - minLr) * Math.pow(1 - frac, cfg.power);
      break;
    case 'cosine':
      lr = minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * frac));
      break;
    case 'step': {
      const epoch = Math.floor(Math.max(iter, 0) / Math.max(itersPerEpoch, 1));
      lr = Math.max(minLr, baseLr * Math.pow(cfg.gamma, Math.floor(epoch / cfg.step_size)));
      break;
    }
    default:
      throw new Error(`lr_schedule: unhandled schedule ${(cfg as ScheduleConfig).name}`);
  }
  if (cfg.warmup_iters > 0 && iter < cfg.warmup_iters) {
    const k = cfg.warmup_ratio + (1 - cfg.warmup_ratio) * (Math.max(iter, 0) / cfg.warmup_iters);
    lr *= k;
  }
  return lr;
}

// ---------------------------------------------------------------------------
const sched = (s: Record<string, unknown>) => parseConfig({ training: { lr_schedule: s } }).training.lr_schedule;
const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);

export const selfTest: SelfTest = {
  'poly decays monotonically all the way to min_lr (no stuck schedule)'() {
    const s = sched({ name: 'poly', power: 0.9 });
    const total = 1000;
    let prev = Infinity;
    for (let i = 0; i <= total; i += 50) {
      const lr = lrAt(s, 0.01, i, total, 100);
      assert.ok(lr < prev, `iter ${i}: ${lr} >= ${prev}`);
      prev = lr;
    }
    close(lrAt(s, 0.01, 500, total, 100), 0.01 * Math.pow(0.5, 0.9));
    close(lrAt(s, 0.01, total, total, 100), 0);
    close(lrAt(s, 0.01, total + 10, total, 100), 0); // past the end stays at the floor
    const m = sched({ name: 'poly', power: 0.9, min_lr: 1e-5 });
    close(lrAt(m, 0.01, 0, 100, 10), 0.01);
    close(lrAt(m, 0.01, 50, 100, 10), 1e-5 + (0.01 - 1e-5) * Math.pow(0.5, 0.9));
    close(lrAt(m, 0.01, 100, 100, 10), 1e-5);
  },
  'cosine: base at 0, midpoint halfway, min_lr at the end'() {
    const s = sched({ name: 'cosine', min_lr: 0.001 });
    close(lrAt(s, 0.1, 0, 100, 10), 0.1);
    close(lrAt(s, 0.1, 50, 100, 10), 0.0505);
    close(lrAt(s, 0.1, 100, 100, 10), 0.001);
  },
  'step: multiply by gamma every step_size epochs'() {
    const s = sched({ name: 'step', step_size: 3, gamma: 0.5 });
    close(lrAt(s, 0.8, 29, 1000, 10), 0.8); // epoch 2
    close(lrAt(s, 0.8, 30, 1000, 10), 0.4); // epoch 3
    close(lrAt(s, 0.8, 65, 1000, 10), 0.2); // epoch 6
  },
  'constant, and linear warm-up from warmup_ratio on every schedule'() {
    close(lrAt(sched({ name: 'constant' }), 0.3, 777, 1000, 10), 0.3);
    for (const name of ['constant', 'poly', 'cosine', 'step']) {
      const s = sched({ name, warmup_iters: 100, warmup_ratio: 0.2 });
      const plain = sched({ name });
      close(lrAt(s, 1, 0, 1000, 10), 0.2 * lrAt(plain, 1, 0, 1000, 10));
      close(lrAt(s, 1, 50, 1000, 10), 0.6 * lrAt(plain, 1, 50, 1000, 10));
      close(lrAt(s, 1, 100, 1000, 10), lrAt(plain, 1, 100, 1000, 10));
    }
  },
};

runIfMain(module, selfTest);
