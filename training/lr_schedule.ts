// Learning rate per iteration (training.lr_schedule): a pure function of the
// iteration, so resuming at iteration k gives exactly the same rate. A schedule is one
// file, training/schedules/<name>.ts (a ScheduleDefinition, found by its file name);
// the linear warm-up applies to every schedule.
import assert from 'node:assert/strict';
import path from 'node:path';
import { z } from 'zod';
import { Config, parseSchema, ScheduleConfig } from '../utils/config';
import { FolderRegistry } from '../utils/folder_registry';
import { partOptions, resolvePartSection } from '../utils/part_options';
import { runIfMain, SelfTest } from '../utils/self_test';

/** Where a step is in the run. */
export interface SchedulePoint {
  baseLr: number;
  /** 0-based step index (at least 0). */
  iter: number;
  totalIters: number;
  /** The part of the run done, iter / totalIters within [0, 1] (0 when totalIters is 0). */
  frac: number;
  itersPerEpoch: number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface ScheduleDefinition<S extends z.ZodObject<any> = z.ZodObject<any>> {
  name: string;
  /** One line: what it is (README, messages). */
  summary: string;
  /** The keys of training.lr_schedule it owns, with their defaults (beside SCHEDULE_KEYS). */
  options: S;
  /** The rate at a point of the run, before the warm-up. */
  rate(o: z.infer<S>, at: SchedulePoint): number;
}

/** The training.lr_schedule keys of every schedule: its name and the warm-up. */
export const SCHEDULE_KEYS = ['name', 'warmup_iters', 'warmup_ratio'] as const;

/** min_lr, which the decaying schedules own: the rate they end at (bound as optimizer.lr). */
export const minLrOption = z.number().finite().min(0).max(10).default(0);

const schedules = new FolderRegistry<ScheduleDefinition>(path.join(__dirname, 'schedules'), new Set(), (name, known) => `training.lr_schedule.name '${name}' is not a registered schedule; registered: ${known.join(', ')}`);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerSchedule<S extends z.ZodObject<any>>(d: ScheduleDefinition<S>): ScheduleDefinition<S> {
  schedules.register(d as unknown as ScheduleDefinition);
  return d;
}

/** Names of the schedules in training/schedules/ (and any registered from elsewhere). */
export function registeredSchedules(): string[] {
  return schedules.names();
}

export function getScheduleDefinition(name: string): ScheduleDefinition {
  return schedules.get(name);
}

/** training.lr_schedule with the named schedule's own keys checked and defaulted (config/resolve.ts). */
export function resolveScheduleSection(section: Record<string, unknown>, source: string, raw: unknown): Record<string, unknown> {
  const kind = { kind: 'schedule', at: ['training', 'lr_schedule'], common: SCHEDULE_KEYS, get: getScheduleDefinition, names: registeredSchedules };
  return resolvePartSection(kind, section, [String(section.name)], source, raw).section;
}

/** training.lr_schedule resolved: the named schedule's definition and own options, and the warm-up. */
export interface ResolvedSchedule {
  definition: ScheduleDefinition;
  options: Record<string, unknown>;
  warmupIters: number;
  warmupRatio: number;
}

/** The schedule of a validated training.lr_schedule, looked up once (config/resolve.ts resolveRun): lrAt runs every step. */
export function resolveSchedule(s: ScheduleConfig): ResolvedSchedule {
  const definition = getScheduleDefinition(s.name);
  return { definition, options: partOptions(definition, s), warmupIters: s.warmup_iters, warmupRatio: s.warmup_ratio };
}

/**
 * Rate for the step with 0-based index `iter` out of `totalIters` steps, from the resolved
 * schedule; a linear warm-up over `warmup_iters` starts at warmup_ratio times the
 * scheduled rate (MMSegmentation style).
 */
export function lrAt(s: ResolvedSchedule, baseLr: number, iter: number, totalIters: number, itersPerEpoch: number): number {
  const t = Math.min(Math.max(iter, 0), Math.max(totalIters, 1));
  let lr = s.definition.rate(s.options, { baseLr, iter: Math.max(iter, 0), totalIters, frac: totalIters > 0 ? t / totalIters : 0, itersPerEpoch });
  if (s.warmupIters > 0 && iter < s.warmupIters) {
    const k = s.warmupRatio + (1 - s.warmupRatio) * (Math.max(iter, 0) / s.warmupIters);
    lr *= k;
  }
  return lr;
}

// For the self-tests: the config with training.lr_schedule resolved as config/resolve.ts resolves it (that
// module sits above this one, so it is not imported here).
function withSchedule(raw: { [k: string]: unknown }, source = 'config'): Config {
  const c = parseSchema(raw, source);
  c.training.lr_schedule = resolveScheduleSection(c.training.lr_schedule, source, raw) as typeof c.training.lr_schedule;
  return c;
}

// ---------------------------------------------------------------------------
const sched = (s: Record<string, unknown>) => resolveSchedule(withSchedule({ training: { lr_schedule: s } }).training.lr_schedule);
const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);

export const selfTest: SelfTest = {
  'every schedule in training/schedules is found by its file name; a misspelt name or option is one line at parse time'() {
    assert.deepEqual(registeredSchedules(), ['constant', 'cosine', 'poly', 'step']);
    assert.throws(() => withSchedule({ training: { lr_schedule: { name: 'cosin' } } }, 'x.yaml'), /^UserError: x\.yaml: key 'training\.lr_schedule\.name' has "cosin"; 'cosin' is not a registered schedule; registered: constant, cosine, poly, step$/);
    assert.throws(() => withSchedule({ training: { lr_schedule: { name: 'poly', pwer: 1 } } }, 'x.yaml'), /^UserError: x\.yaml: unknown key 'training\.lr_schedule\.pwer' \(check the spelling; schedule 'poly' takes min_lr, power, every schedule name, warmup_iters, warmup_ratio\)$/);
  },
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
