// Turns a list of pairs into batches of plain typed arrays (no tfjs here).
// Determinism for exact resume: the order of epoch e depends only on (seed, e), and a
// sample's augmentation draws only on (seed, e, position in epoch), so
// batches(e, k) yields exactly the batches an uninterrupted run yields from step k on,
// without decoding the skipped ones.
// A bounded prefetch window (two batches) keeps decoding ahead of training. With
// training.workers > 1, samples are decoded + augmented in that many worker threads
// (measured faster: the JS augmentation then leaves the training thread); with 1, in
// process, sharp still decoding on libvips threads.
import assert from 'node:assert/strict';
import type { Config } from '../utils/config';
import { UserError } from '../utils/errors';
import { permutation, rngFor } from '../utils/rng';
import { runIfMain, SelfTest } from '../utils/self_test';
import type { LabelMask, MaskRules } from './decode';
import { SamplePool } from './pool';
import { loadSample, SampleJob, SampleResult } from './sample';
import { maskLutFor } from '../loaders/registry';
import type { PairRef } from '../loaders/registry';

export interface Batch {
  images: Float32Array; // N*H*W*3, NHWC, (x/255 - mean) / std
  masks: Uint8Array; // N*H*W class ids, ignore_index where ignored
  n: number;
  h: number;
  w: number;
  ids: string[];
  /** Each mask at its own size, when the loader was asked for them (scoring at label resolution). */
  fullMasks?: LabelMask[];
}

const SHUFFLE_STREAM = 0x5f1e;

/**
 * Runs at most `n` async jobs at a time, in submission order.
 * Kept over p-limit: same FIFO behaviour and cost for the <= 2 batches queued here, and p-limit 4+ is ESM-only.
 */
function limiter(n: number): <T>(job: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return (job) =>
    new Promise((resolve, reject) => {
      const run = () => {
        active++;
        // Through a promise, so a job that throws synchronously still frees its slot.
        Promise.resolve().then(job).then(resolve, reject).finally(() => {
          active--;
          queue.shift()?.();
        });
      };
      if (active < n) run();
      else queue.push(run);
    });
}

export class BatchLoader {
  private readonly rules: MaskRules;
  private readonly outH: number;
  private readonly outW: number;
  private readonly scale: Float32Array;
  private readonly shift: Float32Array;
  private pool: SamplePool | null = null;

  constructor(private readonly cfg: Config, private readonly pairs: PairRef[], private readonly opts: { train: boolean; threads?: boolean; fullMasks?: boolean }) {
    const d = cfg.data;
    if (!pairs.length) throw new UserError(`dataset '${d.name}' at ${d.root}: no image/mask pairs to load`);
    if (opts.train && pairs.length < cfg.training.batch_size)
      throw new UserError(`training split has ${pairs.length} pairs, fewer than training.batch_size ${cfg.training.batch_size}`);
    this.rules = { lut: maskLutFor(cfg), numClasses: d.num_classes, ignoreIndex: d.ignore_index };
    const crop = opts.train ? cfg.training.augmentations.crop : undefined;
    [this.outH, this.outW] = crop ? crop.size : d.size;
    this.scale = Float32Array.from(d.std, (s) => 1 / (255 * s));
    this.shift = Float32Array.from(d.mean, (m, i) => -m / d.std[i]);
  }

  get stepsPerEpoch(): number {
    const b = this.cfg.training.batch_size;
    return this.opts.train ? Math.floor(this.pairs.length / b) : Math.ceil(this.pairs.length / b);
  }

  /** Pair index at each position of epoch `epoch`. */
  order(epoch: number): number[] {
    if (!this.opts.train) return this.pairs.map((_, i) => i);
    return permutation(this.pairs.length, rngFor(this.cfg.training.seed, epoch, SHUFFLE_STREAM));
  }

  private job(pairIndex: number, epoch: number, pos: number): SampleJob {
    return {
      pair: this.pairs[pairIndex],
      rules: this.rules,
      size: [this.cfg.data.size[0], this.cfg.data.size[1]],
      augment: this.opts.train ? this.cfg.training.augmentations : null,
      seed: this.cfg.training.seed,
      epoch,
      pos,
      fullMask: this.opts.fullMasks,
    };
  }

