// Learning rate per iteration (training.lr_schedule): a pure function of the
// iteration, so resuming at iteration k gives exactly the same rate.
import assert from 'node:assert/strict';
import { parseConfig, ScheduleConfig } from './config';
import { runIfMain, SelfTest } from './self_test';

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
  'poly really decays to min_lr'() {
    const s = sched({ name: 'poly', power: 0.9, min_lr: 1e-5 });
    close(lrAt(s, 0.01, 0, 100, 10), 0.01);
    close(lrAt(s, 0.01, 50, 100, 10), 1e-5 + (0.01 - 1e-5) * Math.pow(0.5, 0.9));
    close(lrAt(s, 0.01, 100, 100, 10), 1e-5);
  },
  'cosine halfway is the midpoint'() {
    const s = sched({ name: 'cosine' });
    close(lrAt(s, 0.1, 50, 100, 10), 0.05);
  },
  'step drops by gamma every step_size epochs'() {
    const s = sched({ name: 'step', step_size: 2, gamma: 0.1 });
    close(lrAt(s, 1, 19, 100, 10), 1);
    close(lrAt(s, 1, 20, 100, 10), 0.1);
  },
  'warm-up starts at warmup_ratio'() {
    const s = sched({ name: 'constant', warmup_iters: 10, warmup_ratio: 0.1 });
    close(lrAt(s, 1, 0, 100, 10), 0.1);
    close(lrAt(s, 1, 5, 100, 10), 0.55);
    close(lrAt(s, 1, 10, 100, 10), 1);
  },
};

runIfMain(module, selfTest);