  async *batches(epoch: number, skipSteps = 0): AsyncGenerator<Batch> {
    const b = this.cfg.training.batch_size;
    // A skip past the epoch would yield nothing (a caller waiting for the epoch's end hangs); a negative one reads before it.
    if (!Number.isInteger(skipSteps) || skipSteps < 0 || skipSteps > this.stepsPerEpoch) {
      throw new RangeError(`batches: cannot skip ${skipSteps} steps of an epoch of ${this.stepsPerEpoch}`);
    }
    const order = this.order(epoch);
    const end = this.opts.train ? this.stepsPerEpoch * b : order.length;
    const workers = Math.max(1, this.cfg.training.workers);
    const threads = this.opts.threads ?? workers > 1;
    // One pool per loader, kept across epochs (its idle workers do not hold the process open).
    if (threads && !this.pool) this.pool = new SamplePool(workers);
    const pool = threads ? this.pool : null;
    const limit = limiter(workers);
    const run = pool ? (j: SampleJob) => pool.run(j) : (j: SampleJob) => limit(() => loadSample(j));
    const window = 2 * b;
    const pending = new Map<number, Promise<SampleResult>>();
    let next = Math.min(skipSteps * b, end);
    const fill = (upTo: number) => {
      for (; next < Math.min(upTo, end); next++) {
        const p = run(this.job(order[next], epoch, next));
        p.catch(() => {}); // surfaced when awaited, in order
        pending.set(next, p);
      }
    };
    const hw = this.outH * this.outW;
    try {
      for (let start = skipSteps * b; start < end; start += b) {
        fill(start + window);
        const n = Math.min(b, end - start);
        const images = new Float32Array(n * hw * 3);
        const masks = new Uint8Array(n * hw);
        const ids: string[] = [];
        const fullMasks: LabelMask[] = [];
        for (let k = 0; k < n; k++) {
          const s = await pending.get(start + k)!;
          pending.delete(start + k);
          fill(start + k + 1 + window);
          this.normalise(s.image, images, k * hw * 3);
          masks.set(s.mask, k * hw);
          ids.push(s.id);
          if (s.fullMask) fullMasks.push(s.fullMask);
        }
        yield { images, masks, n, h: this.outH, w: this.outW, ids, ...(this.opts.fullMasks ? { fullMasks } : {}) };
      }
    } finally {
      for (const p of pending.values()) p.catch(() => {}); // abandoned prefetches
    }
  }

  /** Stops the worker threads, if any (optional: idle workers never keep the process alive). */
  async close(): Promise<void> {
    const p = this.pool;
    this.pool = null;
    await p?.close();
  }

  private normalise(src: Float32Array | Uint8Array, dst: Float32Array, off: number): void {
    normaliseInto(src, this.scale, this.shift, dst, off);
  }
}

function normaliseInto(src: Float32Array | Uint8Array, scale: Float32Array, shift: Float32Array, dst: Float32Array, off: number): void {
  const [s0, s1, s2] = scale;
  const [t0, t1, t2] = shift;
  for (let i = 0; i < src.length; i += 3) {
    dst[off + i] = src[i] * s0 + t0;
    dst[off + i + 1] = src[i + 1] * s1 + t1;
    dst[off + i + 2] = src[i + 2] * s2 + t2;
  }
}

/** HWC RGB 0..255 -> (x/255 - mean) / std, the same normalisation as training batches (for predict). */
export function normaliseImage(src: Uint8Array | Float32Array, mean: readonly number[], std: readonly number[]): Float32Array {
  const out = new Float32Array(src.length);
  normaliseInto(src, Float32Array.from(std, (s) => 1 / (255 * s)), Float32Array.from(mean, (m, i) => -m / std[i]), out, 0);
  return out;
}

export const selfTest: SelfTest = {
  'normaliseImage divides by 255, then subtracts mean and divides by std per channel'() {
    const n = normaliseImage(Uint8Array.from([255, 0, 51]), [0.5, 0.5, 0.2], [0.5, 0.25, 0.2]);
    assert.deepEqual([...n].map((v) => +v.toFixed(5)), [1, -2, 0]);
  },
};

runIfMain(module, selfTest);
